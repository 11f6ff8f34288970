"""Value learning: this project's learner against stock RLlib PPO, measured the same way.

Same seeds, env-step budget, model and PPO settings for every variant; only what the
variant names changes:
- ``ours``: the project's defaults (``build_ppo_config()``: raw MC value targets,
  centralised critic, fitted baseline, ...);
- ``stock``: plain RLlib PPO: default RLModule (local critic), ``PPOTorchLearner`` with
  RLlib's GAE and its default ``vf_clip_param`` 10;
- ``nocritic``: ours with V = 0 in the advantages and bootstraps (what the critic buys).
A variant may carry overrides: ``ours:lambda_=0.7,critic=local,value_baseline=critic``
(``PPOConfig.training`` keys, ``MonteCarloLearnerOptions`` fields, ``critic``, and
``EnvConfig`` fields such as ``time_limit=episodic``, which apply to training and
evaluation episodes alike).

After every iteration, for every variant the same way:
- greedy evaluation F1 (pooled) on the same fixed held-out episodes (seeds from
  ``HELD_OUT_SEED_OFFSET``), played outside RLlib, so nothing is smoothed;
- the critic's explained variance on the fresh batch, before the update, over real
  steps, against the same raw Monte Carlo returns (for stock too);
- the training return (mean over the episodes that ended in that iteration);
- env steps and wall time.
Writes ``benchmarks/results/value_learning.json`` and prints the comparison.

    python benchmarks/value_learning.py               # the lever rows, 3 seeds x 30 iterations
    python benchmarks/value_learning.py --variants ours:critic_replay_batches=0 ours \
        --out benchmarks/results/value_learning_replay_kl.json   # critic replay off / on
    python benchmarks/value_learning.py --eval-episodes 20 --variants ours stock \
        stock:gamma=0.95 ours:peer_stats_window=50 stock:peer_stats_window=50 \
        --out /tmp/vl.json  # today's defaults, without and with the peers' dissent
    python benchmarks/value_learning.py --variants ours:counterfactual_baseline=step \
        ours:counterfactual_baseline=trace \
        'ours:counterfactual_baseline=all_actions,all_actions_clip=true' \
        --out benchmarks/results/value_learning_counterfactual.json  # the baseline's modes
        # (these ran at a constant lr 3e-4: add lr=0.0003 to each variant to repeat them)
    python benchmarks/value_learning.py --variants 'ours:lr=[[0,0.001],[20000,0.0001]]' \
        --out /tmp/vl.json  # JSON list values, e.g. an lr schedule (the default one here)
    python benchmarks/value_learning.py --iters 10 \
        --variants stock:lambda_=0.95 stock:lambda_=0.5 stock:gamma=0.95 \
        --out benchmarks/results/value_learning_grid.json    # stock's (gamma, lambda) grid
    python benchmarks/value_learning.py --iters 10 --seeds 6 --seed-offset 6 \
        --variants ours stock:lambda_=0.5 --out /tmp/vl_seeds_6_11.json
        # training seeds 6-11: adds seeds to an earlier run's 0-5 instead of repeating them
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.utils.numpy import convert_to_numpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.env_config import EnvConfig  # noqa: E402
from marl_bft_rllib.evaluation import held_out_seeds  # noqa: E402
from marl_bft_rllib.metrics import explained_variance  # noqa: E402
from marl_bft_rllib.rllib import build_ppo_config  # noqa: E402
from marl_bft_rllib.rllib.config import map_to_shared, training_option_names  # noqa: E402
from marl_bft_rllib.rllib.connector import targets_and_advantages  # noqa: E402
from marl_bft_rllib.rllib.inference import greedy_evaluation  # noqa: E402
from marl_bft_rllib.rllib.learner import (  # noqa: E402
    BASELINE_COEF_KEY,
    COUNTERFACTUAL_COEF_KEY,
    VALUE_EV_KEY,
    MonteCarloLearnerOptions,
)

MC_FIELDS = {f.name for f in dataclasses.fields(MonteCarloLearnerOptions)}
ENV_FIELDS = {f.name for f in dataclasses.fields(EnvConfig)} - {"seed"}
TRAINING_KEYS = training_option_names()
RESULTS = Path(__file__).resolve().parent / "results" / "value_learning.json"
REPORT_AT = (1, 3, 5, 10, 20, 30)
# One row per lever: each variant changes one thing against "ours".
DEFAULT_VARIANTS = (
    "ours",
    "stock",
    "nocritic",
    "ours:critic=local",
    "ours:value_baseline=critic",
    "ours:time_limit=unbounded",
    "ours:critic_replay_batches=0",
)
F1_GOAL = 0.9


class StockValueStats(ConnectorV2):
    """Logs the stock critic's masked, pre-update EV against raw MC returns (as ours does)."""

    def __init__(self, *args: Any, gamma: float, **kwargs: Any) -> None:
        """Remember the discount of the raw returns."""
        super().__init__(*args, **kwargs)
        self.gamma = gamma

    def __call__(self, *, rl_module, batch, episodes, metrics=None, **kwargs):
        """Compute raw MC returns of the batch and log EV of the critic against them."""
        for mid, mb in batch.items():
            mask = convert_to_numpy(mb[Columns.LOSS_MASK]).astype(bool)
            with torch.no_grad():
                v = convert_to_numpy(rl_module[mid].unwrapped().compute_values(mb))
            targets, _ = targets_and_advantages(
                convert_to_numpy(mb[Columns.REWARDS]).astype(np.float64),
                v.astype(np.float64),
                convert_to_numpy(mb[Columns.TERMINATEDS]).astype(bool),
                convert_to_numpy(mb[Columns.TRUNCATEDS]).astype(bool),
                mask,
                gamma=self.gamma,
                lambda_=1.0,
            )
            if metrics is not None:
                ev = explained_variance(targets[mask], v[mask])
                metrics.log_value((mid, VALUE_EV_KEY), ev, window=1)
        return batch


