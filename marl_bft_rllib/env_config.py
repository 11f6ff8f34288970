"""The env layer's one config object, validated where it is built."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marl_bft_rllib.actions import parse_action
from marl_bft_rllib.bft import BEHAVIORS, BFTConfig
from marl_bft_rllib.stl.shaping import DEFAULT_SPECS, SHAPING_MODES, SIGNALS, validate_specs

# Evaluation draws its episodes from seeds at and above this offset; training seeds stay
# below it. Shared by RLlib's evaluation runners and evaluate.py.
HELD_OUT_SEED_OFFSET = 10**6

# Time-limit semantics (Pardo et al. 2018, "Time Limits in Reinforcement Learning"):
# "unbounded": the stream has no natural end, the horizon only cuts it; time stays out
#   of the observation and the horizon is a truncation (the learner bootstraps V(s_T)).
# "episodic": the horizon is part of the task; the observation carries t / horizon and
#   the horizon step is terminal (no bootstrap).
TIME_LIMITS = ("unbounded", "episodic")

DEFAULT_REWARD_TABLE: dict[str, float] = {
    "tp": 10.0,
    "tn": 1.0,
    "fp": -8.0,
    "fn": -10.0,
    "restrictive_cost": -1.5,
}


def _reward_table(value: Any) -> dict[str, float]:
    """Merge a partial reward table over the defaults; reject unknown or non-finite entries."""
    if value is None:
        return dict(DEFAULT_REWARD_TABLE)
    if not isinstance(value, Mapping):
        raise ValueError(f"reward_table: expected a dict with keys {sorted(DEFAULT_REWARD_TABLE)}")
    unknown = sorted(set(value) - set(DEFAULT_REWARD_TABLE))
    if unknown:
        raise ValueError(
            f"reward_table: unknown keys {unknown}; expected a subset of {sorted(DEFAULT_REWARD_TABLE)}"
        )
    table = dict(DEFAULT_REWARD_TABLE)
    for key, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"reward_table: {key!r} must be a finite number, got {v!r}")
        table[key] = float(v)
    return table


@dataclass
class EnvConfig:
    """Every knob of ``BFTSecurityEnv``; field names are public (Tune search spaces use them)."""

    n_replicas: int = 4
    n_byzantine: int = 1
    byzantine_behaviors: tuple[str, ...] = BEHAVIORS
    byzantine_replicas: tuple[int, ...] | None = None
    horizon: int = 200
    threat_rate: float = 0.09
    n_hosts: int = 8
    p_drop: float = 0.0
    p_delay: float = 0.0
    fail_safe_action: int | str = "alert"
    reward_table: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARD_TABLE))
    vote_weight: float = 0.5
    breach_penalty: float = 100.0
    stl_specs: dict[str, tuple[str, float]] = field(default_factory=lambda: dict(DEFAULT_SPECS))
    shaping: str = "incremental"
    stl_weight: float = 1.0
    stl_clip: float = 1.0
    gamma: float = 0.99
    source: str = "synthetic"
    split: str = "train"
    table_options: dict[str, Any] = field(default_factory=dict)
    sensor_noise: float = 1.0
    history: int = 3
    fp_window: int = 20
    quarantine_steps: int = 10
    time_limit: str = "unbounded"
    seed: int | None = None

    def __post_init__(self) -> None:
        """Validate every field; the first bad one raises a ValueError naming it."""
        for name in ("n_replicas", "n_byzantine", "horizon", "n_hosts", "history", "fp_window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name}: expected an integer, got {v!r}")
        if self.horizon <= 0:
            raise ValueError(f"horizon: must be a positive number of steps, got {self.horizon}")
        if self.n_hosts <= 0:
            raise ValueError(f"n_hosts: must be positive, got {self.n_hosts}")
        if self.history < 1 or self.fp_window < 1 or self.quarantine_steps < 0:
            bad = "history" if self.history < 1 else "fp_window"
            if self.quarantine_steps < 0:
                bad = "quarantine_steps"
            raise ValueError(f"{bad}: must be positive, got {getattr(self, bad)}")
        if isinstance(self.byzantine_behaviors, str):
            self.byzantine_behaviors = (self.byzantine_behaviors,)
        self.byzantine_behaviors = tuple(self.byzantine_behaviors)
        self.fail_safe_action = parse_action(self.fail_safe_action, "fail_safe_action")
        # BFTConfig validates n_replicas, n_byzantine, behaviours, p_drop, p_delay with
        # errors that name the same fields.
        self.bft = BFTConfig(
            n_replicas=self.n_replicas,
            n_byzantine=self.n_byzantine,
            byzantine_behaviors=self.byzantine_behaviors,
            p_drop=self.p_drop,
            p_delay=self.p_delay,
            fail_safe_action=self.fail_safe_action,
        )
        if self.byzantine_replicas is not None:
            ids = tuple(self.byzantine_replicas)
            if (
                len(ids) != self.n_byzantine
                or len(set(ids)) != len(ids)
                or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)
                or any(not 0 <= i < self.n_replicas for i in ids)
            ):
                raise ValueError(
                    f"byzantine_replicas: expected {self.n_byzantine} distinct replica indices "
                    f"in 0..{self.n_replicas - 1}, got {self.byzantine_replicas!r}"
                )
            self.byzantine_replicas = ids
        if not (0.0 < float(self.threat_rate) < 1.0):
            raise ValueError(f"threat_rate: must lie in (0, 1), got {self.threat_rate!r}")
        self.reward_table = _reward_table(self.reward_table)
        for name in ("vote_weight", "breach_penalty", "stl_weight", "sensor_noise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name}: must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"{name}: must be >= 0, got {v!r}")
        if self.shaping not in SHAPING_MODES:
            raise ValueError(
                f"shaping: unknown mode {self.shaping!r}; expected one of {SHAPING_MODES}"
            )
        if not (isinstance(self.stl_clip, (int, float)) and 0 < self.stl_clip < math.inf):
            raise ValueError(f"stl_clip: must be a positive finite number, got {self.stl_clip!r}")
        if not (0.0 <= float(self.gamma) <= 1.0):
            raise ValueError(f"gamma: must lie in [0, 1], got {self.gamma!r}")
        if self.stl_specs is None:
            self.stl_specs = dict(DEFAULT_SPECS)
        self.stl_formulas = validate_specs(self.stl_specs, "stl_specs", allowed=SIGNALS)
        self.stl_specs = dict(self.stl_specs)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source: expected 'synthetic' or a table path, got {self.source!r}")
        if not isinstance(self.table_options, Mapping):
            raise ValueError(f"table_options: expected a dict, got {self.table_options!r}")
        self.table_options = dict(self.table_options)
        if self.table_options and self.source == "synthetic":
            raise ValueError("table_options: only apply to a table source (source=<path>)")
        reserved = sorted({"path", "split", "episode_length"} & set(self.table_options))
        if reserved:
            raise ValueError(f"table_options: {reserved} are set by source / split / horizon")
        if self.time_limit not in TIME_LIMITS:
            raise ValueError(f"time_limit: expected one of {TIME_LIMITS}, got {self.time_limit!r}")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split: expected 'train', 'val' or 'test', got {self.split!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed: expected an integer or None, got {self.seed!r}")

    @classmethod
    def from_any(cls, config: EnvConfig | Mapping[str, Any] | None) -> EnvConfig:
        """Build from a config, a plain dict of the same fields (RLlib's env_config), or None."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"config: expected EnvConfig or dict, got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"config: unknown fields {unknown}; known fields are {sorted(names)}")
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """The public fields as a plain dict (round-trips through ``from_any``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
