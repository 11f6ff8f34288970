"""Ray Tune layer: the per-iteration summary, resumable logs, and the experiment wiring.

- ``TuneSummaryCallbacks`` (an RLlib callback class) adds the flat result keys below to
  every training result. The latest evaluation F1 is carried forward on the callback
  object, never on the Algorithm; after a restore, when no evaluation ran yet in this
  process, it evaluates once right away, so the carried F1 that schedulers and the
  stopper rank trials by is never NaN after the first evaluation.
- ``ResumableCSVLoggerCallback``: Tune's ``CSVLoggerCallback``, except that a resumed
  trial keeps writing rows under the header already in ``progress.csv`` (Tune's own
  builds a new column set from the first resumed result, and pandas cannot read the file
  back).
- ``train_tune.py``'s library half: search-space presets and Tune's ``param_space``
  (``build_param_space``), the PPO config of a trial (``build_config``), the scheduler
  (``build_scheduler``), the per-trial stopper (``build_stopper``), joining or starting
  Ray (``init_ray``, ``check_resources``), resuming (``experiment_to_resume``) and the
  best checkpoint over all trials (``best_checkpoint``, ``save_results``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.utils.annotations import override
from ray.tune.logger import CSVLoggerCallback
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.stopper import CombinedStopper, FunctionStopper, Stopper

from marl_bft_rllib.rllib.callbacks import (
    ENV_METRICS_KEY,
    MarlBftCallbacks,
    add_pooled_scores,
    env_metric,
)
from marl_bft_rllib.rllib.config import add_evaluation, build_ppo_config
from marl_bft_rllib.rllib.health import ValueHealthStopper, health_status_name
from marl_bft_rllib.validation import check_int, check_number

EVAL_F1 = "eval_f1"  # pooled F1 of this iteration's evaluation, nan when none ran
EVAL_RETURN = "eval_return"  # mean return of this iteration's evaluation, nan when none ran
EVAL_F1_LAST = "eval_f1_last"  # latest evaluation F1 carried forward (schedulers, stopper)
VALUE_LOSS = "value_loss"  # max over modules of the unclipped value loss
VALUE_EV = "value_ev"  # min over modules of the masked explained variance
VALUE_HEALTH = "value_health"  # worst over modules: "ok" / "stuck" / "exploding" / "n/a"

_NAN = float("nan")


def _eval_f1(evaluation: Mapping[str, Any] | None) -> float | None:
    """Pooled F1 (else mean episode F1) of an evaluation result, None if it has none."""
    if not evaluation:
        return None
    metrics = (evaluation.get("env_runners") or {}).get(ENV_METRICS_KEY)
    if isinstance(metrics, dict):
        add_pooled_scores(metrics)
    wrapped = {"evaluation": evaluation}
    f1 = env_metric(wrapped, "pooled_f1", evaluation=True)
    return f1 if f1 is not None else env_metric(wrapped, "f1", evaluation=True)


def value_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """Worst-case value figures over modules: max loss, min EV, worst health (NaN-safe)."""
    losses, evs, codes = [], [], []
    for stats in (result.get("learners") or {}).values():
        if not isinstance(stats, Mapping):
            continue
        for key, out in (
            ("value_loss_unclipped", losses),
            ("value_explained_var", evs),
            ("value_health", codes),
        ):
            value = stats.get(key)
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                out.append(float(value))
    return {
        VALUE_LOSS: max(losses) if losses else _NAN,
        VALUE_EV: min(evs) if evs else _NAN,
        VALUE_HEALTH: health_status_name(max(codes)) if codes else "n/a",
    }


class TuneSummaryCallbacks(MarlBftCallbacks):
    """MarlBftCallbacks plus the flat summary keys of the Tune progress table."""

    def __init__(self) -> None:
        """No evaluation seen yet in this process."""
        super().__init__()
        self.last_eval_f1: float | None = None

    @override(MarlBftCallbacks)
    def on_algorithm_init(self, *, algorithm: Any, **kwargs: Any) -> None:
        """Quiet Tune's per-checkpoint INFO line (one per iteration) in the trial's log."""
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)

    @override(MarlBftCallbacks)
    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        """Add eval F1 (fresh and carried), eval return and the value summary to ``result``."""
        super().on_train_result(algorithm=algorithm, result=result, **kwargs)
        interval = algorithm.config.evaluation_interval or 0
        # RLlib repeats the last evaluation in later results: only a due one is fresh.
        fresh = bool(interval) and result.get("training_iteration", 0) % interval == 0
        evaluation = result.get("evaluation") if fresh else None
        f1 = _eval_f1(evaluation)
        restored = result.get("training_iteration", 0) > 1 and self.last_eval_f1 is None
        if f1 is None and interval and restored:
            # A restored trial (new process): evaluate now rather than carry NaN. A fresh
            # trial waits for its first due evaluation.
            evaluation = algorithm.evaluate()
            f1 = _eval_f1(evaluation)
            fresh = f1 is not None
        if f1 is not None:
            self.last_eval_f1 = f1
        ret = (evaluation or {}).get("env_runners", {}).get("episode_return_mean")
        result[EVAL_F1] = f1 if fresh and f1 is not None else _NAN
        result[EVAL_RETURN] = float(ret) if fresh and ret is not None else _NAN
        result[EVAL_F1_LAST] = _NAN if self.last_eval_f1 is None else self.last_eval_f1
        result.update(value_summary(result))


class ResumableCSVLoggerCallback(CSVLoggerCallback):
    """progress.csv that keeps one header across a resume (pandas can read it back)."""

    @override(CSVLoggerCallback)
    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Append a row; a continued file keeps its existing columns."""
        if trial not in self._trial_files:
            self._setup_trial(trial)
        if self._trial_csv.get(trial) is None and self._trial_continue.get(trial):
            path = Path(trial.local_path, "progress.csv")
            with path.open() as f:
                header = next(csv.reader(f), None)
            if header:
                self._trial_csv[trial] = csv.DictWriter(
                    self._trial_files[trial], header, extrasaction="ignore"
                )
        super().log_trial_result(iteration, trial, result)


