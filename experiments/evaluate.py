"""Evaluate a trained checkpoint greedily on held-out seeds, next to the baselines.

    python experiments/evaluate.py --checkpoint PATH [--episodes N]
        [--scenario S | --table FILE] [--out DIR] [--seed-offset K]
        [--train-seeds N] [--supervised-episodes N] [--supervised-rounds R]
        [--robustness-episodes N] [--env-config JSON]

Restores the RLModule(s) from an RLlib checkpoint (no Algorithm, no Ray instance), plays
greedy episodes on held-out seeds (or on the test split of a table), prints the confusion
matrix, precision / recall / F1, STL satisfaction per spec and BFT statistics next to the
baselines (always-allow, a per-event threshold detector tuned on training seeds, one
replica deciding alone) and a supervised reference (a logistic regression trained on the
labels, on the same per-replica observations as the policy: what is learnable), and writes
``report.json`` plus PNG plots (learning curve from the Tune results, confusion matrices)
to ``--out`` (default: ``<checkpoint>_eval`` next to the checkpoint). ``beats_baselines``
compares the policy with the baselines only; the supervised reference is reported next to
it, with the F1 gap.

Robustness report (``report["robustness"]``, a printed table and ``robustness.png``): F1
and breach rate with each scripted Byzantine behaviour pinned in turn, with no Byzantine
replica (``none``), with the scripted insider in the attacker's seat (``insider``: it
votes Allow on malicious events and Quarantine on benign ones, knowing the label) and,
when the checkpoint has an ``attacker`` module (trained with ``adversary="learned"``),
with that module acting greedily for the attackers (``learned``); the worst case per method; and whether the BFT ensemble's F1 is at least
the naive majority's and one random replica's in every case. Rows of each case, on the
same ``--robustness-episodes`` held-out episodes (the first ones of the main evaluation):
the policy's votes through PBFT (``bft_policy``), the same votes by plurality without BFT
(``naive_majority``), the vote of one replica drawn per episode (``random_replica``), one
honest replica alone (``honest_replica``), ``always_allow`` and the threshold detector of
the main baselines. ``--robustness-episodes 0`` turns the report off.

A checkpoint from learned training holds two modules, ``shared`` (defenders) and
``attacker``: the main evaluation runs on the scripted version of its env_config
(``adversary="scripted"``) with ``shared`` acting for every replica. The ``learned`` case
needs defenders that can act for any id: a checkpoint with one module per replica has none.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from marl_bft_rllib.env import ATTACKER_PREFIX  # noqa: E402
from marl_bft_rllib.env_config import ADVERSARIES, EnvConfig  # noqa: E402
from marl_bft_rllib.evaluation import (  # noqa: E402
    HELD_OUT_SEED_OFFSET,
    INSIDER_CASE,
    LEARNED_CASE,
    ROBUSTNESS_METHODS,
    EvalResult,
    evaluate_baselines,
    greedy_policy,
    held_out_seeds,
    robustness_case_config,
    robustness_cases,
    robustness_report,
    run_episodes,
)
from marl_bft_rllib.metrics import BFT_STAT_KEYS  # noqa: E402
from marl_bft_rllib.scenarios import SCENARIO_DOCS, SCENARIOS, scenario_config  # noqa: E402
from marl_bft_rllib.validation import check_int, check_json_object  # noqa: E402

REPORT_KEYS = ("tp", "tn", "fp", "fn", "precision", "recall", "f1", "accuracy")
# Rows of the report that are references (what is learnable), not baselines to beat.
REFERENCES = ("supervised",)
# The learned attackers' module id: marl_bft_rllib.rllib.config.ATTACKER_POLICY (not imported
# here: that imports Ray and torch).
ATTACKER_MODULE = "attacker"


class EvaluationError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# -- checkpoint ------------------------------------------------------------------------------
def module_subdir() -> Path:
    """Where an algorithm checkpoint keeps its MultiRLModule (RLlib's component names)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    return Path(COMPONENT_LEARNER_GROUP, COMPONENT_LEARNER, COMPONENT_RL_MODULE)


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint dir; a train_tune.py experiment dir resolves to its best checkpoint."""
    path = path.expanduser().resolve()
    summary = path / "summary.json"
    if path.is_dir() and not (path / module_subdir()).is_dir() and summary.is_file():
        try:
            best = json.loads(summary.read_text()).get("best_checkpoint")
        except ValueError:
            best = None
        if not best:
            raise EvaluationError(f"checkpoint: {summary} names no best checkpoint")
        return Path(best)
    return path


def module_dir(checkpoint: Path) -> Path:
    """The MultiRLModule directory inside an algorithm checkpoint (or the path itself)."""
    if not checkpoint.exists():
        raise EvaluationError(f"checkpoint: {checkpoint} does not exist")
    if not checkpoint.is_dir():
        raise EvaluationError(f"checkpoint: {checkpoint} is not a directory")
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.utils.checkpoints import Checkpointable

    subdir = module_subdir()
    for candidate in (checkpoint / subdir, checkpoint):
        if (candidate / Checkpointable.CLASS_AND_CTOR_ARGS_FILE_NAME).is_file() and any(
            (sub / f"{RLModule.STATE_FILE_NAME}.pkl").exists()
            or (sub / RLModule.STATE_FILE_NAME).exists()
            for sub in candidate.iterdir()
            if sub.is_dir()
        ):
            return candidate
    raise EvaluationError(
        f"checkpoint: no RLModule under {checkpoint} (expected an RLlib algorithm checkpoint "
        f"with {subdir}/<module_id>/)"
    )


def load_modules(checkpoint: Path) -> dict[str, Any]:
    """Restore every RLModule of a checkpoint, keyed by module id (no Ray instance needed)."""
    path = module_dir(checkpoint)
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    logging.getLogger("ray").setLevel(logging.ERROR)  # after import: Ray sets its own level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            multi = MultiRLModule.from_checkpoint(str(path))
    except Exception as e:  # any unpickling / shape / file error means a bad checkpoint
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EvaluationError(
            f"checkpoint: cannot restore RLModule(s) from {path}: {type(e).__name__}: {msg}"
        ) from None
    modules = {mid: multi[mid] for mid in multi.keys()}
    if not modules:
        raise EvaluationError(f"checkpoint: {path} holds no RLModule")
    return modules


def split_modules(modules: Mapping[str, Any]) -> tuple[dict[str, Any], Any | None]:
    """The defenders' modules, and the learned attackers' module (``attacker``) or None."""
    defenders = {mid: m for mid, m in modules.items() if mid != ATTACKER_MODULE}
    if not defenders:
        raise EvaluationError(
            f"checkpoint: only the attackers' module {ATTACKER_MODULE!r}, no defender module"
        )
    return defenders, modules.get(ATTACKER_MODULE)


def module_mapping(module_ids: Sequence[str], agents: Sequence[str]) -> Callable[[str], str]:
    """Which module acts for which agent: its own module if present, else the only one.

    The attackers' module (``attacker``) acts for the ``attacker_j`` ids and for no other;
    the defender modules for every other id.
    """
    has_attacker = ATTACKER_MODULE in module_ids
    defenders = [m for m in module_ids if m != ATTACKER_MODULE]
    attackers = [a for a in agents if a.startswith(ATTACKER_PREFIX)]
    others = [a for a in agents if a not in attackers]
    if attackers and not has_attacker:
        raise EvaluationError(
            f"checkpoint: modules {sorted(module_ids)} have no {ATTACKER_MODULE!r} module for "
            f"the learned attackers {attackers}"
        )
    if set(others) <= set(defenders):
        own = True
    elif len(defenders) == 1:
        own = False
    else:
        raise EvaluationError(
            f"checkpoint: modules {sorted(module_ids)} do not cover the scenario's replicas "
            f"{others} (need one shared module or one module per replica)"
        )
    only = defenders[0] if defenders else ATTACKER_MODULE

    def mapping(agent: str) -> str:
        """The module id acting for ``agent``."""
        if has_attacker and agent.startswith(ATTACKER_PREFIX):
            return ATTACKER_MODULE
        return agent if own else only

    return mapping


def check_spaces(modules: Mapping[str, Any], env: Any, what: str, agent: str | None = None) -> None:
    """Raise one clear error when the env's spaces of ``agent`` differ from the modules'.

    ``agent`` defaults to the env's first possible agent (a defender's spaces).
    """
    agent = env.possible_agents[0] if agent is None else agent
    obs_space, act_space = env.observation_space(agent), env.action_space(agent)
    for mid, module in modules.items():
        m_obs, m_act = module.observation_space, module.action_space
        if m_obs is None or m_act is None:
            continue
        if tuple(m_obs.shape) != tuple(obs_space.shape):
            raise EvaluationError(
                f"{what}: observation shape {tuple(obs_space.shape)} does not match the "
                f"checkpoint's module {mid!r} {tuple(m_obs.shape)}; evaluate on the scenario "
                "it was trained on"
            )
        if getattr(m_act, "n", None) != getattr(act_space, "n", None):
            raise EvaluationError(
                f"{what}: action space {act_space} does not match module {mid!r} {m_act}"
            )


# -- Tune results ----------------------------------------------------------------------------
def trial_dir_of(checkpoint: Path) -> Path | None:
    """The Tune trial directory holding this checkpoint (has params.json), if any."""
    for d in (checkpoint, *checkpoint.parents[:3]):
        if (d / "params.json").is_file():
            return d
    return None


def training_env_config(checkpoint: Path) -> dict[str, Any] | None:
    """The env_config the checkpoint was trained with (from the trial's params.json)."""
    trial = trial_dir_of(checkpoint)
    if trial is None:
        return None
    try:
        params = json.loads((trial / "params.json").read_text())
    except (OSError, ValueError):
        return None
    env_config = params.get("env_config")
    if not isinstance(env_config, dict):
        return None
    env_config = dict(env_config)
    env_config.pop("seed", None)
    return env_config


def scripted_env_config(env_config: Mapping[str, Any]) -> dict[str, Any]:
    """``env_config`` with scripted Byzantine replicas (``adversary`` and its reward reset)."""
    out = dict(env_config)
    if out.get("adversary", ADVERSARIES[0]) != ADVERSARIES[0]:
        out["adversary"] = ADVERSARIES[0]
        out.pop("attacker_reward", None)  # only valid with learned attackers
        out.pop("learned_share", None)
        out.pop("attacker_strategies", None)
    return out


def load_progress(checkpoint: Path) -> Any:
    """The trial's Tune progress (pandas DataFrame), or None when there is none."""
    import pandas as pd

    trial = trial_dir_of(checkpoint)
    if trial is None or not (trial / "progress.csv").is_file():
        return None
    try:
        df = pd.read_csv(trial / "progress.csv")
    except Exception:  # an empty or half-written file: no curve
        return None
    return df if len(df) else None


# -- report ----------------------------------------------------------------------------------
def confusion_matrix(summary: Mapping[str, float]) -> list[list[int]]:
    """[[TN, FP], [FN, TP]]: rows benign / malicious, columns allowed / restricted."""
    return [
        [int(summary["tn"]), int(summary["fp"])],
        [int(summary["fn"]), int(summary["tp"])],
    ]


def _fmt(v: float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    if abs(v) >= 1000 or (v == int(v) and abs(v) >= 10):
        return f"{v:.0f}"
    return f"{v:.3f}"


def format_table(rows: Sequence[str], columns: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table of metrics (rows) by policy (columns)."""
    width = max(len(r) for r in rows) + 2
    names = list(columns)
    colw = max(12, *(len(n) + 2 for n in names))
    lines = [" " * width + "".join(n.rjust(colw) for n in names)]
    for r in rows:
        cells = "".join(
            (_fmt(columns[n][r]) if r in columns[n] else "-").rjust(colw) for n in names
        )
        lines.append(r.ljust(width) + cells)
    return "\n".join(lines)


def column_order(baselines: Sequence[str]) -> list[str]:
    """Table and plot order: the policy, the supervised reference next to it, the baselines."""
    return [
        "policy",
        *(n for n in REFERENCES if n in baselines),
        *(n for n in baselines if n not in REFERENCES),
    ]


def print_report(report: Mapping[str, Any]) -> None:
    """Human-readable summary of a report."""
    every = {"policy": report["policy"], **report["baselines"]}
    cols = {n: every[n] for n in column_order(list(report["baselines"]))}
    print(f"checkpoint: {report['checkpoint']}")
    print(f"env: {report['env_source']}, {report['episodes']} episodes, seeds {report['seeds']}")
    print("\nDetection (committed decisions; scores from pooled counts)")
    rows = [*REPORT_KEYS, "episode_f1_mean", "return", "breached"]
    print(format_table(rows, cols))
    tn_fp, fn_tp = report["confusion_matrix"]["policy"]
    print("\nConfusion matrix (policy)      allowed  restricted")
    print(f"  benign                    {tn_fp[0]:>9d} {tn_fp[1]:>11d}")
    print(f"  malicious                 {fn_tp[0]:>9d} {fn_tp[1]:>11d}")
    stl = sorted(k for k in report["policy"] if k.startswith("stl_") and k.endswith("_satisfied"))
    if stl:
        print("\nSTL satisfaction (fraction of episodes with robustness > 0)")
        print(format_table(stl, cols))
    bft = [k for k in BFT_STAT_KEYS if k in report["policy"]]
    if bft:
        print("\nBFT statistics (per episode)")
        print(format_table(bft, cols))
    verdict = "beats" if report["beats_baselines"] else "does NOT beat"
    print(f"\nPolicy F1 {report['policy']['f1']:.3f} {verdict} every baseline.")
    if "supervised" in report["baselines"]:
        gap = report["supervised_gap"]
        print(
            f"Supervised reference (trained on labels, same observations) F1 "
            f"{report['baselines']['supervised']['f1']:.3f}; policy - supervised = {gap:+.3f}."
        )


def format_robustness(robustness: Mapping[str, Any]) -> str:
    """The robustness table: F1 per case (rows) and method (columns), BFT breach rate, worst."""
    cases = robustness["cases"]
    methods = list(ROBUSTNESS_METHODS)
    width = max(len("worst"), *(len(c) for c in cases)) + 2
    cols = [*methods, "bft_breach"]
    colw = max(len(n) for n in cols) + 2
    lines = [" " * width + "".join(n.rjust(colw) for n in cols)]
    for case, scores in cases.items():
        cells = [_fmt(scores[m]["f1"]) for m in methods]
        cells.append(_fmt(scores["bft_policy"]["breach_rate"]))
        lines.append(case.ljust(width) + "".join(c.rjust(colw) for c in cells))
    worst = robustness["worst"]
    cells = [_fmt(worst[m]["f1"]) for m in methods]
    cells.append(_fmt(worst["bft_policy"]["breach_rate"]))
    lines.append("-" * (width + colw * len(cols)))
    lines.append("worst".ljust(width) + "".join(c.rjust(colw) for c in cells))
    return "\n".join(lines)


def print_robustness(robustness: Mapping[str, Any]) -> None:
    """The robustness table, the worst case per method and the BFT-ensemble target."""
    first, last = robustness["seeds"]
    print(
        f"\nRobustness (F1 with each Byzantine behaviour pinned in turn; "
        f"{robustness['episodes']} episodes per case and method, seeds {first}..{last}; "
        "bft_breach: breach rate of bft_policy; worst: lowest F1 / highest breach rate)"
    )
    print(format_robustness(robustness))
    for case, why in robustness.get("skipped", {}).items():
        print(f"case {case!r} skipped: {why}")
    print("Worst case per method (lowest F1):")
    for method, w in robustness["worst"].items():
        print(
            f"  {method:<16s} {w['case']:<20s} F1 {w['f1']:.3f}   highest breach rate "
            f"{w['breach_rate']:.3f} ({w['breach_case']})"
        )
    failed = [c for c, ok in robustness["bft_at_least"].items() if not ok]
    if failed:
        print(
            "BFT ensemble F1 >= naive majority and random replica in every case: NO "
            f"(below in: {', '.join(failed)})"
        )
    else:
        print("BFT ensemble F1 >= naive majority and random replica in every case: yes")


def plot_robustness(robustness: Mapping[str, Any], path: Path) -> None:
    """Grouped bars: F1 of every method in every case, and the worst case over cases."""
    import matplotlib.pyplot as plt

    cases = list(robustness["cases"])
    methods = list(ROBUSTNESS_METHODS)
    groups = [*cases, "worst"]
    values = {
        m: [robustness["cases"][c][m]["f1"] for c in cases] + [robustness["worst"][m]["f1"]]
        for m in methods
    }
    x = np.arange(len(groups), dtype=float)
    x[-1] += 0.5  # set the worst case apart
    bar = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.95 * len(groups) + 3.5), 4.6))
    cmap = plt.get_cmap("tab10")
    for k, m in enumerate(methods):
        ax.bar(x + (k - (len(methods) - 1) / 2) * bar, values[m], bar, label=m, color=cmap(k))
    ax.axvline(x[-1] - 0.75, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (pooled over episodes)")
    ax.set_xlabel("Byzantine behaviour pinned (case); worst: lowest F1 over cases")
    ax.set_title(
        f"Robustness: F1 per Byzantine behaviour, {robustness['episodes']} held-out episodes "
        "per case and method"
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="method", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(progress: Any, path: Path) -> bool:
    """Return and evaluation F1 against env steps; False when the progress has neither."""
    import matplotlib.pyplot as plt

    x_key = next(
        (k for k in ("num_env_steps_sampled_lifetime", "training_iteration") if k in progress),
        None,
    )
    if x_key is None:
        return False
    x = progress[x_key]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    plotted = False
    if "env_runners/episode_return_mean" in progress:
        ax1.plot(x, progress["env_runners/episode_return_mean"], label="train return")
        plotted = True
    if "eval_return" in progress and progress["eval_return"].notna().any():
        ok = progress["eval_return"].notna()
        ax1.plot(x[ok], progress["eval_return"][ok], marker="o", label="evaluation return")
    x_label = "env steps" if x_key == "num_env_steps_sampled_lifetime" else "iteration"
    ax1.set_xlabel(x_label)
    ax1.set_ylabel("mean episode return")
    ax1.set_title("Return")
    for key, label in (
        ("eval_f1", "evaluation F1 (greedy, held-out)"),
        ("env_runners/marl_bft/pooled_f1", "training F1"),
    ):
        if key in progress:
            y = progress[key]
            ok = y.notna()
            if ok.any():
                ax2.plot(x[ok], y[ok], marker="o" if key == "eval_f1" else None, label=label)
                plotted = True
    ax2.set_xlabel(x_label)
    ax2.set_ylabel("F1")
    ax2.set_ylim(0, 1)
    ax2.set_title("Detection F1")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    if plotted:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return plotted


def plot_confusion(
    matrices: Mapping[str, list[list[int]]], path: Path, f1: Mapping[str, float] | None = None
) -> None:
    """One 2x2 confusion-matrix panel per policy (log colour scale, F1 in the title)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices), 3.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items(), strict=True):
        arr = np.asarray(m)
        # Log scale: TN outnumbers every other cell ~10x; a linear scale washes them out.
        norm = LogNorm(vmin=1, vmax=max(int(arr.max()), 2))
        ax.imshow(np.maximum(arr, 1), cmap="Blues", norm=norm)
        for (i, j), v in np.ndenumerate(arr):
            dark = v > np.sqrt(max(arr.max(), 1))
            ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks([0, 1], ["allowed", "restricted"])
        ax.set_yticks([0, 1], ["benign", "malicious"])
        ax.set_xlabel("decision")
        ax.set_ylabel("true label")
        title = name if not f1 or name not in f1 else f"{name}\nF1 {f1[name]:.3f}"
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(
    checkpoint: Path,
    env_source: str,
    env_config: Mapping[str, Any],
    seeds: Sequence[int],
    policy: EvalResult,
    baselines: Mapping[str, EvalResult],
    detectors: Mapping[str, Any],
    train_seeds: int,
) -> dict[str, Any]:
    """The JSON-serialisable evaluation report."""
    summaries = {name: res.summary() for name, res in baselines.items()}
    pol = policy.summary()
    to_beat = [s for name, s in summaries.items() if name not in REFERENCES]
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "env_source": env_source,
        "env_config": dict(env_config),
        "episodes": len(seeds),
        "seeds": [int(seeds[0]), int(seeds[-1])],
        "policy": pol,
        "baselines": summaries,
        "beats_baselines": all(pol["f1"] > s["f1"] for s in to_beat),
        "confusion_matrix": {
            "rows": ["benign", "malicious"],
            "columns": ["allowed", "restricted"],
            "policy": confusion_matrix(pol),
            **{name: confusion_matrix(s) for name, s in summaries.items()},
        },
    }
    if "threshold" in detectors:
        det = detectors["threshold"]
        report["threshold_detector"] = {
            "weights": [float(w) for w in det.weights],
            "threshold": float(det.threshold),
            "train_f1": float(det.train_f1),
            "train_seeds": train_seeds,
        }
    if "supervised" in detectors:
        det = detectors["supervised"]
        report["supervised_detector"] = {
            "weights": [float(w) for w in det.weights],  # on standardised observations
            "bias": float(det.bias),
            "mean": [float(m) for m in det.mean],
            "scale": [float(v) for v in det.scale],
            "threshold": float(det.threshold),  # on the logit
            "train_f1": float(det.train_f1),
            "train_episodes": int(det.train_episodes),  # per round
            "rounds": int(det.rounds),
        }
    if "supervised" in summaries:
        report["supervised_gap"] = pol["f1"] - summaries["supervised"]["f1"]
    report["per_episode"] = policy.episodes
    return report


