"""Train the replicated intrusion-response policy with Ray Tune (PPO, raw Monte Carlo critic).

No flags: a local Ray instance, one trial on the ``default`` scenario, greedy evaluation
on held-out seeds, checkpoints kept by evaluation F1, and a last line

    BEST_CHECKPOINT <path> EVAL_F1 <value>

``--address auto`` (or ``RAY_ADDRESS``) joins a running cluster; ``--search``,
``--scheduler`` and ``--num-samples`` turn it into a hyperparameter search.
Every default lives in ``DEFAULTS`` / ``TRAINING`` / ``SMOKE`` below.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from marl_bft_rllib.scenarios import SCENARIO_DOCS, SCENARIOS, scenario_config  # noqa: E402
from marl_bft_rllib.tune import (  # noqa: E402
    EVAL_F1,
    EVAL_F1_LAST,
    VALUE_EV,
    VALUE_HEALTH,
    VALUE_LOSS,
    ResumableCSVLoggerCallback,
    TuneSummaryCallbacks,
)

# -- defaults: the one place to tune the main job --------------------------------------------
DEFAULTS: dict[str, Any] = {
    "scenario": "default",
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

SEARCH_DOCS: dict[str, str] = {
    "none": "no search: the defaults (num_samples > 1 repeats them with new seeds)",
    "ppo": "lr, entropy_coeff, gamma, lambda, train_batch_size_per_learner",
    "reward": "env stl_weight, vote_weight",
    "full": "ppo + reward",
}
SCHEDULERS = ("none", "asha", "pbt")

PROGRESS_COLUMNS = {
    "training_iteration": "iter",
    "num_env_steps_sampled_lifetime": "env steps",
    "env_runners/episode_return_mean": "return",
    EVAL_F1_LAST: "last eval F1",  # carried forward between evaluations
    VALUE_LOSS: "V loss",
    VALUE_EV: "V EV",
    VALUE_HEALTH: "V health",
}


def _search_spaces() -> dict[str, dict[str, Any]]:
    """Search-space presets: flat param paths ("env_config/stl_weight") to Tune domains."""
    from ray import tune

    ppo = {
        "lr": tune.loguniform(5e-5, 2e-3),
        "entropy_coeff": tune.loguniform(1e-3, 5e-2),
        "gamma": tune.choice([0.95, 0.98, 0.99, 0.995]),
        "lambda": tune.uniform(0.5, 1.0),
        # The config dict's key for train_batch_size_per_learner (a property).
        "_train_batch_size_per_learner": tune.choice([1000, 2000, 4000]),
    }
    reward = {
        "env_config/stl_weight": tune.uniform(0.0, 2.0),
        "env_config/vote_weight": tune.uniform(0.0, 1.0),
    }
    return {"none": {}, "ppo": ppo, "reward": reward, "full": {**ppo, **reward}}


# -- argument parsing (no Ray needed) --------------------------------------------------------
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        """The integer in ``text``, or an argparse error if it is not one >= low."""
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        """The number in ``text``, or an argparse error if it is outside the range."""
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must lie in {bracket}{low}, {high}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="train_tune.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="scenarios: "
        + "; ".join(f"{k}: {v}" for k, v in SCENARIO_DOCS.items())
        + ". search presets: "
        + "; ".join(f"{k}: {v}" for k, v in SEARCH_DOCS.items()),
    )
    g = p.add_argument_group("cluster")
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto'); default: RAY_ADDRESS or a new local instance",
    )
    g.add_argument(
        "--num-cpus",
        type=_int_at_least(1),
        default=None,
        help="logical CPUs of a new local Ray instance (default: this machine's cores)",
    )
    g.add_argument(
        "--num-env-runners",
        type=_int_at_least(0),
        default=d["num_env_runners"],
        help="remote env runners per trial (0: sample in the trial process)",
    )
    g.add_argument(
        "--envs-per-runner",
        type=_int_at_least(1),
        default=d["envs_per_runner"],
        help="vectorised envs per env runner",
    )
    g.add_argument(
        "--num-learners",
        type=_int_at_least(0),
        default=d["num_learners"],
        help="remote learners (0: learn in the trial process)",
    )
    g.add_argument(
        "--gpus-per-learner",
        type=_float_in(0.0, 64.0),
        default=d["gpus_per_learner"],
        help="RLlib num_gpus_per_learner",
    )
    g = p.add_argument_group("search")
    g.add_argument(
        "--num-samples",
        type=_int_at_least(1),
        default=d["num_samples"],
        help="trials (samples of the search space)",
    )
    g.add_argument(
        "--search", choices=sorted(SEARCH_DOCS), default=d["search"], help="search-space preset"
    )
    g.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=d["scheduler"],
        help="trial scheduler on evaluation F1",
    )
    g = p.add_argument_group("stopping and evaluation")
    g.add_argument(
        "--stop-iters",
        type=_int_at_least(1),
        default=d["stop_iters"],
        help="training iterations per trial",
    )
    g.add_argument(
        "--stop-timesteps", type=_int_at_least(1), default=d["stop_timesteps"], help="env steps"
    )
    g.add_argument(
        "--target-f1",
        type=_float_in(0.0, 1.0, low_open=True),
        default=d["target_f1"],
        help="stop a trial once its evaluation F1 reaches this",
    )
    g.add_argument(
        "--time-budget-s",
        type=_float_in(0.0, 1e9, low_open=True),
        default=d["time_budget_s"],
        help="stop a trial after this much training time",
    )
    g.add_argument(
        "--eval-interval",
        type=_int_at_least(1),
        default=d["eval_interval"],
        help="evaluate (greedy, held-out seeds) every K iterations",
    )
    g.add_argument("--eval-episodes", type=_int_at_least(1), default=d["eval_episodes"])
    g.add_argument(
        "--keep-checkpoints",
        type=_int_at_least(1),
        default=d["keep_checkpoints"],
        help="best N by evaluation F1",
    )
    g.add_argument(
        "--max-failures",
        type=_int_at_least(0),
        default=d["max_failures"],
        help="retries of a failed trial",
    )
    g.add_argument(
        "--health-stop",
        choices=("auto", "on", "off"),
        default=d["health_stop"],
        help="stop trials whose critic is stuck or exploding (auto: only in searches)",
    )
    g = p.add_argument_group("experiment")
    g.add_argument("--scenario", choices=sorted(SCENARIOS), default=d["scenario"])
    g.add_argument(
        "--per-replica-policies",
        action="store_true",
        help="one policy per replica instead of one shared policy",
    )
    g.add_argument(
        "--seed", type=_int_at_least(0), default=None, help="RLlib seed (env runners, torch)"
    )
    g.add_argument("--storage-path", default=d["storage_path"])
    g.add_argument(
        "--name", default=None, help="experiment name (default: marl_bft_<scenario>_<time>)"
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="resume the interrupted experiment storage_path/name (default: the latest one)",
    )
    g.add_argument(
        "--smoke", action="store_true", help="tiny run for tests: 2 iterations, tiny batches"
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; every bad value exits with an error naming its flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    explicit = {a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv)}
    if args.smoke:  # smoke values unless the flag was given explicitly
        for key in (
            "stop_iters",
            "eval_interval",
            "eval_episodes",
            "num_env_runners",
            "envs_per_runner",
        ):
            if "--" + key.replace("_", "-") not in explicit:
                setattr(args, key, SMOKE[key])
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
    storage = Path(args.storage_path).expanduser()
    if "://" not in args.storage_path:
        storage = storage.resolve()
        try:
            storage.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            parser.error(f"--storage-path: cannot create {storage}: {e.strerror}")
        if not os.access(storage, os.W_OK):
            parser.error(f"--storage-path: {storage} is not writable")
        args.storage_path = str(storage)
    if args.resume:
        if "://" in args.storage_path:
            parser.error("--resume: only local --storage-path directories are supported")
        if args.name is None:
            runs = sorted(
                (p.parent for p in storage.glob("*/tuner.pkl")), key=lambda p: p.stat().st_mtime
            )
            if not runs:
                parser.error(f"--resume: no experiment to resume under {storage}")
            args.name = runs[-1].name
        elif not (storage / args.name / "tuner.pkl").is_file():
            parser.error(f"--resume: no experiment at {storage / args.name}")
    elif args.name is None:
        args.name = f"marl_bft_{args.scenario}_{time.strftime('%Y%m%d-%H%M%S')}"
    # The env config is validated here, before Ray starts.
    args.env_config = env_config_for(args)
    try:
        from marl_bft_rllib.env_config import EnvConfig

        EnvConfig.from_any(args.env_config)
    except ValueError as e:
        parser.error(f"--scenario: {args.scenario!r} gives a bad env config: {e}")
    return args


def env_config_for(args: argparse.Namespace) -> dict[str, Any]:
    """The env_config of the chosen scenario with this script's overrides."""
    overrides = dict(ENV_OVERRIDES)
    if args.smoke:
        overrides.update(SMOKE["env"])
    return scenario_config(args.scenario, **overrides)


