"""Configuration of the simulated BFT consensus layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marl_bft_rllib.actions import Action, parse_action

BEHAVIORS: tuple[str, ...] = (
    "silent",
    "equivocate",
    "always_allow",
    "always_quarantine",
    "random",
    "delay",
    "on_off",
    "selective_primary",
)


def _as_int(value: object, field: str) -> int:
    """Return `value` as an int or raise ValueError naming `field`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise ValueError(f"{field}: expected an integer, got {value!r}")


def _as_prob(value: object, field: str) -> float:
    """Return `value` as a probability in [0, 1] or raise ValueError naming `field`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"{field}: expected a probability in [0, 1], got {value!r}")
    p = float(value)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{field}: expected a probability in [0, 1], got {value!r}")
    return p


def check_behaviors(value: object, field: str) -> tuple[str, ...]:
    """Normalise behaviour names to a tuple; raise ValueError naming `field` and unknown names."""
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"{field}: expected a sequence of behaviour names, got {value!r}"
        ) from None
    bad = [name for name in names if not isinstance(name, str) or name not in BEHAVIORS]
    if bad:
        raise ValueError(f"{field}: unknown behaviour(s) {bad}; expected names from {BEHAVIORS}")
    return names


@dataclass(frozen=True)
class BFTConfig:
    """Replica count, adversary and network model of one PBFT consensus group."""

    n_replicas: int = 4
    n_byzantine: int = 1
    byzantine_behaviors: tuple[str, ...] = BEHAVIORS  # sampled per episode for each Byzantine
    p_drop: float = 0.0  # each protocol message is dropped independently
    p_delay: float = 0.0  # each honest message arrives past the view deadline independently
    deadline_views: int | None = None  # views tried per instance before undecided; None -> f + 1
    fail_safe_action: int = Action.ALERT  # applied when an instance is undecided
    on_off_period: int = 5  # steps per phase of an `on_off` replica (honest phase first)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        n = _as_int(self.n_replicas, "n_replicas")
        b = _as_int(self.n_byzantine, "n_byzantine")
        if n < 1:
            raise ValueError(f"n_replicas: need at least 1 replica, got {n}")
        if b < 0:
            raise ValueError(f"n_byzantine: must be >= 0, got {b}")
        if b >= n:
            raise ValueError(f"n_byzantine: must be < n_replicas ({n}), got {b}")
        if b >= 1 and n < 4:
            raise ValueError(
                f"n_replicas: BFT with Byzantine replicas needs n_replicas >= 4, got {n}"
            )
        set_(self, "n_replicas", n)
        set_(self, "n_byzantine", b)
        behaviors = check_behaviors(self.byzantine_behaviors, "byzantine_behaviors")
        if b > 0 and not behaviors:
            raise ValueError("byzantine_behaviors: empty, but n_byzantine > 0 needs a behaviour")
        set_(self, "byzantine_behaviors", behaviors)
        set_(self, "p_drop", _as_prob(self.p_drop, "p_drop"))
        set_(self, "p_delay", _as_prob(self.p_delay, "p_delay"))
        if self.deadline_views is not None:
            d = _as_int(self.deadline_views, "deadline_views")
            if d < 1:
                raise ValueError(f"deadline_views: must be >= 1 or None, got {d}")
            set_(self, "deadline_views", d)
        set_(self, "fail_safe_action", parse_action(self.fail_safe_action, "fail_safe_action"))
        period = _as_int(self.on_off_period, "on_off_period")
        if period < 1:
            raise ValueError(f"on_off_period: must be >= 1, got {period}")
        set_(self, "on_off_period", period)

    @property
    def f(self) -> int:
        """Number of Byzantine replicas the protocol tolerates: floor((n - 1) / 3)."""
        return (self.n_replicas - 1) // 3

    @property
    def deadline(self) -> int:
        """Views tried within one instance before it is undecided."""
        return self.f + 1 if self.deadline_views is None else self.deadline_views