# -- main ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="scenarios: " + "; ".join(f"{k}: {v}" for k, v in SCENARIO_DOCS.items()),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="RLlib / Tune checkpoint dir (or a train_tune.py experiment dir: its best one)",
    )
    p.add_argument("--episodes", type=int, default=20, help="greedy evaluation episodes")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default=None,
        help="scenario preset (default: the env_config the checkpoint was trained with)",
    )
    src.add_argument("--table", type=Path, default=None, help="labelled event table (test split)")
    p.add_argument(
        "--env-config",
        default=None,
        help="EnvConfig fields (JSON object) over the evaluated config (the scenario, the "
        "table's or the training one), e.g. '{\"p_drop\": 0.1}'",
    )
    p.add_argument("--out", type=Path, default=None, help="output dir (default: <checkpoint>_eval)")
    p.add_argument("--seed-offset", type=int, default=HELD_OUT_SEED_OFFSET, help="first seed")
    p.add_argument(
        "--train-seeds", type=int, default=20, help="training episodes for the threshold detector"
    )
    p.add_argument(
        "--supervised-episodes",
        type=int,
        default=None,
        help="training episodes per round for the supervised reference (default: --train-seeds)",
    )
    p.add_argument(
        "--supervised-rounds",
        type=int,
        default=3,
        help="DAgger rounds of the supervised reference (round 1 under random votes, then "
        "under its own)",
    )
    p.add_argument(
        "--robustness-episodes",
        type=int,
        default=20,
        help="held-out episodes per case and method of the robustness report (each Byzantine "
        "behaviour pinned, none, learned); 0 turns the report off",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print, write the report and plots."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--episodes", args.episodes, 1),
        ("--seed-offset", args.seed_offset, 0),
        ("--train-seeds", args.train_seeds, 1),
        (
            "--supervised-episodes",
            1 if args.supervised_episodes is None else args.supervised_episodes,
            1,
        ),
        ("--supervised-rounds", args.supervised_rounds, 1),
        ("--robustness-episodes", args.robustness_episodes, 0),
    ):
        try:
            check_int(flag, value, lo=low)
        except ValueError as e:
            parser.error(str(e))
    if args.env_config is not None:
        try:
            args.env_config = check_json_object("--env-config", args.env_config)
        except ValueError as e:
            parser.error(str(e))
        if "seed" in args.env_config:
            parser.error("--env-config: set the held-out seeds with --seed-offset, not 'seed'")
    if args.table is not None and not args.table.is_file():
        parser.error(f"--table: {args.table} is not a file")
    try:
        return evaluate(args)
    except EvaluationError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 1


