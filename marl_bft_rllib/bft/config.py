"""Configuration of the simulated BFT consensus layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from marl_bft_rllib.actions import Action, parse_action
from marl_bft_rllib.bft.byzantine import ATTACKER_STRATEGIES, BEHAVIOR_REGISTRY
from marl_bft_rllib.validation import check_choice, check_int, check_number

# Names of the Byzantine behaviours, in registry order (the env's state() one-hot order).
BEHAVIORS: tuple[str, ...] = tuple(BEHAVIOR_REGISTRY)

# What a protocol-following primary certifies: "quorum", the first n - f votes to arrive
# (DESIGN section 2), or "all_timely", every vote that reaches it by the view's deadline
# (still at least n - f; with b <= f the trimmed pick stays within the honest votes).
CERTIFICATES: tuple[str, ...] = ("quorum", "all_timely")


def _names(value: object, field: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``value`` (a name or a sequence of names) as a tuple; unknown names raise."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ValueError(
            f"{field}: expected a sequence of {what} names from {known}, got {value!r}"
        )
    names = tuple(value)
    bad = [name for name in names if not isinstance(name, str) or name not in known]
    if bad:
        raise ValueError(
            f"{field}: unknown {what}(s) {bad}; expected names from {known}, got {value!r}"
        )
    return tuple(str(name) for name in names)


def check_behaviors(value: object, field: str) -> tuple[str, ...]:
    """Normalise behaviour names to a tuple; raise ValueError naming `field` and unknown names."""
    return _names(value, field, BEHAVIORS, "behaviour")


def check_strategies(value: object, field: str) -> tuple[str, ...]:
    """Normalise a learned attacker's strategy names to a tuple of distinct known names.

    ``value``: a sequence of names, or one string of comma-separated names (a flag's);
    the string ``"all"`` is the whole table, ``ATTACKER_STRATEGIES``.
    """
    if isinstance(value, str):
        if value.strip() == "all":
            return ATTACKER_STRATEGIES
        value = tuple(name.strip() for name in value.split(","))
    names = _names(value, field, ATTACKER_STRATEGIES, "strategy")
    if not names or len(set(names)) != len(names):
        raise ValueError(
            f"{field}: expected distinct strategy names from {ATTACKER_STRATEGIES}, at least "
            f"one, got {value!r}"
        )
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
    certificate: str = "quorum"  # one of CERTIFICATES

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        n = check_int("n_replicas", self.n_replicas, lo=1)
        b = check_int("n_byzantine", self.n_byzantine, lo=0)
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
            raise ValueError("byzantine_behaviors: n_byzantine > 0 needs a behaviour, got ()")
        set_(self, "byzantine_behaviors", behaviors)
        for name in ("p_drop", "p_delay"):
            set_(self, name, check_number(name, getattr(self, name), lo=0.0, hi=1.0))
        if self.deadline_views is not None:
            set_(self, "deadline_views", check_int("deadline_views", self.deadline_views, lo=1))
        set_(self, "fail_safe_action", parse_action(self.fail_safe_action, "fail_safe_action"))
        set_(self, "on_off_period", check_int("on_off_period", self.on_off_period, lo=1))
        set_(self, "certificate", check_choice("certificate", self.certificate, CERTIFICATES))

    @property
    def f(self) -> int:
        """Number of Byzantine replicas the protocol tolerates: floor((n - 1) / 3)."""
        return (self.n_replicas - 1) // 3

    @property
    def deadline(self) -> int:
        """Views tried within one instance before it is undecided."""
        return self.f + 1 if self.deadline_views is None else self.deadline_views