# -- Ray / Tune wiring -----------------------------------------------------------------------
def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split("/")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        _set_path(out, path, value)
    return out


def build_config(args: argparse.Namespace) -> Any:
    """The PPOConfig of one trial (before search-space overrides)."""
    from marl_bft_rllib.rllib import add_evaluation, build_ppo_config

    training = dict(TRAINING)
    if args.smoke:
        training.update(SMOKE["training"])
    config = build_ppo_config(args.env_config, shared_policy=not args.per_replica_policies)
    if training:
        config.training(**training)
    config = add_evaluation(config, interval=args.eval_interval, duration=args.eval_episodes)
    # Evaluation metrics average this round's episodes only, not a window of old rounds.
    config.evaluation(
        evaluation_config={
            **config.evaluation_config,
            "metrics_num_episodes_for_smoothing": args.eval_episodes,
        }
    )
    config.env_runners(
        num_env_runners=args.num_env_runners, num_envs_per_env_runner=args.envs_per_runner
    )
    config.learners(num_learners=args.num_learners, num_gpus_per_learner=args.gpus_per_learner)
    config.callbacks(TuneSummaryCallbacks)  # the project's metrics + the progress summary
    if args.smoke:
        config.rl_module(model_config={**config.model_config, **SMOKE["model"]})
    if args.seed is not None:
        config.debugging(seed=args.seed)
    return config


