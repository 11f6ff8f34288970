"""Value-health monitor: flags the lineage's two critic failure modes, and a Tune stopper.

``ValueHealthMonitor`` is plain Python over one series of per-iteration figures
``(value_loss, target_var, explained_var)`` of one module:
- ``stuck`` (1): for the last ``window`` iterations the explained variance stayed at or
  below ``stuck_ev`` and the value loss stayed near or above the variance of the targets
  (``loss >= (1 - stuck_tolerance) * target_var``): the critic predicts about a
  constant, as with normalised targets (loss exactly 1.0) or an unlearnable raw scale;
- ``exploding`` (2): the value loss is not finite, or grew by ``explode_factor`` or
  more over its minimum in the last ``window`` iterations while exceeding
  ``explode_var_ratio`` times the target variance (a critic that much worse than
  predicting the mean; a loss that merely follows a growing target variance, as when a
  breach episode enters the batch, is not exploding);
- ``ok`` (0) otherwise. ``exploding`` wins over ``stuck``.

``ValueHealthStopper`` stops a Tune trial once a module reports one of the chosen
states in ``result["learners"][module_id]["value_health"]`` (opt-in: add it to
``tune.RunConfig(stop=...)``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.rllib.utils.annotations import override
from ray.tune.stopper import Stopper

OK, STUCK, EXPLODING = 0, 1, 2
STATUS_NAMES = {OK: "ok", STUCK: "stuck", EXPLODING: "exploding"}
HEALTH_METRIC = "value_health"


def health_status_name(code: float) -> str:
    """Readable name ("ok", "stuck", "exploding") of a status code; "n/a" if missing / NaN."""
    if code is None or not math.isfinite(code):
        return "n/a"  # e.g. an iteration right after an env runner was replaced
    return STATUS_NAMES.get(int(round(code)), "unknown")


@dataclass
class HealthConfig:
    """Thresholds of the value-health monitor."""

    window: int = 10
    stuck_ev: float = 0.05
    stuck_tolerance: float = 0.5
    explode_factor: float = 100.0
    explode_var_ratio: float = 4.0

    def __post_init__(self) -> None:
        if int(self.window) != self.window or self.window < 1:
            raise ValueError(f"window: must be an int >= 1, got {self.window!r}")
        if not self.stuck_ev < 1.0:
            raise ValueError(f"stuck_ev: must be < 1, got {self.stuck_ev!r}")
        if not 0.0 <= self.stuck_tolerance < 1.0:
            raise ValueError(f"stuck_tolerance: must be in [0, 1), got {self.stuck_tolerance!r}")
        if not self.explode_factor > 1.0:
            raise ValueError(f"explode_factor: must be > 1, got {self.explode_factor!r}")
        if not self.explode_var_ratio > 0.0:
            raise ValueError(f"explode_var_ratio: must be > 0, got {self.explode_var_ratio!r}")


class ValueHealthMonitor:
    """Tracks one module's value figures per iteration and classifies its critic's health."""

    def __init__(self, config: HealthConfig | None = None) -> None:
        """Start an empty series with the given thresholds."""
        self.config = config or HealthConfig()
        self._series: deque[tuple[float, float, float]] = deque(maxlen=self.config.window)
        self.status = OK

    @property
    def status_name(self) -> str:
        """Readable name of the current status."""
        return STATUS_NAMES[self.status]

    def update(self, value_loss: float, target_var: float, explained_var: float) -> int:
        """Add one iteration's figures and return the new status code."""
        self._series.append((float(value_loss), float(target_var), float(explained_var)))
        self.status = self._classify()
        return self.status

    def _classify(self) -> int:
        cfg = self.config
        losses = [s[0] for s in self._series]
        last_loss, last_var, _ = self._series[-1]
        if not math.isfinite(last_loss):
            return EXPLODING
        low = min(losses)
        if last_loss > cfg.explode_var_ratio * last_var and last_loss >= cfg.explode_factor * max(
            low, 1e-12
        ):
            return EXPLODING
        if len(self._series) == cfg.window and all(
            (math.isnan(ev) or ev <= cfg.stuck_ev) and loss >= (1.0 - cfg.stuck_tolerance) * var
            for loss, var, ev in self._series
        ):
            return STUCK
        return OK


def classify_series(
    series: Iterable[tuple[float, float, float]], config: HealthConfig | None = None
) -> list[int]:
    """Status code after each iteration of a (value_loss, target_var, explained_var) series."""
    monitor = ValueHealthMonitor(config)
    return [monitor.update(*point) for point in series]


class ValueHealthStopper(Stopper):
    """Tune stopper ending a trial whose critic is stuck or exploding (after a grace period)."""

    def __init__(
        self,
        stop_on: Iterable[str] = ("stuck", "exploding"),
        grace_iterations: int = 10,
    ) -> None:
        """Stop on the named states, not before ``grace_iterations`` training iterations."""
        names = {v: k for k, v in STATUS_NAMES.items()}
        stop_on = tuple(stop_on)
        bad = [s for s in stop_on if s not in names or s == "ok"]
        if bad:
            raise ValueError(f"stop_on: unknown or 'ok' states {bad}; use 'stuck' / 'exploding'")
        if grace_iterations < 0:
            raise ValueError(f"grace_iterations: must be >= 0, got {grace_iterations}")
        self.codes = {names[s] for s in stop_on}
        self.grace_iterations = int(grace_iterations)

    @staticmethod
    def module_statuses(result: Mapping[str, Any]) -> dict[str, int]:
        """Value-health code per module found in an RLlib training result."""
        learners = result.get("learners", {}) or {}
        return {
            mid: int(round(float(m[HEALTH_METRIC])))
            for mid, m in learners.items()
            if isinstance(m, Mapping) and HEALTH_METRIC in m
        }

    @override(Stopper)
    def __call__(self, trial_id: str, result: dict) -> bool:
        """True when a module of this trial is in a stopping state."""
        if result.get("training_iteration", 0) < self.grace_iterations:
            return False
        return any(code in self.codes for code in self.module_statuses(result).values())

    @override(Stopper)
    def stop_all(self) -> bool:
        """Never stops the whole experiment."""
        return False
