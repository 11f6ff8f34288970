"""Ray Tune layer: the per-iteration summary the progress table reads, and resumable logs.

- ``TuneSummaryCallbacks`` (an RLlib callback class) adds the flat result keys below to
  every training result. The latest evaluation F1 is carried forward on the callback
  object, never on the Algorithm; after a restore, when no evaluation ran yet in this
  process, it evaluates once right away, so the carried F1 that schedulers and the
  stopper rank trials by is never NaN after the first evaluation.
- ``ResumableCSVLoggerCallback``: Tune's ``CSVLoggerCallback``, except that a resumed
  trial keeps writing rows under the header already in ``progress.csv`` (Tune's own
  builds a new column set from the first resumed result, and pandas cannot read the file
  back).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.rllib.utils.annotations import override
from ray.tune.logger import CSVLoggerCallback

from marl_bft_rllib.rllib.callbacks import (
    ENV_METRICS_KEY,
    MarlBftCallbacks,
    add_pooled_scores,
    env_metric,
)
from marl_bft_rllib.rllib.health import health_status_name

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
        if f1 is None and interval and self.last_eval_f1 is None:
            # A restored trial (new process): evaluate now rather than carry NaN.
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


__all__ = [
    "EVAL_F1",
    "EVAL_F1_LAST",
    "EVAL_RETURN",
    "VALUE_EV",
    "VALUE_HEALTH",
    "VALUE_LOSS",
    "ResumableCSVLoggerCallback",
    "TuneSummaryCallbacks",
    "value_summary",
]