def robustness_section(
    greedy: Callable[[Mapping[str, np.ndarray]], Mapping[str, int]],
    defenders: Mapping[str, Any],
    attacker: Any | None,
    env_config: Mapping[str, Any],
    seeds: Sequence[int],
    threshold: Any,
    what: str,
) -> dict[str, Any]:
    """The robustness report of the restored policy (``report["robustness"]``).

    ``greedy`` acts for the defenders (and, through the ``attacker`` module, for the
    ``attacker_j`` ids); the ``learned`` case is played when the checkpoint has an
    attacker module, the scenario a Byzantine replica, and one defender module acts for
    every id (not one module per replica). The ``insider`` case needs the last two.
    """
    from marl_bft_rllib.env import BFTSecurityEnv

    skipped: dict[str, str] = {}
    with_learned = False
    per_replica = len(defenders) != 1
    if per_replica and EnvConfig.from_any(env_config).n_byzantine > 0:
        skipped[INSIDER_CASE] = (
            f"the checkpoint has one module per replica ({sorted(defenders)}), none to act "
            "for the learned env's defender_k ids"
        )
    if attacker is None:
        skipped[LEARNED_CASE] = f"the checkpoint has no {ATTACKER_MODULE!r} module"
    elif EnvConfig.from_any(env_config).n_byzantine == 0:
        skipped[LEARNED_CASE] = "the scenario has no Byzantine replica (n_byzantine 0)"
    elif per_replica:
        skipped[LEARNED_CASE] = (
            f"the checkpoint has one module per replica ({sorted(defenders)}), none to act "
            "for the learned env's defender_k ids"
        )
    else:
        learned_env = BFTSecurityEnv(robustness_case_config(env_config, LEARNED_CASE))
        attacker_id = next(a for a in learned_env.possible_agents if learned_env.is_attacker(a))
        check_spaces({ATTACKER_MODULE: attacker}, learned_env, what, agent=attacker_id)
        learned_env.close()
        with_learned = True
    result = robustness_report(
        greedy,
        env_config,
        seeds,
        threshold=threshold,
        attacker=greedy if with_learned else None,
        cases=robustness_cases(env_config, with_learned, insider=not per_replica),
    )
    return {
        "episodes": len(seeds),
        "seeds": [int(seeds[0]), int(seeds[-1])],
        "methods": dict(ROBUSTNESS_METHODS),
        **result,
        "skipped": skipped,
    }


