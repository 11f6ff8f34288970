"""Ray Tune layer: the per-iteration summary, resumable logs, and the experiment wiring.

- ``TuneSummaryCallbacks`` (an RLlib callback class) adds the flat result keys below to
  every training result. The latest evaluation F1 is carried forward on the callback
  object, never on the Algorithm; after a restore, when no evaluation ran yet in this
  process, it evaluates once right away, so the carried F1 that schedulers and the
  stopper rank trials by is never NaN after the first evaluation.
- ``ResumableCSVLoggerCallback``: Tune's ``CSVLoggerCallback``, except that a resumed
  trial keeps writing rows under the header already in ``progress.csv`` (Tune's own
  builds a new column set from the first resumed result, and pandas cannot read the file
  back). With ``ResumableJsonLoggerCallback`` (``result.json``) it also drops the rows
  of iterations a restored trial redoes (logged before an interruption, checkpointed
  after it), so no iteration appears twice.
- Retries on infrastructure failures only: Tune's ``FailureConfig`` retries every failed
  trial. ``PPO`` (RLlib's, with ``NoRetryOnDeterministicErrors``) tells the driver's
  ``RetryPolicyCallback`` about a deterministic error (``is_infrastructure_error`` false)
  before raising it, and the callback makes that failure the trial's last: the trial
  ends in ERROR with the original error, tried once. A dead actor, worker or node, a
  lost object (RLlib's env-runner failures that outlive its fault tolerance included)
  is still retried up to ``max_failures`` times.
- ``train_tune.py``'s library half: search-space presets and Tune's ``param_space``
  (``build_param_space``), the PPO config of a trial (``build_config``), the scheduler
  (``build_scheduler``), the per-trial stopper (``build_stopper``), joining or starting
  Ray (``init_ray``, ``check_resources``), resuming (``experiment_to_resume``) and the
  best checkpoint over all trials (``best_checkpoint``, ``save_results``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as ray_errors
from ray import tune
from ray.rllib.algorithms.ppo import PPO as _RLlibPPO
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.utils.annotations import override
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import TRAINING_ITERATION, TRIAL_INFO
from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.stopper import CombinedStopper, FunctionStopper, Stopper

from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.rllib.callbacks import (
    ENV_METRICS_KEY,
    MarlBftCallbacks,
    add_pooled_scores,
    env_metric,
)
from marl_bft_rllib.rllib.config import (
    ATTACKER_POLICY,
    SHARED_POLICY,
    add_evaluation,
    build_ppo_config,
)
from marl_bft_rllib.rllib.health import ValueHealthStopper, health_status_name
from marl_bft_rllib.rllib.registration import ENV_NAME
from marl_bft_rllib.validation import check_int, check_json_object, check_number

EVAL_F1 = "eval_f1"  # pooled F1 of this iteration's evaluation, nan when none ran
EVAL_RETURN = "eval_return"  # mean return of this iteration's evaluation, nan when none ran
EVAL_F1_LAST = "eval_f1_last"  # latest evaluation F1 carried forward (schedulers, stopper)
VALUE_LOSS = "value_loss"  # max over modules of the unclipped value loss
VALUE_EV = "value_ev"  # min over modules of the masked explained variance
VALUE_HEALTH = "value_health"  # worst over modules: "ok" / "stuck" / "exploding" / "n/a"

_NAN = float("nan")
logger = logging.getLogger(__name__)


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


def _row_iteration(row: Mapping[str, Any]) -> int:
    """A logged row's training_iteration (-1 when it has none)."""
    try:
        return int(float(row.get(TRAINING_ITERATION, -1)))
    except (TypeError, ValueError):
        return -1


def _read_rows(path: Path) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """The CSV header (None for result.json) and the rows of a Tune log; no rows if unreadable."""
    try:
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                return reader.fieldnames, list(reader)
        return None, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None, []


def drop_logged_iterations(path: Path, from_iteration: int) -> int:
    """Remove the rows of a ``result.json`` or ``progress.csv`` from ``from_iteration`` on.

    A trial restored from the checkpoint of iteration k redoes k + 1, ...: the rows that
    those iterations logged before the interruption belong to a discarded run and would
    repeat. Returns how many rows were removed.
    """
    header, rows = _read_rows(path)
    keep = [r for r in rows if _row_iteration(r) < from_iteration]
    if len(keep) == len(rows):
        return 0
    if header is not None:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            writer.writerows(keep)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in keep))
    return len(rows) - len(keep)