def build_param_space(args: argparse.Namespace, config: Any) -> tuple[dict, dict[str, Any]]:
    """Tune's param_space (the config dict with search domains) and the searched domains."""
    space = _search_spaces()[args.search]
    param_space = config.to_dict()
    for path, domain in space.items():
        _set_path(param_space, path, domain)
    if "env_config/stl_weight" in space or "env_config/vote_weight" in space:
        # Evaluation runs the same env: let it follow the sampled weights.
        from ray import tune

        eval_env = param_space["evaluation_config"]["env_config"]
        for key in ("stl_weight", "vote_weight"):
            eval_env[key] = tune.sample_from(lambda spec, k=key: spec.config.env_config[k])
    return param_space, space


def build_scheduler(args: argparse.Namespace, space: Mapping[str, Any]) -> Any:
    """The trial scheduler named by --scheduler (None for FIFO)."""
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    if args.scheduler == "asha":
        # Below max_t, or ASHA can never stop a trial early.
        grace = min(max(args.eval_interval, min(10, args.stop_iters // 4)), args.stop_iters // 2)
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=EVAL_F1_LAST,
            mode="max",
            max_t=args.stop_iters,
            grace_period=grace,
        )
    if args.scheduler == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration",
            metric=EVAL_F1_LAST,
            mode="max",
            perturbation_interval=max(2 * args.eval_interval, 4),
            hyperparam_mutations=_nested(space),
        )
    return None


class TrainStopper:
    """Stops a trial at the iteration / env-step / time budget or once eval F1 hits the target."""

    def __init__(self, stop_iters: int, stop_timesteps: int, target_f1: float, time_s: float):
        """Budgets and target of every trial."""
        self.stop_iters, self.stop_timesteps = stop_iters, stop_timesteps
        self.target_f1, self.time_s = target_f1, time_s

    def __call__(self, trial_id: str, result: dict) -> bool:
        """True when this trial is done."""
        f1 = result.get(EVAL_F1, float("nan"))
        return (
            result.get("training_iteration", 0) >= self.stop_iters
            or result.get("num_env_steps_sampled_lifetime", 0) >= self.stop_timesteps
            or result.get("time_total_s", 0.0) >= self.time_s
            or (f1 == f1 and f1 >= self.target_f1)
        )

    def stop_all(self) -> bool:
        """Never stops the whole experiment."""
        return False


def build_stopper(args: argparse.Namespace) -> Any:
    """Budget / target stopper, combined with the value-health stopper unless disabled."""
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    from marl_bft_rllib.rllib import ValueHealthStopper

    budget = TrainStopper(args.stop_iters, args.stop_timesteps, args.target_f1, args.time_budget_s)
    stoppers = [FunctionStopper(budget)]
    searching = args.num_samples > 1 or args.search != "none"
    if args.health_stop == "on" or (args.health_stop == "auto" and searching):
        stoppers.append(ValueHealthStopper(grace_iterations=DEFAULTS["health_grace_iters"]))
    return CombinedStopper(*stoppers)


def init_ray(args: argparse.Namespace) -> None:
    """Join the cluster (--address / RAY_ADDRESS) or start a local Ray instance."""
    import ray

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        import marl_bft_rllib

        # Ship this checkout's package to the cluster's workers.
        ray.init(
            address=address,
            runtime_env={"py_modules": [str(Path(marl_bft_rllib.__file__).parent)]},
        )
    else:
        # Local workers import the package from this checkout even when it isn't installed.
        path = os.environ.get("PYTHONPATH", "")
        if str(REPO_ROOT) not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), path) if p)
        # "local": always a new instance of our own, even when other Ray instances (a
        # `ray start` cluster, another job) run on this machine; join one with --address.
        ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False)


