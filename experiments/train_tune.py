"""Train the replicated intrusion-response policy with Ray Tune (PPO, raw Monte Carlo critic).

How to run
    python experiments/train_tune.py           # local Ray, one trial, the default scenario
    python experiments/train_tune.py --smoke   # a tiny end-to-end run (tests)
    python experiments/train_tune.py --adversary learned  # self-play: defenders + attacker
    python experiments/train_tune.py --resume  # continue the latest interrupted experiment
    python experiments/train_tune.py --env-config '{"certificate": "all_timely"}'  # EnvConfig
    python experiments/train_tune.py --address auto --search full --num-samples 8  # a search
Evaluation is greedy on held-out seeds, checkpoints are kept by evaluation F1, and the last
line is ``BEST_CHECKPOINT <path> EVAL_F1 <value>``. Every default lives in ``DEFAULTS`` /
``TRAINING`` / ``SMOKE`` below; the Tune wiring is in ``marl_bft_rllib.tune``.

Results to expect
    eval F1 >= 0.9 at the first evaluation, after two iterations (about 15 s of training
    on a 2-core CPU); the default run then stops at F1 0.98 (20 held-out episodes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import marl_bft_rllib  # noqa: E402
from marl_bft_rllib import tune as bft_tune  # noqa: E402
from marl_bft_rllib.bft import VOTE_STRATEGIES  # noqa: E402
from marl_bft_rllib.bft.config import check_strategies  # noqa: E402
from marl_bft_rllib.env_config import ADVERSARIES, EnvConfig  # noqa: E402
from marl_bft_rllib.scenarios import SCENARIO_DOCS, SCENARIOS, scenario_config  # noqa: E402

# -- defaults: the one place to tune the main job --------------------------------------------
DEFAULTS: dict[str, Any] = {
    "scenario": "default",
    "adversary": "scripted",
    "num_samples": 1,
    "search": "none",
    "scheduler": "none",
    "num_env_runners": 0,  # 2-core machine: sampling in the trial's own process is fastest
    "envs_per_runner": 4,  # vectorised: 4.4 s per 2,000-step iteration against 7.6 s at 1
    "num_learners": 0,
    "gpus_per_learner": 0.0,
    "stop_iters": 100,
    "stop_timesteps": 3_000_000,
    "target_f1": 0.98,
    "time_budget_s": 20 * 60,
    "eval_interval": 2,
    "eval_episodes": 20,
    "keep_checkpoints": 3,
    "max_failures": 2,
    "health_stop": "auto",  # a single breach can spike the value loss: don't end the main run
    "health_grace_iters": 15,
    "storage_path": str(REPO_ROOT / "results"),
}
# PPOConfig.training() overrides on top of marl_bft_rllib.rllib.TRAINING_DEFAULTS.
TRAINING: dict[str, Any] = {}
# env_config overrides on top of the scenario preset.
ENV_OVERRIDES: dict[str, Any] = {}
# --smoke: a tiny end-to-end run (tests): 2 iterations, tiny batches, short episodes.
SMOKE: dict[str, Any] = {
    "stop_iters": 2,
    "eval_interval": 1,
    "eval_episodes": 1,
    "num_env_runners": 0,
    "envs_per_runner": 1,
    "training": {"train_batch_size_per_learner": 64, "minibatch_size": 32, "num_epochs": 1},
    "env": {"horizon": 150},
    "model": {"fcnet_hiddens": [32, 32]},
}

# -- flags: a group title, then its (flag, type | choices | "switch", help) rows ----------
_int, _float = bft_tune.int_at_least, bft_tune.float_in
FLAGS: list[str | tuple[str, Any, str | None]] = [
    "cluster",
    ("--address", None,
     "Ray cluster to join ('auto'); default: RAY_ADDRESS or a new local instance"),
    ("--num-cpus", _int(1),
     "logical CPUs of a new local Ray instance (default: this machine's cores)"),
    ("--num-env-runners", _int(0), "remote env runners per trial (0: sample in the trial process)"),
    ("--envs-per-runner", _int(1), "vectorised envs per env runner"),
    ("--num-learners", _int(0), "remote learners (0: learn in the trial process)"),
    ("--gpus-per-learner", _float(0.0, 64.0), "RLlib num_gpus_per_learner"),
    "search",
    ("--num-samples", _int(1), "trials (samples of the search space)"),
    ("--search", sorted(bft_tune.SEARCH_DOCS), "search-space preset"),
    ("--scheduler", bft_tune.SCHEDULERS, "trial scheduler on evaluation F1"),
    "stopping and evaluation",
    ("--stop-iters", _int(1), "training iterations per trial"),
    ("--stop-timesteps", _int(1), "env steps"),
    ("--target-f1", _float(0.0, 1.0, low_open=True),
     "stop a trial once its evaluation F1 reaches this"),
    ("--time-budget-s", _float(0.0, 1e9, low_open=True),
     "stop a trial after this much training time"),
    ("--eval-interval", _int(1), "evaluate (greedy, held-out seeds) every K iterations"),
    ("--eval-episodes", _int(1), "held-out greedy episodes per evaluation"),
    ("--keep-checkpoints", _int(1), "best N by evaluation F1"),
    ("--max-failures", _int(0), "retries of a failed trial"),
    ("--health-stop", ("auto", "on", "off"),
     "stop trials whose critic is stuck or exploding (auto: only in searches)"),
    "experiment",
    ("--scenario", sorted(SCENARIOS), "scenario preset (listed below)"),
    ("--adversary", ADVERSARIES,
     "Byzantine replicas: scripted behaviours, or learned attackers trained alongside"),
    ("--attacker-strategies", None,
     "learned attackers' message strategies, comma-separated, or 'all' (the nine of "
     "the table); default: the four plain votes (measured: benchmarks/robustness.py)"),
    ("--env-config", bft_tune.json_object,
     "EnvConfig fields (JSON object) over the scenario preset, e.g. "
     "'{\"certificate\": \"all_timely\", \"p_drop\": 0.1}'"),
    ("--per-replica-policies", "switch", "one policy per replica instead of one shared policy"),
    ("--seed", _int(0), "RLlib seed (env runners, torch)"),
    ("--storage-path", None, "where experiments are written (a directory or a URI)"),
    ("--name", None, "experiment name (default: marl_bft_<scenario>_<time>)"),
    ("--resume", "switch",
     "resume the interrupted experiment storage_path/name (default: the latest one) "
     "with the flags it started with"),
    ("--smoke", "switch", "tiny run for tests: 2 iterations, tiny batches"),
]  # fmt: skip
DESTS = [row[0][2:].replace("-", "_") for row in FLAGS if not isinstance(row, str)]
# What --resume may change; every other flag is fixed when the experiment starts (Tune
# restores its config, stopper and scheduler), so --resume reads them from RECORD.
RESUME_DESTS = ("address", "num_cpus", "storage_path", "name", "resume")
RECORD = "train_tune_flags.json"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="train_tune.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog=f"scenarios: {'; '.join(map(': '.join, SCENARIO_DOCS.items()))}. search presets: "
        f"{'; '.join(map(': '.join, bft_tune.SEARCH_DOCS.items()))}",
    )
    p.set_defaults(**DEFAULTS, env_config=None)  # also args.health_grace_iters, no flag
    for row in FLAGS:  # the defaults come from DEFAULTS (set_defaults above)
        if isinstance(row, str):
            group = p.add_argument_group(row)
            continue
        flag, kind, help = row
        if kind == "switch":
            group.add_argument(flag, action="store_true", help=help)
        elif isinstance(kind, (list, tuple)):
            group.add_argument(flag, choices=kind, help=help)
        else:
            group.add_argument(flag, type=kind, help=help)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; every bad value exits with an error naming its flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke values as defaults: a flag given explicitly still wins
        parser.set_defaults(**{k: v for k, v in SMOKE.items() if not isinstance(v, dict)})
        args = parser.parse_args(argv)
    args.parser = parser
    if args.scheduler == "asha" and args.stop_iters < 4:
        parser.error("--stop-iters: asha needs at least 4 iterations to stop trials early")
    if args.scheduler == "pbt" and args.search == "none":
        parser.error("--scheduler: pbt mutates hyperparameters; give --search ppo|reward|full")
    if args.num_cpus is not None and (args.address or os.environ.get("RAY_ADDRESS")):
        parser.error("--num-cpus: only for a new local instance, not with --address")
    if args.num_learners == 0 and args.gpus_per_learner > 1:
        parser.error(
            "--gpus-per-learner: the local learner (--num-learners 0) can use at most 1 GPU"
        )
    if args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")):
        parser.error(f"--name: must be a plain directory name, got {args.name!r}")
    try:
        args.storage_path = bft_tune.resolve_storage(args.storage_path)
    except ValueError as e:
        parser.error(f"--storage-path: {e}")
    if args.resume:
        if "://" in args.storage_path:
            parser.error("--resume: only local --storage-path directories are supported")
        try:
            args.name = bft_tune.experiment_to_resume(args.storage_path, args.name)
        except ValueError as e:
            parser.error(f"--resume: {e}")
        return restore_flags(args, given_flags(argv))
    if args.name is None:
        args.name = f"marl_bft_{args.scenario}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.flags = {d: getattr(args, d) for d in DESTS if d not in RESUME_DESTS}  # for RECORD
    if args.adversary == "learned" and args.per_replica_policies:
        parser.error("--per-replica-policies: not with --adversary learned (shared + attacker)")
    overrides = {**ENV_OVERRIDES, **(SMOKE["env"] if args.smoke else {})}
    if args.adversary != "scripted":
        overrides["adversary"] = args.adversary
    if args.attacker_strategies is not None and args.adversary == "scripted":
        parser.error("--attacker-strategies: only with --adversary learned or mixed")
    if args.adversary != "scripted":
        names = VOTE_STRATEGIES  # the measured default (benchmarks/robustness.py)
        if args.attacker_strategies is not None:
            try:
                names = check_strategies(args.attacker_strategies, "attacker_strategies")
            except ValueError as e:
                parser.error(f"--attacker-strategies: {e}")
        overrides["attacker_strategies"] = names
    given = args.env_config or {}
    for key in ("adversary", "attacker_strategies", "seed"):  # each has its own flag
        if key in given:
            flag = "--" + key.replace("_", "-")
            parser.error(f"--env-config: set {key!r} with {flag}, not in the JSON")
    args.env_config = scenario_config(args.scenario, **{**overrides, **given})
    try:  # the env config is validated here, before Ray starts
        EnvConfig.from_any(args.env_config)
    except ValueError as e:
        flag = "--env-config" if given else "--scenario"
        parser.error(f"{flag}: scenario {args.scenario!r} gives a bad env config: {e}")
    return args


def given_flags(argv: Sequence[str] | None) -> set[str]:
    """The flags (as dests) given on the command line, abbreviations included."""
    unset = object()
    probe = build_parser()
    probe.set_defaults(**dict.fromkeys(DESTS, unset))
    args = probe.parse_args(argv)
    return {d for d in DESTS if getattr(args, d) is not unset}


def restore_flags(args: argparse.Namespace, given: set[str]) -> argparse.Namespace:
    """``args`` with the flags the experiment was started with, from its RECORD; a flag
    given now with another value is an error (Tune would not apply it)."""
    path = Path(args.storage_path) / args.name / RECORD
    if not path.is_file():  # an experiment started before RECORD existed
        if fixed := sorted(given - set(RESUME_DESTS)):
            names = ", ".join("--" + d.replace("_", "-") for d in fixed)
            print(f"--resume: {path} is missing; not applied: {names}", file=sys.stderr)
        return args
    try:
        record = json.loads(path.read_text())
        record = {"flags": dict(record["flags"]), "env_config": dict(record["env_config"])}
    except (ValueError, TypeError, KeyError) as e:
        args.parser.error(f"--resume: {path} is not a flags record ({e!r}); move it away to go on")
    for dest in sorted(given - set(RESUME_DESTS)):
        if getattr(args, dest) != record["flags"].get(dest):
            flag = "--" + dest.replace("_", "-")
            args.parser.error(
                f"{flag}: the experiment {args.name!r} was started with"
                f" {record['flags'].get(dest)!r}"
                f", and --resume continues it with the flags it started with; got"
                f" {getattr(args, dest)!r}"
            )
    vars(args).update(record["flags"], env_config=record["env_config"])
    return args


def write_record(args: argparse.Namespace, exp_dir: Path) -> None:
    """Save the flags and env config of a new experiment for a later --resume."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    record = {"flags": args.flags, "env_config": args.env_config}
    (exp_dir / RECORD).write_text(json.dumps(record, indent=1, default=list))


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the experiment and print the best checkpoint."""
    args = parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact CLIReporter table
    import ray
    from ray import tune

    address = args.address or os.environ.get("RAY_ADDRESS")
    bft_tune.init_ray(address, args.num_cpus)
    marl_bft_rllib.register()
    exp_dir = Path(args.storage_path) / args.name
    try:
        if args.resume:
            print(f"Resuming {exp_dir}", flush=True)
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable=bft_tune.PPO, resume_unfinished=True, resume_errored=True
            )
        else:
            if "://" not in args.storage_path:
                write_record(args, exp_dir)
            config = bft_tune.build_config(
                args.env_config, shared_policy=not args.per_replica_policies, seed=args.seed,
                training={**TRAINING, **(SMOKE["training"] if args.smoke else {})},
                model=SMOKE["model"] if args.smoke else None,
                eval_interval=args.eval_interval, eval_episodes=args.eval_episodes,
                num_env_runners=args.num_env_runners, envs_per_runner=args.envs_per_runner,
                num_learners=args.num_learners, gpus_per_learner=args.gpus_per_learner,
            )  # fmt: skip
            if error := bft_tune.check_resources(config, local=not address):
                ray.shutdown()
                args.parser.error(error)
            param_space, space = bft_tune.build_param_space(config, args.search)
            searching = args.num_samples > 1 or args.search != "none"
            stopper = bft_tune.build_stopper(
                stop_iters=args.stop_iters, stop_timesteps=args.stop_timesteps,
                time_budget_s=args.time_budget_s, target_f1=args.target_f1,
                value_health=args.health_stop == "on" or (args.health_stop == "auto" and searching),
                health_grace_iters=args.health_grace_iters,
            )  # fmt: skip
            scheduler = bft_tune.build_scheduler(
                args.scheduler, space, stop_iters=args.stop_iters, eval_interval=args.eval_interval
            )
            tuner = tune.Tuner(
                bft_tune.PPO,  # RLlib's PPO; Tune retries it only after infrastructure failures
                param_space=param_space,
                tune_config=tune.TuneConfig(num_samples=args.num_samples, scheduler=scheduler),
                run_config=bft_tune.run_config(
                    args.name, args.storage_path, stop=stopper, space=space,
                    keep_checkpoints=args.keep_checkpoints, max_failures=args.max_failures,
                    report_every_s=10 if args.smoke else 30,
                ),
            )  # fmt: skip
        results = tuner.fit()
        best = bft_tune.best_checkpoint(results)
        bft_tune.save_results(results, exp_dir, best, args.scenario, args.env_config)
    finally:
        ray.shutdown()
    failures = bft_tune.failure_report(results)
    if failures:
        print(f"{len(failures)} of {len(results)} trial(s) failed:", *failures, sep="\n  ")
    if failures or best[0] is None:
        again = f"--resume --storage-path {args.storage_path} --name {args.name}"
        print(f"To resume: python {os.path.relpath(__file__)} {again}")
    print(f"BEST_CHECKPOINT {best[0] or 'none'} EVAL_F1 {best[1]:.4f}")  # nan: "nan"
    return 0 if best[0] else 1


if __name__ == "__main__":
    sys.exit(main())