# -- search spaces and schedulers ----------------------------------------------------------
SEARCH_DOCS: dict[str, str] = {
    "none": "no search: the defaults (num_samples > 1 repeats them with new seeds)",
    "ppo": "lr, entropy_coeff, gamma, lambda, train_batch_size_per_learner",
    "reward": "env stl_weight, vote_weight",
    "full": "ppo + reward",
}
SCHEDULERS = ("none", "asha", "pbt")
# Result key -> column of the progress table (and the per-trial figures of summary.json).
PROGRESS_COLUMNS: dict[str, str] = {
    "training_iteration": "iter",
    "num_env_steps_sampled_lifetime": "env steps",
    "env_runners/episode_return_mean": "return",
    EVAL_F1_LAST: "last eval F1",  # carried forward between evaluations
    VALUE_LOSS: "V loss",
    VALUE_EV: "V EV",
    VALUE_HEALTH: "V health",
}


def search_spaces() -> dict[str, dict[str, Any]]:
    """Search-space presets: flat param paths ("env_config/stl_weight") to Tune domains."""
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


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    """Set ``d[a][b] = value`` for ``path`` "a/b", creating the inner dicts."""
    keys = path.split("/")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def _nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dicts from flat "a/b" paths."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        _set_path(out, path, value)
    return out