class StockPPOWithStats(PPOTorchLearner):
    """Stock PPOTorchLearner (GAE) plus the measuring piece above, placed before GAE."""

    def build(self) -> None:
        """Build the stock learner and insert the value-statistics piece before GAE."""
        super().build()
        self._learner_connector.insert_before(
            "GeneralAdvantageEstimation", StockValueStats(gamma=self.config.gamma)
        )


def _split_overrides(rest: str) -> list[str]:
    """``k=v`` items of a variant's overrides: commas inside ``[...]`` (JSON lists) stay."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(rest):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(rest[start:i])
            start = i + 1
    items.append(rest[start:])
    return [kv for kv in items if kv]


def _parse(text: str) -> Any:
    if text.startswith("["):
        return json.loads(text)  # e.g. an lr schedule: lr=[[0,0.001],[20000,0.0003]]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def build_variant(name: str, seed: int, batch: int, envs: int) -> Any:
    """The PPOConfig of one variant (see the module docstring) for one seed."""
    base, _, rest = name.partition(":")
    overrides = {k: _parse(v) for k, v in (kv.split("=", 1) for kv in _split_overrides(rest))}
    options = {k: overrides.pop(k) for k in list(overrides) if k in MC_FIELDS}
    # An EnvConfig field unless PPO has a training option of that name (gamma, lambda_).
    env = {k: overrides.pop(k) for k in list(overrides) if k in ENV_FIELDS - TRAINING_KEYS}
    critic = overrides.pop("critic", "local" if base == "stock" else "central")
    training: dict[str, Any] = {"train_batch_size_per_learner": batch, **overrides}
    if base == "stock":
        training.setdefault("vf_clip_param", 10.0)  # RLlib's default
    elif base == "nocritic":
        options.setdefault("value_baseline", "zero")
    elif base != "ours":
        raise ValueError(f"variant: unknown base {base!r}; expected ours, stock or nocritic")
    env_config = {**env, "seed": seed}
    config = build_ppo_config(env_config, critic=critic, **training).debugging(seed=seed)
    config = config.env_runners(num_envs_per_env_runner=envs).reporting(
        metrics_num_episodes_for_smoothing=max(1, batch // 200)  # ~ one iteration's episodes
    )
    if base == "stock":
        if options:
            raise ValueError(f"variant {name!r}: learner options do not apply to stock PPO")
        return config.learners(learner_class=StockPPOWithStats)
    # the config's own learner options (build_ppo_config's), then the variant's overrides
    base_options = MonteCarloLearnerOptions.from_learner_config_dict(config.learner_config_dict)
    mc = dataclasses.replace(base_options, **options)
    return config.learners(learner_config_dict=mc.to_learner_config_dict())


def run(variant: str, seed: int, args: argparse.Namespace) -> list[dict]:
    """Train one (variant, seed); greedy-evaluate on the fixed episodes after each iteration."""
    config = build_variant(variant, seed, args.batch, args.envs_per_runner)
    eval_env = {k: v for k, v in config.env_config.items() if k != "seed"}
    algo = config.build_algo()
    seeds = held_out_seeds(args.eval_episodes)
    rows, wall = [], 0.0
    try:
        for it in range(1, args.iters + 1):
            t0 = time.perf_counter()
            r = algo.train()
            wall += time.perf_counter() - t0
            modules = {"shared": algo.get_module("shared")}
            ev = greedy_evaluation(modules, map_to_shared, eval_env, seeds)
            m = r["learners"]["shared"]
            rows.append(
                {
                    "iteration": it,
                    "eval_f1": ev.summary()["f1"],
                    "explained_var": float(m.get(VALUE_EV_KEY, math.nan)),
                    "baseline_coef": float(m.get(BASELINE_COEF_KEY, math.nan)),
                    "counterfactual_coef": float(m.get(COUNTERFACTUAL_COEF_KEY, math.nan)),
                    "train_return": float(r["env_runners"].get("episode_return_mean", math.nan)),
                    "env_steps": int(r["env_runners"].get("num_env_steps_sampled_lifetime", 0)),
                    "train_seconds": wall,
                }
            )
            print(variant, seed, rows[-1], flush=True)
    finally:
        algo.stop()
    return rows


def first_reach(rows: list[dict], key: str) -> float:
    """``key`` at the first iteration with eval F1 >= F1_GOAL (nan if never)."""
    return next((float(r[key]) for r in rows if r["eval_f1"] >= F1_GOAL), math.nan)


def summarise(seeds: list[list[dict]]) -> dict[str, Any]:
    """Per-variant figures, mean over seeds, plus every seed's values for the headline ones."""
    iters = min(len(rows) for rows in seeds)
    f1 = np.array([[r["eval_f1"] for r in rows[:iters]] for rows in seeds])
    ev = np.array([[r["explained_var"] for r in rows[:iters]] for rows in seeds])
    ret = np.array([[r["train_return"] for r in rows[:iters]] for rows in seeds])
    out: dict[str, Any] = {
        "mean_f1_it1_10": float(f1[:, :10].mean()),
        "mean_f1_it1_10_per_seed": f1[:, :10].mean(axis=1).round(3).tolist(),
        "f1_at": {str(i): float(f1[:, i - 1].mean()) for i in REPORT_AT if i <= iters},
        "ev_at": {str(i): float(np.nanmean(ev[:, i - 1])) for i in REPORT_AT if i <= iters},
        "return_at": {str(i): float(np.nanmean(ret[:, i - 1])) for i in REPORT_AT if i <= iters},
        "ev_last5": float(np.nanmean(ev[:, -5:])),
    }
    for key in ("iteration", "env_steps", "train_seconds"):
        per_seed = [first_reach(rows, key) for rows in seeds]
        out[f"first_f1_{F1_GOAL}_{key}"] = float(np.mean(per_seed))  # nan if any seed never
        out[f"first_f1_{F1_GOAL}_{key}_per_seed"] = per_seed
    return out