def evaluate(args: argparse.Namespace) -> int:
    """The evaluation proper (raises EvaluationError on user-facing problems)."""
    from marl_bft_rllib.env import BFTSecurityEnv

    checkpoint = resolve_checkpoint(args.checkpoint)
    modules = load_modules(checkpoint)
    defenders, attacker = split_modules(modules)

    if args.scenario is not None:
        env_config, source, what = (
            scenario_config(args.scenario),
            f"scenario {args.scenario}",
            "--scenario",
        )
        train_env_config = env_config
    elif args.table is not None:
        base = training_env_config(checkpoint) or {}
        base.pop("split", None)
        env_config = {**base, "source": str(args.table.resolve()), "split": "test"}
        train_env_config = {**env_config, "split": "train"}
        source, what = f"table {args.table} (test split)", "--table"
    else:
        trained = training_env_config(checkpoint)
        env_config = trained if trained is not None else scenario_config("default")
        train_env_config = env_config
        source = "training env_config" if trained is not None else "scenario default"
        what = "--scenario"
    if args.env_config:
        env_config = {**env_config, **args.env_config}
        train_env_config = {**train_env_config, **args.env_config}
        source, what = f"{source} with --env-config {json.dumps(args.env_config)}", "--env-config"
    if env_config.get("adversary", ADVERSARIES[0]) != ADVERSARIES[0]:
        source += " (learned adversary: evaluated with scripted Byzantine replicas)"
    # Learned training: the defenders are evaluated against the scripted behaviours; the
    # attacker module plays in the robustness report's "learned" case, which keeps the
    # training config's attacker_strategies (robustness_case_config resets the rest).
    report_env_config = dict(env_config)
    env_config = scripted_env_config(env_config)
    train_env_config = scripted_env_config(train_env_config)
    try:
        env = BFTSecurityEnv(env_config)
    except (ValueError, OSError) as e:
        raise EvaluationError(f"{what}: {e}") from None
    check_spaces(defenders, env, what)
    mapping = module_mapping(list(modules), env.possible_agents)
    env.close()
    from marl_bft_rllib.rllib.inference import logits_fn

    for m in modules.values():
        m.eval()
    greedy = greedy_policy({mid: logits_fn(m) for mid, m in modules.items()}, mapping)

    seeds = held_out_seeds(args.episodes, args.seed_offset)
    try:
        policy = run_episodes(greedy, env_config, seeds, "policy")
        supervised_episodes = (
            args.train_seeds if args.supervised_episodes is None else args.supervised_episodes
        )
        baselines, detectors = evaluate_baselines(
            env_config,
            seeds,
            train_env_config=train_env_config,
            train_seeds=range(args.train_seeds),
            supervised_seeds=range(supervised_episodes),
            supervised_rounds=args.supervised_rounds,
            greedy=greedy,
        )
        robustness = None
        if args.robustness_episodes:
            robustness = robustness_section(
                greedy,
                defenders,
                attacker,
                report_env_config,
                held_out_seeds(args.robustness_episodes, args.seed_offset),
                detectors["threshold"],
                what,
            )
    except ValueError as e:
        raise EvaluationError(f"{what}: {e}") from None

    out = args.out or checkpoint.parent / f"{checkpoint.name}_eval"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvaluationError(f"--out: cannot create {out}: {e.strerror}") from None
    report = build_report(
        checkpoint,
        source,
        env_config,
        seeds,
        policy,
        baselines,
        detectors,
        args.train_seeds,
    )
    if robustness is not None:
        report["robustness"] = robustness

    import matplotlib

    matplotlib.use("Agg")
    plots: dict[str, str] = {}
    conf_png = out / "confusion_matrix.png"
    names = column_order(list(report["baselines"]))
    scores = {
        "policy": report["policy"]["f1"],
        **{n: s["f1"] for n, s in report["baselines"].items()},
    }
    plot_confusion({n: report["confusion_matrix"][n] for n in names}, conf_png, scores)
    plots["confusion_matrix"] = str(conf_png)
    progress = load_progress(checkpoint)
    curve_png = out / "learning_curve.png"
    if progress is not None and plot_learning_curve(progress, curve_png):
        plots["learning_curve"] = str(curve_png)
    if robustness is not None:
        robust_png = out / "robustness.png"
        plot_robustness(robustness, robust_png)
        plots["robustness"] = str(robust_png)
    report["plots"] = plots

    print_report(report)
    if robustness is not None:
        print_robustness(robustness)
    else:
        print("\nRobustness report: off (--robustness-episodes 0)")
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2, default=_json_default))
    print(f"\nreport: {report_path}")
    for name, p in plots.items():
        print(f"plot ({name}): {p}")
    if "learning_curve" not in plots:
        print("plot (learning_curve): skipped, no Tune progress.csv next to the checkpoint")
    return 0


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


if __name__ == "__main__":
    sys.exit(main())