class _DropsRedoneIterations:
    """Logger mixin: a result whose iteration was logged already (the trial was restored
    from an earlier checkpoint) first removes that iteration's row and every later one."""

    _log_name: str

    def _open_trial(self, trial: Any) -> None:
        """Open the trial's file as the logger class does (its own setup method)."""
        raise NotImplementedError

    def _before_log(self, trial: Any, result: Mapping[str, Any]) -> None:
        """Open the trial's file if needed (a restore fetches it first), then drop the
        rows of iterations being redone."""
        if trial not in self._trial_files:
            self._open_trial(trial)
        self._drop_redone(trial, result)

    def __init__(self) -> None:
        """No trial logged yet in this process."""
        super().__init__()
        self._last_logged: dict[str, int] = {}  # trial id -> last iteration in its file

    def _drop_redone(self, trial: Any, result: Mapping[str, Any]) -> None:
        """Before logging ``result``: drop the rows of a discarded run of its iteration."""
        iteration = _row_iteration(result)
        last = self._last_logged
        path = Path(trial.local_path, self._log_name)
        if trial.trial_id not in last:  # first result in this process: what the file holds
            last[trial.trial_id] = max((_row_iteration(r) for r in _read_rows(path)[1]), default=-1)
        if 0 <= iteration <= last[trial.trial_id]:
            handle = self._trial_files.get(trial)
            if handle is not None:
                handle.flush()  # the open handle appends after the rewrite (append mode)
            removed = drop_logged_iterations(path, iteration)
            logger.info("trial %s: %d logged row(s) of redone iterations removed", trial, removed)
        last[trial.trial_id] = iteration


class ResumableJsonLoggerCallback(_DropsRedoneIterations, JsonLoggerCallback):
    """result.json in which no iteration appears twice, across restores."""

    _log_name = "result.json"

    def _open_trial(self, trial: Any) -> None:
        """JsonLoggerCallback opens a trial's file when the trial starts."""
        self.log_trial_start(trial)

    @override(JsonLoggerCallback)
    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Append the result, after dropping the rows of iterations being redone."""
        self._before_log(trial, result)
        super().log_trial_result(iteration, trial, result)


class ResumableCSVLoggerCallback(_DropsRedoneIterations, CSVLoggerCallback):
    """progress.csv that keeps one header across a resume (pandas can read it back) and in
    which no iteration appears twice."""

    _log_name = "progress.csv"

    def _open_trial(self, trial: Any) -> None:
        """CSVLoggerCallback opens a trial's file in its trial setup."""
        self._setup_trial(trial)

    @override(CSVLoggerCallback)
    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        """Append a row; a continued file keeps its existing columns."""
        self._before_log(trial, result)
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
    # per side (adversary="learned": the defenders' module and the attackers')
    f"env_runners/module_episode_returns_mean/{SHARED_POLICY}": "defender return",
    f"env_runners/module_episode_returns_mean/{ATTACKER_POLICY}": "attacker return",
    f"env_runners/{ENV_METRICS_KEY}/breached": "breach rate",
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


def json_object(text: str) -> dict[str, Any]:
    """An argparse ``type``: a JSON object, such as ``'{"certificate": "all_timely"}'``."""
    return _argparse_type(lambda t: check_json_object("flag", t), "JSON object")(text)