def main() -> None:
    """Run every variant and seed, print the summary and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="first training seed (default 0): a later run adds seeds instead of repeating them",
    )
    parser.add_argument("--batch", type=int, default=2000, help="env steps per iteration")
    parser.add_argument("--envs-per-runner", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    for flag in ("iters", "seeds", "batch", "envs_per_runner", "eval_episodes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: must be >= 1, got {getattr(args, flag)}")
    if args.seed_offset < 0:
        parser.error(f"--seed-offset: must be >= 0, got {args.seed_offset}")
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    for v in args.variants:  # fail on a bad variant before any training
        build_variant(v, 0, args.batch, args.envs_per_runner)
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = {v: [run(v, seed, args) for seed in seeds] for v in args.variants}
    ray.shutdown()
    summary = {v: summarise(seeds) for v, seeds in runs.items()}
    report = {
        "benchmark": "value_learning",
        "command": "python benchmarks/value_learning.py " + " ".join(sys.argv[1:]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": platform.platform(),
        "training_seeds": seeds,
        "summary_mean_over_seeds": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    key = f"first_f1_{F1_GOAL}"
    print(
        f"{'variant':<40} meanF1(1-10) "
        + " ".join(f"F1@{i:<3}" for i in REPORT_AT)
        + f" it>={F1_GOAL} steps>={F1_GOAL} EV(last5)"
    )
    for v, s in summary.items():
        f1s = " ".join(f"{s['f1_at'].get(str(i), math.nan):6.3f}" for i in REPORT_AT)
        print(
            f"{v:<40} {s['mean_f1_it1_10']:12.3f} {f1s} {s[key + '_iteration']:7.1f} "
            f"{s[key + '_env_steps']:10.0f} {s['ev_last5']:9.3f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