def check_resources(args: argparse.Namespace, config: Any) -> None:
    """Fail early (exit 2) when the cluster can never run one trial."""
    import ray
    from ray.rllib.algorithms.ppo import PPO

    have = ray.cluster_resources()
    gpus_needed = args.gpus_per_learner * max(1, args.num_learners)
    if gpus_needed > 0 and have.get("GPU", 0.0) < gpus_needed:
        ray.shutdown()
        args.parser.error(
            f"--gpus-per-learner: a trial needs {gpus_needed:g} GPU(s) but the Ray cluster has "
            f"{have.get('GPU', 0.0):g}; use --gpus-per-learner 0 on CPU-only machines"
        )
    need = PPO.default_resource_request(config).required_resources
    if not (args.address or os.environ.get("RAY_ADDRESS")) and need.get("CPU", 0) > have.get(
        "CPU", 0
    ):
        ray.shutdown()
        args.parser.error(
            f"--num-env-runners: a trial needs {need.get('CPU', 0):g} CPUs (1 + env runners + "
            f"learners) but this machine has {have.get('CPU', 0):g}; lower --num-env-runners "
            "or --num-learners"
        )


def best_checkpoint(results: Any) -> tuple[str | None, float]:
    """Best checkpoint over all trials by evaluation F1 (the latest one if none was scored)."""
    best_path, best_f1 = None, float("nan")
    for result in results:
        for ckpt, metrics in result.best_checkpoints or []:
            f1 = metrics.get(EVAL_F1, float("nan"))
            if f1 == f1 and (best_f1 != best_f1 or f1 > best_f1):
                best_path, best_f1 = ckpt.path, float(f1)
    if best_path is None:
        for result in results:
            if result.checkpoint is not None:
                f1 = (result.metrics or {}).get(EVAL_F1_LAST, float("nan"))
                return result.checkpoint.path, float(f1)
    return best_path, best_f1


