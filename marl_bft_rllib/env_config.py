"""The env layer's one config object, validated where it is built."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marl_bft_rllib.actions import parse_action
from marl_bft_rllib.bft import ATTACKER_STRATEGIES, BEHAVIORS, DECISION_RULES, BFTConfig
from marl_bft_rllib.bft.config import check_behaviors, check_strategies
from marl_bft_rllib.events.synthetic import SyntheticConfig
from marl_bft_rllib.events.tabular import SPLITS, TableConfig
from marl_bft_rllib.stl.shaping import DEFAULT_SPECS, SHAPING_MODES, SIGNALS, validate_specs
from marl_bft_rllib.validation import check_choice, check_int, check_number, check_options

# Evaluation draws its episodes from seeds at and above this offset; training seeds stay
# below it. Shared by RLlib's evaluation runners and evaluate.py.
HELD_OUT_SEED_OFFSET = 10**6

# Time-limit semantics (Pardo et al. 2018, "Time Limits in Reinforcement Learning"):
# "episodic" (default): the horizon is part of the task; the observation carries
#   t / horizon and the horizon step is terminal (no bootstrap). Measured better than
#   "unbounded" (benchmarks/value_learning.py: F1 0.995 against 0.978 at iteration 30,
#   critic EV 0.34 against -0.14 over the last five iterations, 3 seeds).
# "unbounded": the stream has no natural end, the horizon only cuts it; time stays out
#   of the observation and the horizon is a truncation (the learner bootstraps V(s_T)).
TIME_LIMITS = ("unbounded", "episodic")

# Who drives the Byzantine replicas: "scripted" (a behaviour from byzantine_behaviors,
# drawn per episode; the replicas are not agents), "learned" (each is an agent,
# attacker_j, choosing a message strategy every step; the honest ones are defender_k) or
# "mixed" (learned in a learned_share of the episodes, drawn per episode, scripted in
# the others: self-play against a population of the learned and the scripted attackers).
ADVERSARIES = ("scripted", "learned", "mixed")
# A learned attacker's reward: "negative_mean" (default): minus the mean of the defenders'
# rewards; "negative_team": minus their shared part only (the committed decision's table
# value and the breach penalty, without vote terms or STL shaping).
ATTACKER_REWARDS = ("negative_mean", "negative_team")

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
    table = dict(DEFAULT_REWARD_TABLE)
    for key, v in check_options("reward_table", value, DEFAULT_REWARD_TABLE).items():
        table[key] = check_number(f"reward_table[{key!r}]", v)
    return table


def _init_fields(cls: type) -> list[str]:
    """The init field names of a config dataclass, in order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


# Settings of the sources that EnvConfig sets itself: source setting -> EnvConfig field.
_TABLE_RESERVED = {"path": "source", "split": "split", "episode_length": "horizon"}
_SYNTHETIC_RESERVED = {"n_hosts": "n_hosts", "threat_rate": "threat_rate"}
# Top-level fields that only the synthetic source reads: a table source needs their defaults.
_SYNTHETIC_ONLY = ("n_hosts", "threat_rate", "synthetic_options")