# -- Ray -----------------------------------------------------------------------------------
def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local Ray instance of ``num_cpus`` CPUs."""
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


# -- retries: only on infrastructure failures ----------------------------------------------
# Ray system failures: Tune retries a trial that failed with one of these (or with an error
# caused by one). Everything else raised by a trial (ValueError, TypeError, KeyError, ...)
# is an error of user config or code, and a retry would fail the same way.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    ray_errors.RayActorError,  # ActorDiedError, ActorUnavailableError (not a failed __init__)
    ray_errors.NodeDiedError,
    ray_errors.WorkerCrashedError,
    ray_errors.LocalRayletDiedError,
    ray_errors.ObjectLostError,  # OwnerDiedError, ObjectFetchTimedOutError, ...
    ray_errors.OutOfMemoryError,  # a worker killed by Ray's memory monitor
    ray_errors.ObjectStoreFullError,
    ray_errors.RaySystemError,
    ray_errors.TaskPlacementGroupRemoved,
    ray_errors.ActorPlacementGroupRemoved,
)
# The trainable waits this long for the driver to take a deterministic error as final.
FINAL_ERROR_ACK_TIMEOUT_S = 30.0
_GATE_NAME = "marl_bft_rllib.final_error_gate"
# "ValueError: message" / "ray.exceptions.OwnerDiedError: ..." lines of a traceback.
_ERROR_LINE = re.compile(
    r"^\s*(?:[\w.]+\.)?([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))(?::|$)", re.MULTILINE
)


def _infrastructure_names() -> set[str]:
    """Class names of INFRASTRUCTURE_ERRORS and their subclasses."""
    names, stack = set(), list(INFRASTRUCTURE_ERRORS)
    while stack:
        cls = stack.pop()
        names.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return names


def _last_error_type(text: str) -> str | None:
    """The type name on the last "Type: message" line of a traceback (the error raised)."""
    names = _ERROR_LINE.findall(text)
    return names[-1] if names else None


def is_infrastructure_error(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it wraps or was raised from, is a Ray system failure.

    A dead actor, worker or node, or a lost object is; a Ray task error is judged by its
    cause; an actor whose constructor raised (``actor_init_failed``: an env runner or
    learner built from a bad config) is judged by the exception its constructor raised.
    """
    seen: set[int] = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ray_errors.RayActorError) and e.actor_init_failed:
            # Only the traceback of the constructor's exception survives: read its type.
            if _last_error_type(str(e)) in _infrastructure_names():
                return True
            continue
        if isinstance(e, INFRASTRUCTURE_ERRORS):
            return True
        if isinstance(e, ray_errors.RayTaskError):
            stack.append(e.cause)
        stack.extend((e.__cause__, e.__context__))
    return False


def describe_error(error: BaseException | str | None) -> str | None:
    """One line "Type: message" for a trial's error (the user's exception, not Ray's wrapper)."""
    if error is None:
        return None
    if isinstance(error, ray_errors.RayTaskError) and not isinstance(
        error.cause, ray_errors.RayError
    ):
        error = error.cause  # the exception the trial raised
    text = str(error).strip()
    if isinstance(error, (str, ray_errors.RayError, tune.TuneError)):
        # Text with a traceback: its last "Type: message" line names the exception raised.
        starts = [m.start(1) for m in _ERROR_LINE.finditer(text)]
        if starts:
            return text[starts[-1] :].splitlines()[0].strip()
    first = (text.splitlines() or [""])[0]
    if isinstance(error, str):
        return first or "?"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@ray.remote(num_cpus=0)
class _FinalErrorGate:
    """Trials whose failure on its way is deterministic: reported by the trainable,
    acknowledged by the driver's ``RetryPolicyCallback`` once Tune will not retry it."""

    def __init__(self) -> None:
        """No reports yet."""
        self._reported: dict[str, str] = {}
        self._acked: set[str] = set()

    def report(self, trial_id: str, reason: str) -> None:
        """The trial is about to raise a deterministic error."""
        self._reported[trial_id] = reason
        self._acked.discard(trial_id)

    def take(self, trial_ids: list[str]) -> dict[str, str]:
        """Pop the reports of these trials (trial id -> reason)."""
        return {t: self._reported.pop(t) for t in trial_ids if t in self._reported}

    def ack(self, trial_id: str) -> None:
        """The driver will not retry the trial's next failure."""
        self._acked.add(trial_id)

    def acked(self, trial_id: str) -> bool:
        """Whether (and consume that) the driver acknowledged the trial's report."""
        if trial_id in self._acked:
            self._acked.discard(trial_id)
            return True
        return False


def _make_final(trial_id: str, error: BaseException) -> bool:
    """Report ``error`` as final to the driver's gate and wait until it is acknowledged."""
    if not ray.is_initialized() or trial_id == "default":  # not a Tune trial
        return False
    try:
        gate = ray.get_actor(_GATE_NAME)
    except ValueError:  # no RetryPolicyCallback in this experiment: Tune's rules apply
        return False
    try:
        ray.get(gate.report.remote(trial_id, describe_error(error) or "?"))
        deadline = time.monotonic() + FINAL_ERROR_ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            if ray.get(gate.acked.remote(trial_id)):
                return True
            time.sleep(0.05)
    except ray_errors.RayError as e:
        logger.warning("trial %s: could not report a deterministic error: %s", trial_id, e)
        return False
    logger.warning("trial %s: the driver did not acknowledge a deterministic error", trial_id)
    return False