def build_param_space(config: PPOConfig, search: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune's param_space (the config dict with search domains) and the searched domains."""
    space = search_spaces()[search]
    param_space = config.to_dict()
    for path, domain in space.items():
        _set_path(param_space, path, domain)
    if "env_config/stl_weight" in space or "env_config/vote_weight" in space:
        # Evaluation runs the same env: let it follow the sampled weights.
        eval_env = param_space["evaluation_config"]["env_config"]
        for key in ("stl_weight", "vote_weight"):
            eval_env[key] = tune.sample_from(lambda spec, k=key: spec.config.env_config[k])
    return param_space, space


def build_scheduler(
    name: str, space: Mapping[str, Any], *, stop_iters: int, eval_interval: int
) -> TrialScheduler | None:
    """The trial scheduler ``name`` ("asha" / "pbt") on the carried eval F1; None for FIFO."""
    if name == "asha":
        # Below max_t, or ASHA can never stop a trial early.
        grace = min(max(eval_interval, min(10, stop_iters // 4)), stop_iters // 2)
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=EVAL_F1_LAST,
            mode="max",
            max_t=stop_iters,
            grace_period=grace,
        )
    if name == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration",
            metric=EVAL_F1_LAST,
            mode="max",
            perturbation_interval=max(2 * eval_interval, 4),
            hyperparam_mutations=_nested(space),
        )
    return None


# -- stopping ------------------------------------------------------------------------------
def _limit_reached(limits: Mapping[str, float], trial_id: str, result: Mapping[str, Any]) -> bool:
    """Tune's stop-dict rule, ``result[key] >= limit`` for any key; a missing key never stops."""
    return any(result.get(key, 0) >= limit for key, limit in limits.items())


def _target_reached(target_f1: float, trial_id: str, result: Mapping[str, Any]) -> bool:
    """This iteration's eval F1 reached the target; NaN (no evaluation ran) never does."""
    f1 = result.get(EVAL_F1, _NAN)
    return not math.isnan(f1) and f1 >= target_f1


def build_stopper(
    *,
    stop_iters: int,
    stop_timesteps: int,
    time_budget_s: float,
    target_f1: float,
    value_health: bool = False,
    health_grace_iters: int = 10,
) -> Stopper:
    """Per-trial stopper: iteration / env-step / training-time budget, target eval F1, and
    (``value_health``) a critic stuck or exploding after ``health_grace_iters`` iterations."""
    # Read from the result, not counted as MaximumIterationStopper does: its count starts
    # again at 0 in a resumed experiment, which would run stop_iters more iterations.
    limits = {
        "training_iteration": stop_iters,
        "num_env_steps_sampled_lifetime": stop_timesteps,
        "time_total_s": time_budget_s,
    }
    stoppers: list[Stopper] = [
        FunctionStopper(partial(_limit_reached, limits)),
        FunctionStopper(partial(_target_reached, target_f1)),
    ]
    if value_health:
        stoppers.append(ValueHealthStopper(grace_iterations=health_grace_iters))
    return CombinedStopper(*stoppers)


# -- the PPO config of a trial -------------------------------------------------------------
def build_config(
    env_config: Mapping[str, Any],
    *,
    shared_policy: bool = True,
    training: Mapping[str, Any] | None = None,
    eval_interval: int = 2,
    eval_episodes: int = 20,
    num_env_runners: int = 0,
    envs_per_runner: int = 1,
    num_learners: int = 0,
    gpus_per_learner: float = 0.0,
    model: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> PPOConfig:
    """The PPOConfig of one trial (before search-space overrides), with the summary callbacks."""
    config = add_evaluation(
        build_ppo_config(dict(env_config), shared_policy=shared_policy, **(training or {})),
        interval=eval_interval,
        duration=eval_episodes,
    )
    config = (
        # Evaluation metrics average this round's episodes only, not a window of old rounds.
        config.evaluation(
            evaluation_config={
                **config.evaluation_config,
                "metrics_num_episodes_for_smoothing": eval_episodes,
            }
        )
        .env_runners(num_env_runners=num_env_runners, num_envs_per_env_runner=envs_per_runner)
        .learners(num_learners=num_learners, num_gpus_per_learner=gpus_per_learner)
        .callbacks(TuneSummaryCallbacks)  # the project's metrics + the progress summary
    )
    if model:
        config.rl_module(model_config={**config.model_config, **model})
    return config if seed is None else config.debugging(seed=seed)


# -- command-line value types --------------------------------------------------------------
def _argparse_type(check: Callable[[Any], Any], name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with ``check`` (the shared validation helpers)."""

    def parse(text: str) -> Any:
        """The checked value of ``text``, or an argparse error saying what is wrong."""
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None

    parse.__name__ = name
    return parse


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low``."""

    def check(text: str) -> int:
        try:
            value: Any = int(text)
        except ValueError:
            value = text
        return check_int("flag", value, lo=low)

    return _argparse_type(check, f"int>={low}")


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [low, high] (``low_open``: (low, high])."""

    def check(text: str) -> float:
        try:
            value: Any = float(text)
        except ValueError:
            value = text
        return check_number("flag", value, lo=low, hi=high, lo_open=low_open)

    return _argparse_type(check, "number")


# -- Ray -----------------------------------------------------------------------------------
def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local Ray instance of ``num_cpus`` CPUs."""
    import ray

    package = Path(__file__).resolve().parent
    if address:
        # Ship this checkout's package to the cluster's workers.
        ray.init(address=address, runtime_env={"py_modules": [str(package)]})
        return
    # Local workers import the package from this checkout even when it isn't installed.
    root, path = str(package.parent), os.environ.get("PYTHONPATH", "")
    if root not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
    # "local": always a new instance of our own, even when other Ray instances (a
    # `ray start` cluster, another job) run on this machine; join one with --address.
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)


def check_resources(config: PPOConfig, *, local: bool) -> str | None:
    """Why the Ray cluster can never run one trial of ``config`` (naming the flag), or None.

    The CPU count is checked on a ``local`` instance only: a cluster may autoscale.
    """
    import ray
    from ray.rllib.algorithms.ppo import PPO

    have = ray.cluster_resources()
    gpus_needed = config.num_gpus_per_learner * max(1, config.num_learners)
    if gpus_needed > 0 and have.get("GPU", 0.0) < gpus_needed:
        return (
            f"--gpus-per-learner: a trial needs {gpus_needed:g} GPU(s) but the Ray cluster has "
            f"{have.get('GPU', 0.0):g}; use --gpus-per-learner 0 on CPU-only machines"
        )
    need = PPO.default_resource_request(config).required_resources
    if local and need.get("CPU", 0) > have.get("CPU", 0):
        return (
            f"--num-env-runners: a trial needs {need.get('CPU', 0):g} CPUs (1 + env runners + "
            f"learners) but this machine has {have.get('CPU', 0):g}; lower --num-env-runners "
            "or --num-learners"
        )
    return None


# -- storage, resuming and results --------------------------------------------------------
def resolve_storage(path: str) -> str:
    """A local ``path`` resolved, created and checked writable (a URI as is); else ValueError."""
    if "://" in path:
        return path
    storage = Path(path).expanduser().resolve()
    try:
        storage.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create {storage}: {e.strerror}") from None
    if not os.access(storage, os.W_OK):
        raise ValueError(f"{storage} is not writable")
    return str(storage)


def experiment_to_resume(storage: str | Path, name: str | None = None) -> str:
    """``name`` if ``Tuner.can_restore`` storage/name, else the most recently modified
    resumable experiment under ``storage``; ValueError when there is none."""
    storage = Path(storage)
    if name is not None:
        if not tune.Tuner.can_restore(storage / name):
            raise ValueError(f"no experiment at {storage / name}")
        return name
    runs = [p for p in storage.iterdir() if p.is_dir() and tune.Tuner.can_restore(p)]
    if not runs:
        raise ValueError(f"no experiment to resume under {storage}")
    return max(runs, key=lambda p: p.stat().st_mtime).name


def run_config(
    name: str,
    storage_path: str,
    *,
    stop: Stopper,
    keep_checkpoints: int,
    max_failures: int,
    space: Mapping[str, Any],
    report_every_s: int = 30,
) -> tune.RunConfig:
    """Tune's RunConfig: a checkpoint every iteration (the best N by eval F1 kept), retries,
    resumable CSV logs, and the compact progress table (trials ranked by the carried eval F1
    when ``space`` searches anything; its searched parameters as columns)."""
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        stop=stop,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=keep_checkpoints,
            checkpoint_score_attribute=EVAL_F1,
            checkpoint_score_order="max",
            # Every iteration: --resume redoes at most the one in flight.
            checkpoint_frequency=1,
            checkpoint_at_end=True,
        ),
        failure_config=tune.FailureConfig(max_failures=max_failures),
        progress_reporter=tune.CLIReporter(
            metric_columns=PROGRESS_COLUMNS,
            parameter_columns={k: k.split("/")[-1].lstrip("_") for k in space} or None,
            max_report_frequency=report_every_s,
            sort_by_metric=bool(space),
            metric=EVAL_F1_LAST if space else None,
            mode="max" if space else None,
        ),
        callbacks=[ResumableCSVLoggerCallback()],
        verbose=1,
    )


def best_checkpoint(results: tune.ResultGrid) -> tuple[str | None, float]:
    """Best checkpoint over all trials by eval F1 (the latest one if none was scored)."""
    try:
        # The carried F1: Tune's running max of eval_f1 turns NaN at every iteration
        # without an evaluation (max(nan, x) is nan), and NaN trials are never the best.
        best = results.get_best_result(metric=EVAL_F1_LAST, mode="max", scope="all")
    except RuntimeError:  # no trial reported an evaluation
        best = None
    checkpoints = (best.best_checkpoints or []) if best is not None else []
    scored = [
        (ckpt.path, float(metrics[EVAL_F1]))
        for ckpt, metrics in checkpoints
        if not math.isnan(metrics.get(EVAL_F1, _NAN))
    ]
    if scored:
        return max(scored, key=lambda pair: pair[1])
    for result in results:
        if result.checkpoint is not None:
            return result.checkpoint.path, float((result.metrics or {}).get(EVAL_F1_LAST, _NAN))
    return None, _NAN


def save_results(
    results: tune.ResultGrid,
    exp_dir: Path,
    best: tuple[str | None, float],
    scenario: str,
    env_config: Mapping[str, Any],
) -> None:
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
        "scenario": scenario,
        "env_config": dict(env_config),
        "trials": trials,
    }
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


__all__ = [
    "EVAL_F1",
    "EVAL_F1_LAST",
    "EVAL_RETURN",
    "PROGRESS_COLUMNS",
    "SCHEDULERS",
    "SEARCH_DOCS",
    "VALUE_EV",
    "VALUE_HEALTH",
    "VALUE_LOSS",
    "ResumableCSVLoggerCallback",
    "TuneSummaryCallbacks",
    "best_checkpoint",
    "build_config",
    "build_param_space",
    "build_scheduler",
    "build_stopper",
    "check_resources",
    "experiment_to_resume",
    "float_in",
    "init_ray",
    "int_at_least",
    "resolve_storage",
    "run_config",
    "save_results",
    "search_spaces",
    "value_summary",
]