@dataclass
class EnvConfig:
    """Every knob of ``BFTSecurityEnv``; field names are public (Tune search spaces use them).

    Every field is validated here, so a bad value fails before any env (or Ray) starts,
    with one ValueError whose message starts with the field's name. ``n_hosts``,
    ``threat_rate`` and ``synthetic_options`` (keys: ``SyntheticConfig`` fields) apply to
    the synthetic source only, ``table_options`` (keys: ``TableConfig`` fields) to a
    table source only; setting one for the other source is an error.
    """

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
    # What an honest primary certifies: "quorum", the first n - f votes to arrive (DESIGN
    # section 2), or "all_timely", every vote that reaches it by the deadline (see README,
    # "Robustness", for what it changes).
    certificate: str = "quorum"
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
    table_options: dict[str, Any] = field(default_factory=dict)  # TableConfig settings
    synthetic_options: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig settings
    sensor_noise: float = 1.0
    history: int = 3
    # Each peer's running dissent from the committed decisions, in the observation (see
    # the env's Observation Space): a running mean over its last ``peer_stats_window``
    # revealed votes; 0 (default) leaves the two slices out. Measured at 50 (README): the
    # ensemble then beats the naive majority vote in every robustness case on the mean,
    # mostly because the naive vote of the same votes falls; early learning is slower
    # (mean F1 over iterations 1-10 0.975 against 0.984) and worst cases are level.
    peer_stats_window: int = 0
    fp_window: int = 20
    quarantine_steps: int = 10
    time_limit: str = "episodic"
    adversary: str = "scripted"
    attacker_reward: str = "negative_mean"
    learned_share: float = 0.5  # adversary="mixed": share of episodes with learned attackers
    # The message strategies a learned attacker may use: its action k is the k-th name
    # (default: all of bft.ATTACKER_STRATEGIES, in that order). A subset studies a weaker
    # insider, e.g. one that never equivocates and so is never convicted.
    attacker_strategies: tuple[str, ...] = ATTACKER_STRATEGIES
    decision_rule: str = "pbft"  # "majority" / "random_replica": baselines without BFT
    seed: int | None = None

    def __post_init__(self) -> None:
        """Validate every field; the first bad one raises a ValueError naming it."""
        self.horizon = check_int("horizon", self.horizon, lo=1)
        self.n_hosts = check_int("n_hosts", self.n_hosts, lo=1)
        self.history = check_int("history", self.history, lo=1)
        self.peer_stats_window = check_int("peer_stats_window", self.peer_stats_window, lo=0)
        self.fp_window = check_int("fp_window", self.fp_window, lo=1)
        self.quarantine_steps = check_int("quarantine_steps", self.quarantine_steps, lo=0)
        self.byzantine_behaviors = check_behaviors(self.byzantine_behaviors, "byzantine_behaviors")
        self.fail_safe_action = parse_action(self.fail_safe_action, "fail_safe_action")
        # BFTConfig validates n_replicas, n_byzantine, behaviours, p_drop, p_delay and
        # certificate with errors that name the same fields.
        self.bft = BFTConfig(
            n_replicas=self.n_replicas,
            n_byzantine=self.n_byzantine,
            byzantine_behaviors=self.byzantine_behaviors,
            p_drop=self.p_drop,
            p_delay=self.p_delay,
            fail_safe_action=self.fail_safe_action,
            certificate=self.certificate,
        )
        self.n_replicas, self.n_byzantine = self.bft.n_replicas, self.bft.n_byzantine
        self.p_drop, self.p_delay = self.bft.p_drop, self.bft.p_delay
        self.certificate = self.bft.certificate
        if self.byzantine_replicas is not None:
            self.byzantine_replicas = self._byzantine_replicas(self.byzantine_replicas)
        self.threat_rate = check_number(
            "threat_rate", self.threat_rate, lo=0.0, hi=1.0, lo_open=True, hi_open=True
        )
        self.reward_table = _reward_table(self.reward_table)
        for name in ("vote_weight", "breach_penalty", "stl_weight", "sensor_noise"):
            setattr(self, name, check_number(name, getattr(self, name), lo=0.0))
        self.shaping = check_choice("shaping", self.shaping, SHAPING_MODES)
        self.stl_clip = check_number("stl_clip", self.stl_clip, lo=0.0, lo_open=True)
        self.gamma = check_number("gamma", self.gamma, lo=0.0, hi=1.0)
        if self.stl_specs is None:
            self.stl_specs = dict(DEFAULT_SPECS)
        self.stl_formulas = validate_specs(self.stl_specs, "stl_specs", allowed=SIGNALS)
        self.stl_specs = dict(self.stl_specs)
        if isinstance(self.source, os.PathLike):
            self.source = os.fspath(self.source)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"source: expected 'synthetic' or a table path, got {self.source!r}")
        self.split = check_choice("split", self.split, SPLITS)
        self.time_limit = check_choice("time_limit", self.time_limit, TIME_LIMITS)
        self._check_adversary()
        if self.seed is not None:
            self.seed = check_int("seed", self.seed, lo=0)
        self.table_options = self._source_options(
            "table_options", self.table_options, TableConfig, _TABLE_RESERVED
        )
        self.synthetic_options = self._source_options(
            "synthetic_options", self.synthetic_options, SyntheticConfig, _SYNTHETIC_RESERVED
        )
        if self.source == "synthetic":
            self._check_synthetic()
        else:
            self._check_table()

    def _check_adversary(self) -> None:
        """``adversary``, ``attacker_reward`` and ``decision_rule``, and how they combine."""
        self.adversary = check_choice("adversary", self.adversary, ADVERSARIES)
        self.attacker_reward = check_choice(
            "attacker_reward", self.attacker_reward, ATTACKER_REWARDS
        )
        self.decision_rule = check_choice("decision_rule", self.decision_rule, DECISION_RULES)
        self.learned_share = check_number(
            "learned_share", self.learned_share, lo=0.0, hi=1.0, lo_open=True, hi_open=True
        )
        if self.adversary != "mixed" and self.learned_share != 0.5:
            raise ValueError(
                f"learned_share: only applies to adversary='mixed', got {self.learned_share!r}"
            )
        self.attacker_strategies = check_strategies(self.attacker_strategies, "attacker_strategies")
        if self.adversary == "scripted" and self.attacker_strategies != ATTACKER_STRATEGIES:
            raise ValueError(
                "attacker_strategies: only apply to learned attackers (adversary 'learned' "
                f"or 'mixed'), got {self.attacker_strategies!r}"
            )
        if self.adversary != "scripted" and self.n_byzantine < 1:
            raise ValueError(
                f"n_byzantine: adversary={self.adversary!r} needs at least one Byzantine "
                "replica, got 0"
            )
        if self.adversary == "learned":
            if self.byzantine_behaviors != BEHAVIORS:
                raise ValueError(
                    "byzantine_behaviors: only apply to adversary='scripted' (learned "
                    f"attackers choose their strategy each step), got {self.byzantine_behaviors!r}"
                )
        elif self.adversary == "scripted" and self.attacker_reward != ATTACKER_REWARDS[0]:
            raise ValueError(
                "attacker_reward: only applies to learned attackers (adversary 'learned' or "
                "'mixed'), got "
                f"{self.attacker_reward!r}"
            )

    def _byzantine_replicas(self, value: object) -> tuple[int, ...]:
        """``byzantine_replicas`` as a tuple of n_byzantine distinct replica indices."""
        n, b = self.n_replicas, self.n_byzantine
        expected = f"expected {b} distinct replica indices in 0..{n - 1}, got {value!r}"
        if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
            raise ValueError(f"byzantine_replicas: {expected}")
        try:
            ids = tuple(check_int("byzantine_replicas", i, lo=0, hi=n - 1) for i in value)
        except ValueError:
            raise ValueError(f"byzantine_replicas: {expected}") from None
        if len(ids) != b or len(set(ids)) != len(ids):
            raise ValueError(f"byzantine_replicas: {expected}")
        return ids

    @staticmethod
    def _source_options(
        name: str, value: object, config_cls: type, reserved: Mapping[str, str]
    ) -> dict[str, Any]:
        """A source's extra settings as a dict of its config's fields, less the reserved ones."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{name}: expected a dict, got {value!r}")
        for key in value:
            if key in reserved:
                raise ValueError(
                    f"{name}: {key!r} is set by the EnvConfig field {reserved[key]!r}, "
                    f"got {dict(value)!r}"
                )
        allowed = [k for k in _init_fields(config_cls) if k not in reserved]
        return check_options(name, value, allowed)

    def _check_synthetic(self) -> None:
        """The synthetic source's settings, checked by building its config now."""
        if self.table_options:
            raise ValueError(
                "table_options: only apply to a table source (source=<path>), "
                f"got {self.table_options!r}"
            )
        try:
            SyntheticConfig(
                n_hosts=self.n_hosts, threat_rate=self.threat_rate, **self.synthetic_options
            )
        except ValueError as e:
            if str(e).split(":", 1)[0] in _SYNTHETIC_RESERVED:
                raise  # n_hosts / threat_rate: already named by their EnvConfig names
            raise ValueError(f"synthetic_options: {e}") from None

    def _check_table(self) -> None:
        """A table source's settings (the file itself is read when the env is built)."""
        defaults = {f.name: f for f in dataclasses.fields(self)}
        for name in _SYNTHETIC_ONLY:
            spec = defaults[name]
            default = (
                spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
            )
            value = getattr(self, name)
            if value != default:
                raise ValueError(
                    f"{name}: only applies to the synthetic source (leave it at {default!r} "
                    f"for source={self.source!r}), got {value!r}"
                )
        try:
            TableConfig(
                path=self.source,
                split=self.split,
                episode_length=self.horizon,
                **self.table_options,
            )
        except ValueError as e:
            raise ValueError(f"table_options: {e}") from None

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