class NoRetryOnDeterministicErrors:
    """Trainable mixin: a deterministic error from ``setup``, ``step`` or a checkpoint load
    is made final (not retried by Tune) before it is raised; see ``RetryPolicyCallback``.

    Put it before the Trainable class: ``class PPO(NoRetryOnDeterministicErrors, PPO)``.
    """

    trial_id: str

    def __init__(self, config: Any = None, *args: Any, **kwargs: Any) -> None:
        """Note the trial's id (RLlib's Algorithm drops it when it converts the config)."""
        info = config.get(TRIAL_INFO) if isinstance(config, dict) else None
        self._final_error_trial_id: str | None = getattr(info, "trial_id", None)
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]

    def reset(self, new_config: Any, *args: Any, **kwargs: Any) -> bool:
        """Tune's actor reuse: the actor now runs another trial, note its id."""
        info = new_config.get(TRIAL_INFO) if isinstance(new_config, dict) else None
        self._final_error_trial_id = getattr(info, "trial_id", None)
        return super().reset(new_config, *args, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def _final_unless_infrastructure(self) -> Iterator[None]:
        """Re-raise any exception; a deterministic one is reported as final first."""
        try:
            yield
        except Exception as error:
            if not is_infrastructure_error(error):
                trial_id = self.trial_id  # "default" where RLlib dropped the trial info
                _make_final(self._final_error_trial_id or trial_id, error)
            raise

    def setup(self, config: Any) -> None:
        """The Trainable's setup; a deterministic error in it is final."""
        with self._final_unless_infrastructure():
            super().setup(config)  # type: ignore[misc]

    def step(self) -> dict:
        """One training iteration; a deterministic error in it is final."""
        with self._final_unless_infrastructure():
            return super().step()  # type: ignore[misc]

    def load_checkpoint(self, checkpoint: Any) -> None:
        """Restore a checkpoint; a deterministic error in it is final."""
        with self._final_unless_infrastructure():
            super().load_checkpoint(checkpoint)  # type: ignore[misc]


def check_env_configs(config: Any) -> None:
    """Validate a ``marl_bft`` algorithm config's training and evaluation env configs."""
    if getattr(config, "env", None) != ENV_NAME:
        return
    EnvConfig.from_any(dict(config.env_config or {}))
    if config.evaluation_config:
        EnvConfig.from_any(dict(config.get_evaluation_config_object().env_config or {}))


class PPO(NoRetryOnDeterministicErrors, _RLlibPPO):
    """RLlib's PPO as the Tune trainable: a deterministic error ends its trial, no retry.

    Same name as RLlib's, so trial directories stay ``PPO_<env>_<id>``.
    """

    @override(_RLlibPPO)
    def setup(self, config: Any) -> None:
        """Check the env configs in the trial before RLlib builds anything, then set up.

        A search space can sample an invalid value. Checked here, the trial ends with the
        env's ``ValueError``; remote env runners would hide it behind RLlib's own errors.
        """
        with self._final_unless_infrastructure():
            check_env_configs(config)
        super().setup(config)


class RetryPolicyCallback(tune.Callback):
    """Tune retries a trial only after an infrastructure failure, ``max_failures`` times.

    Tune's ``FailureConfig`` has no per-exception rule: it retries every failure. A
    trainable with ``NoRetryOnDeterministicErrors`` reports a deterministic error here
    before raising it, and waits. At the next tuning step this callback lowers that
    trial's ``max_failures`` to its current failure count (so ``Trial.should_recover`` is
    false for the failure on its way) and acknowledges; Tune then ends the trial in ERROR
    with the original error. The limit is put back in ``on_trial_error``, so a later
    ``--resume`` of the errored trial gets the usual retries. Failures the trainable never
    sees (its own actor or node dying) keep Tune's retries.
    """

    def __init__(self) -> None:
        """The gate actor is made in ``setup``, in the driver."""
        self._gate: Any = None
        self._pending: Any = None  # an in-flight gate.take() call
        self._limits: dict[str, int] = {}  # trial id -> its max_failures before lowering

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (Tune saves its callbacks): no actor handles."""
        return {**self.__dict__, "_gate": None, "_pending": None}

    def setup(self, **info: Any) -> None:
        """Start (or join) the gate actor that failing trainables report to."""
        # One per driver, kept for its lifetime: killing it at the end of an experiment
        # could hand a dying actor to the next experiment's get_if_exists.
        self._gate = _FinalErrorGate.options(name=_GATE_NAME, get_if_exists=True).remote()
        self._pending = None

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        """Take the reported deterministic errors (without blocking) and make them final."""
        if self._gate is None:
            return
        if self._pending is None:
            live = [t.trial_id for t in trials if t.status in (Trial.PENDING, Trial.RUNNING)]
            if live:
                self._pending = self._gate.take.remote(live)
            return
        ready, _ = ray.wait([self._pending], timeout=0)
        if not ready:
            return
        try:
            reported = ray.get(self._pending)
        except ray_errors.RayError as e:  # the gate died: start a new one, retries as Tune's
            logger.warning("retry policy: gate actor lost (%s); starting a new one", e)
            self.setup()
            return
        self._pending = None
        by_id = {t.trial_id: t for t in trials}
        for trial_id, reason in reported.items():
            if (trial := by_id.get(trial_id)) is None:
                continue
            self._limits.setdefault(trial_id, trial.max_failures)
            trial.max_failures = trial.num_failures  # the failure on its way is the last
            logger.warning(
                "Trial %s failed with %s: a deterministic error, not retried", trial, reason
            )
            self._gate.ack.remote(trial_id)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Put back the retry limit of a trial whose deterministic error ended it."""
        limit = self._limits.pop(trial.trial_id, None)
        if limit is not None:
            trial.max_failures = limit


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
    """Tune's RunConfig: a checkpoint every iteration (the best N by eval F1 kept), up to
    ``max_failures`` retries after infrastructure failures only (with this module's ``PPO``
    trainable), resumable CSV logs, and the compact progress table (trials ranked by the
    carried eval F1 when ``space`` searches anything; its searched parameters as columns)."""
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
        # Retried only after infrastructure failures: see RetryPolicyCallback.
        failure_config=tune.FailureConfig(max_failures=max_failures),
        progress_reporter=tune.CLIReporter(
            metric_columns=PROGRESS_COLUMNS,
            parameter_columns={k: k.split("/")[-1].lstrip("_") for k in space} or None,
            max_report_frequency=report_every_s,
            sort_by_metric=bool(space),
            metric=EVAL_F1_LAST if space else None,
            mode="max" if space else None,
        ),
        callbacks=[
            ResumableCSVLoggerCallback(),
            ResumableJsonLoggerCallback(),
            RetryPolicyCallback(),
        ],
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


def error_kind(error: BaseException | None) -> str | None:
    """A trial error's kind: "infrastructure" (retried), "deterministic" (not) or None."""
    if error is None:
        return None
    return "infrastructure" if is_infrastructure_error(error) else "deterministic"


def failure_report(results: Iterable[tune.Result]) -> list[str]:
    """One line per failed trial: its directory, whether it was retried, and its error."""
    lines = []
    for result in results:
        if result.error is not None:
            kind = error_kind(result.error)
            how = "retried up to max_failures times" if kind == "infrastructure" else "not retried"
            name = Path(result.path).name if result.path else "?"
            lines.append(f"trial {name} failed ({kind}, {how}): {describe_error(result.error)}")
    return lines


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
                "error": describe_error(result.error),
                "error_kind": error_kind(result.error),
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
    "FINAL_ERROR_ACK_TIMEOUT_S",
    "INFRASTRUCTURE_ERRORS",
    "PROGRESS_COLUMNS",
    "SCHEDULERS",
    "SEARCH_DOCS",
    "VALUE_EV",
    "VALUE_HEALTH",
    "VALUE_LOSS",
    "PPO",
    "NoRetryOnDeterministicErrors",
    "ResumableCSVLoggerCallback",
    "RetryPolicyCallback",
    "TuneSummaryCallbacks",
    "best_checkpoint",
    "build_config",
    "build_param_space",
    "build_scheduler",
    "build_stopper",
    "check_resources",
    "describe_error",
    "error_kind",
    "experiment_to_resume",
    "failure_report",
    "float_in",
    "init_ray",
    "int_at_least",
    "is_infrastructure_error",
    "json_object",
    "resolve_storage",
    "run_config",
    "save_results",
    "search_spaces",
    "value_summary",
]