def save_results(results: Any, exp_dir: Path, args: argparse.Namespace, best: tuple) -> None:
    """Write every trial's progress (results.csv) and a summary.json next to the experiment."""
    import pandas as pd

    frames = []
    for result in results:
        df = result.metrics_dataframe
        if df is not None and len(df):
            df = df.copy()
            df.insert(0, "trial_dir", Path(result.path).name)
            frames.append(df)
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(exp_dir / "results.csv", index=False)
    trials = []
    for result in results:
        m = result.metrics or {}
        trials.append(
            {
                "trial_dir": result.path,
                "error": None if result.error is None else str(result.error).splitlines()[0],
                **{k: m.get(k) for k in PROGRESS_COLUMNS if not isinstance(m.get(k), dict)},
            }
        )
    summary = {
        "best_checkpoint": best[0],
        "eval_f1": best[1],
        "scenario": args.scenario,
        "env_config": args.env_config,
        "trials": trials,
    }
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the experiment and print the best checkpoint."""
    args = parse_args(argv)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact CLIReporter table

    import ray
    from ray import tune
    from ray.rllib.algorithms.ppo import PPO

    import marl_bft_rllib

    init_ray(args)
    marl_bft_rllib.register()
    exp_dir = Path(args.storage_path) / args.name
    try:
        if args.resume:
            print(f"Resuming {exp_dir}", flush=True)
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable=PPO, resume_unfinished=True, resume_errored=True
            )
        else:
            config = build_config(args)
            check_resources(args, config)
            param_space, space = build_param_space(args, config)
            # The "best trial" line lists the searched parameters only; none without a search.
            reporter = tune.CLIReporter(
                metric_columns=PROGRESS_COLUMNS,
                parameter_columns={k: k.split("/")[-1].lstrip("_") for k in space} or None,
                max_report_frequency=10 if args.smoke else 30,
                sort_by_metric=bool(space),
                metric=EVAL_F1_LAST if space else None,
                mode="max" if space else None,
            )
            tuner = tune.Tuner(
                PPO,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    num_samples=args.num_samples, scheduler=build_scheduler(args, space)
                ),
                run_config=tune.RunConfig(
                    name=args.name,
                    storage_path=args.storage_path,
                    stop=build_stopper(args),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=args.keep_checkpoints,
                        checkpoint_score_attribute=EVAL_F1,
                        checkpoint_score_order="max",
                        # Every iteration: --resume redoes at most the one in flight.
                        checkpoint_frequency=1,
                        checkpoint_at_end=True,
                    ),
                    failure_config=tune.FailureConfig(max_failures=args.max_failures),
                    progress_reporter=reporter,
                    callbacks=[ResumableCSVLoggerCallback()],
                    verbose=1,
                ),
            )
        results = tuner.fit()
        best = best_checkpoint(results)
        save_results(results, exp_dir, args, best)
    finally:
        ray.shutdown()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        last = (str(errors[0]).strip().splitlines() or ["?"])[-1]
        print(f"{len(errors)} of {len(results)} trial(s) failed; first error: {last}")
    if errors or best[0] is None:
        print(
            f"To resume: python {os.path.relpath(__file__)} --resume "
            f"--storage-path {args.storage_path} --name {args.name}"
        )
    if best[0] is None:
        print("BEST_CHECKPOINT none EVAL_F1 nan")
        return 1
    print(f"BEST_CHECKPOINT {best[0]} EVAL_F1 {best[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
