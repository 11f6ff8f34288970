"""One validation path: every bad value of every config field is one ValueError naming it."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from marl_bft_rllib.bft import BFTConfig
from marl_bft_rllib.env import BFTSecurityEnv
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.events.context import ContextConfig
from marl_bft_rllib.events.synthetic import SyntheticConfig
from marl_bft_rllib.events.tabular import TableConfig
from marl_bft_rllib.validation import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_options,
    check_schedule,
    check_str,
)

NAN, INF = math.nan, math.inf
TABLE = "events.csv"  # EnvConfig / TableConfig never open the file: validation is file-free


@dataclasses.dataclass(frozen=True)
class With:
    """A bad value that needs other fields set to be bad (or to reach its check)."""

    value: Any
    others: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, value: Any, **others: Any) -> With:
        """A bad value plus the other fields it is tried with."""
        return cls(value, tuple(others.items()))


def _positive(extra: tuple[Any, ...] = ()) -> list[Any]:
    """Bad values of a positive finite number."""
    return [0, 0.0, -1.0, INF, NAN, None, "3", True, *extra]


CONTEXT_BAD: dict[str, list[Any]] = {
    "tau_rate": _positive(),
    "rate_scale": _positive(),
    "tau_score": _positive(),
    "score_prior": [-0.5, INF, NAN, None, "1", True, np.bool_(True)],
    "tau_suspicious": _positive(),
    "suspicious_threshold": [INF, -INF, NAN, None, "1.5", True],
    "tau_net": _positive(),
    "net_scale": _positive(),
}

SYNTHETIC_BAD: dict[str, list[Any]] = {
    "n_hosts": [1, 0, -3, 2.5, "8", None, True],
    "threat_rate": [0.0, -0.1, 0.9, 1.5, NAN, INF, None, "0.1", True],
    "stage_events": [(3, 1), (0, 2), (1,), (1, 2, 3), (1.0, 2), (True, 2), "12", None, 3],
    "event_spacing": [0.5, 2e6, NAN, INF, None, "1.3", True],
    "stage_gap": [0.5, 2e6, NAN, None, "2", True],
    "start_jitter": [-0.1, 1.5, NAN, None, "0.4", True],
    "max_campaigns": [0, -1, 1.5, None, "16", True],
    "relaunch_gap": [0.5, NAN, None, "20", True],
    "reimage": [1, 0, "yes", None, 1.0],
    "p_contain_block": [1.5, -0.1, NAN, None, "0.35", True],
    "p_contain_quarantine": [With.of(0.2, p_contain_block=0.5), 1.5, -1, NAN, None, True],
    "signal": [-1.0, 101.0, NAN, INF, None, "2", True],
    "foothold_signal": [-1.0, 101.0, NAN, None, "5", True],
    "idle_factor": [-0.1, 2.0, NAN, None, "0.15", True],
    "context": ["x", None, 3, {"bogus": 1}, {"tau_rate": 0}, {"score_prior": None}],
}

TABLE_BAD: dict[str, list[Any]] = {
    "path": ["", None, 3, True],
    "label_column": ["", None, 3, ("label",)],
    "feature_columns": ["abc", (), ("a", "a"), ("label",), ("a", 3), ("a", ""), 5, {"a": 1}],
    "host_column": ["", 3, True, ("h",)],
    "time_column": ["", 3, ("t",), 1.5],
    "episode_length": [0, -1, 2.5, None, True, "10"],
    "split": ["dev", "Train", None, 0, ("train",)],
    "split_fractions": [
        (0.5, -0.1, 0.6),
        (1, 2),
        (0, 0, 0),
        (NAN, 1, 1),
        (INF, 1, 1),
        ("0.7", 0.15, 0.15),
        (True, 1, 1),
        None,
        "abc",
        3,
    ],
    "batch_rows": [0, -1, 1.5, None, True, "64"],
    "n_blocks": [0, 2.5, None, True],
    "standardize": [1, 0, "yes", None],
    "score_column": ["", 3],
    "context": ["x", None, {"tau_net": -1}, {"bogus": 1}],
}

BFT_BAD: dict[str, list[Any]] = {
    "n_replicas": [With.of(3, n_byzantine=1), With.of(0, n_byzantine=0), 4.0, "4", None, True],
    "n_byzantine": [-1, 4, With.of(4, n_replicas=4), 1.5, None, True, "1"],
    "byzantine_behaviors": [("silent", "sneaky"), (), "sneaky", 5, None, (3,), {"silent": 1}],
    "p_drop": [1.5, -0.1, NAN, INF, None, "0.1", True],
    "p_delay": [2, -0.5, NAN, None, True],
    "deadline_views": [0, -2, 1.5, "2", True],
    "fail_safe_action": [7, -1, "ignore", None, 1.5, True],
    "on_off_period": [0, 1.5, None, True, "5"],
    "certificate": ["all", "", "QUORUM", None, 1, True],
}

ENV_BAD: dict[str, list[Any]] = {
    "n_replicas": [With.of(3, n_byzantine=1), 0, 4.0, "4", None, True],
    "n_byzantine": [
        -1,
        4,
        1.5,
        None,
        True,
        With.of(0, adversary="learned"),
        With.of(0, adversary="mixed"),
    ],
    "byzantine_behaviors": [
        ("silent", "teleport"),
        (),
        "teleport",
        5,
        None,
        (1,),
        ("learned",),  # not a scripted behaviour
        With.of(("silent",), adversary="learned"),  # learned attackers have no pool
    ],
    "byzantine_replicas": [(9,), 5, "0", (0, 0), (0, 1), (True,), (1.0,), (-1,), {0: 1}],
    "horizon": [0, -5, 2.5, "10", None, True],
    "threat_rate": [
        0.0,
        1.0,
        -0.1,
        0.9,  # above what the default campaigns can reach: caught here, not in the source
        NAN,
        None,
        "x",
        True,
        With.of(0.1, source=TABLE),
    ],
    "n_hosts": [1, 0, 2.5, None, "8", True, With.of(4, source=TABLE)],
    "p_drop": [1.5, -0.1, NAN, None, "0.1", True],
    "p_delay": [1.5, -0.1, NAN, None, True],
    "fail_safe_action": ["explode", 7, None, 1.5, True],
    "certificate": ["all", "", None, 0, True],
    "reward_table": [
        {"tp": 10, "bonus": 3},
        {"tp": NAN},
        {"tp": INF},
        {"fp": "x"},
        {"tn": True},
        {"fn": None},
        [1, 2],
        "tp",
    ],
    "vote_weight": [-1.0, NAN, INF, None, "0.5", True],
    "breach_penalty": [-1.0, NAN, INF, None, "100", True],
    "stl_specs": [
        {"bad": ("G(threat >", 1.0)},
        {"bad": ("G(unknown_signal > 0)", 1.0)},
        {"w": ("G(threat > 0)", NAN)},
        {"w": ("G(threat > 0)", "1")},
        {"w": ("G(threat > 0)", True)},
        {"p": "G(threat > 0)"},
        {"": ("G(threat > 0)", 1.0)},
        "G(threat > 0)",
        [1],
    ],
    "shaping": ["sometimes", None, 3, "Incremental"],
    "stl_weight": [-1.0, NAN, INF, None, "1", True],
    "stl_clip": [0, -1.0, INF, NAN, None, "1", True],
    "gamma": [-0.1, 1.5, NAN, None, "x", True],
    "source": ["", None, 3, ("synthetic",)],
    "split": ["holdout", None, 1, "Train"],
    "table_options": [
        "x",
        [("label_column", "y")],
        {"label_column": "y"},  # a synthetic source takes no table options
        With.of({"bogus": 1}, source=TABLE),
        With.of({"path": "other.csv"}, source=TABLE),
        With.of({"episode_length": 10}, source=TABLE),
        With.of({"split": "val"}, source=TABLE),
        With.of({"batch_rows": 0}, source=TABLE),
        With.of({"label_column": ""}, source=TABLE),
        With.of({"split_fractions": (1, -1, 1)}, source=TABLE),
        With.of({"context": {"tau_rate": -1}}, source=TABLE),
    ],
    "synthetic_options": [
        "x",
        None,
        [("signal", 1.0)],
        {"bogus": 1},
        {"n_hosts": 4},
        {"threat_rate": 0.1},
        {"signal": -1.0},
        {"signal": None},
        {"stage_events": (3, 1)},
        {"context": {"tau_rate": 0}},
        {"context": "x"},
        {"label_column": "y"},  # a table option
        With.of({"signal": 1.0}, source=TABLE),
    ],
    "sensor_noise": [-1.0, NAN, INF, None, "1", True],
    "history": [0, -1, 1.5, None, True],
    "peer_stats_window": [-1, 2.5, None, "50", True],
    "fp_window": [0, 2.5, None, "20", True],
    "quarantine_steps": [-1, "a", 2.5, None, True],
    "time_limit": ["forever", None, 0],
    "adversary": ["self_play", None, 1, "Learned"],
    "attacker_reward": [
        "max",
        None,
        "negative_team",  # only for adversary="learned"
        With.of("zero", adversary="learned"),
    ],
    "decision_rule": ["raft", None, 1, "PBFT"],
    "learned_share": [
        0.0,
        1.0,
        NAN,
        None,
        0.3,  # only for adversary="mixed"
        With.of(1.5, adversary="mixed"),
    ],
    "attacker_strategies": [
        ("vote_allow",),  # only for learned attackers
        With.of(("vote_allow", "forge"), adversary="learned"),
        With.of((), adversary="learned"),
        With.of(("silent", "silent"), adversary="learned"),
        With.of(4, adversary="learned"),
        With.of({"silent": 1}, adversary="learned"),
    ],
    "seed": [-1, 1.5, "1", True],
}

BAD: dict[type, tuple[dict[str, Any], dict[str, list[Any]]]] = {
    EnvConfig: ({}, ENV_BAD),
    SyntheticConfig: ({}, SYNTHETIC_BAD),
    TableConfig: ({"path": TABLE}, TABLE_BAD),
    ContextConfig: ({}, CONTEXT_BAD),
    BFTConfig: ({}, BFT_BAD),
}


def _cases() -> list[Any]:
    """(config class, field, kwargs) for every bad value of every field."""
    out = []
    for cls, (base, table) in BAD.items():
        for name, values in table.items():
            for i, v in enumerate(values):
                value, others = (v.value, dict(v.others)) if isinstance(v, With) else (v, {})
                kwargs = {**base, **others, name: value}
                out.append(pytest.param(cls, name, kwargs, id=f"{cls.__name__}.{name}[{i}]"))
    return out


@pytest.mark.parametrize("cls", list(BAD))
def test_every_field_has_bad_value_cases(cls: type) -> None:
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    cases = BAD[cls][1]
    assert sorted(cases) == sorted(fields), "add bad-value cases for new fields here"
    thin = [name for name in fields if len(cases[name]) < 2]
    assert not thin, f"fewer than two bad values for {thin}"


@pytest.mark.parametrize("cls", list(BAD))
def test_defaults_are_valid(cls: type) -> None:
    cls(**BAD[cls][0])


@pytest.mark.parametrize(("cls", "field", "kwargs"), _cases())
def test_bad_value_is_one_value_error_naming_the_field(
    cls: type, field: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}\b") as info:
        cls(**kwargs)
    assert type(info.value) is ValueError
    assert info.value.__cause__ is None  # one error, not a chain around an inner one


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"threat_rate": None}, r"^threat_rate: expected a number, got None$"),
        ({"gamma": None}, r"^gamma: expected a number, got None$"),
        ({"gamma": "x"}, r"^gamma: expected a number, got 'x'$"),
        ({"quarantine_steps": "a"}, r"^quarantine_steps: expected an integer >= 0, got 'a'$"),
        ({"quarantine_steps": 2.5}, r"^quarantine_steps: expected an integer >= 0, got 2.5$"),
        ({"byzantine_replicas": 5}, r"^byzantine_replicas: .*got 5$"),
        ({"stl_clip": True}, r"^stl_clip: expected a number, got True$"),
        ({"n_hosts": 1}, r"^n_hosts: expected an integer >= 2, got 1$"),
        ({"synthetic_options": {"signal": -1}}, r"^synthetic_options: signal: .*got -1$"),
        ({"synthetic_options": {"bogus": 1}}, r"^synthetic_options: unknown key\(s\) 'bogus'"),
        ({"source": TABLE, "threat_rate": 0.2}, r"^threat_rate: only applies to the synthetic"),
        ({"source": TABLE, "table_options": {"n_blocks": 0}}, r"^table_options: n_blocks: "),
    ],
)
def test_the_issue_cases_read_right(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnvConfig(**overrides)
    with pytest.raises(ValueError, match=message):  # the dict path (RLlib's env_config)
        EnvConfig.from_any(overrides)


def test_valid_edge_values_are_kept_and_normalised() -> None:
    cfg = EnvConfig(
        quarantine_steps=0,
        n_hosts=np.int64(2),
        horizon=np.int32(7),
        seed=np.int64(0),
        gamma=1,
        vote_weight=0,
        stl_clip=np.float32(0.5),
        byzantine_replicas=[np.int64(3)],
        reward_table={"tp": 5},
        stl_specs=None,
    )
    assert cfg.quarantine_steps == 0
    assert type(cfg.n_hosts) is int and type(cfg.horizon) is int and type(cfg.seed) is int
    assert type(cfg.gamma) is float and cfg.gamma == 1.0
    assert type(cfg.stl_clip) is float and cfg.stl_clip == 0.5
    assert cfg.byzantine_replicas == (3,) and type(cfg.byzantine_replicas[0]) is int
    assert cfg.reward_table["tp"] == 5.0 and cfg.reward_table["fp"] == -8.0
    assert EnvConfig(source=TABLE, threat_rate=0.09, n_hosts=8).source == TABLE
    assert SyntheticConfig(threat_rate=1e-3, p_contain_block=0.6).p_contain_quarantine == 0.6
    assert TableConfig(TABLE, split_fractions=[2, 1, 1]).split_fractions == (0.5, 0.25, 0.25)
    assert BFTConfig(n_replicas=1, n_byzantine=0).n_replicas == 1
    assert BFTConfig(deadline_views=None).deadline == 2


def test_synthetic_options_reach_the_source() -> None:
    options = {"signal": 0.5, "stage_events": [2, 4], "context": {"tau_rate": 4.0}}
    cfg = EnvConfig(n_hosts=3, threat_rate=0.05, synthetic_options=options)
    assert cfg.to_dict()["synthetic_options"] == options
    source = BFTSecurityEnv(cfg.to_dict())._source
    assert isinstance(source.config, SyntheticConfig)
    assert (source.config.n_hosts, source.config.threat_rate) == (3, 0.05)
    assert source.config.signal == 0.5 and source.config.stage_events == (2, 4)
    assert source.config.context == ContextConfig(tau_rate=4.0)
    default = BFTSecurityEnv()._source.config
    assert default == SyntheticConfig()


def test_context_accepts_a_config_or_a_dict() -> None:
    ctx = ContextConfig(tau_net=5.0)
    assert SyntheticConfig(context=ctx).context is ctx
    assert SyntheticConfig(context={"tau_net": 5}).context == ctx
    assert TableConfig(TABLE, context={"tau_net": 5.0}).context == ctx


# ---------------------------------------------------------------- the helpers themselves
def _message(fn: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the ValueError that ``fn(*args, **kwargs)`` raises."""
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert type(info.value) is ValueError
    return str(info.value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, "3", None, [3], 3 + 0j])
def test_check_int_rejects_non_integers(value: Any) -> None:
    msg = _message(check_int, "knob", value)
    assert msg.startswith("knob: expected an integer") and msg.endswith(f"got {value!r}")


def test_check_int_bounds_and_normalisation() -> None:
    assert check_int("k", 3) == 3
    v = check_int("k", np.int64(3), lo=3, hi=3)
    assert v == 3 and type(v) is int
    assert _message(check_int, "k", 2, lo=3) == "k: expected an integer >= 3, got 2"
    assert _message(check_int, "k", 5, hi=4) == "k: expected an integer <= 4, got 5"
    assert _message(check_int, "k", 5, lo=0, hi=4) == "k: expected an integer in [0, 4], got 5"


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), None, "1.0", [1.0], 1 + 0j, NAN, INF, -INF, np.float32("nan")]
)
def test_check_number_rejects_non_numbers(value: Any) -> None:
    msg = _message(check_number, "knob", value)
    assert re.match(r"^knob: expected a (finite )?number, got ", msg)
    assert msg.endswith(f"got {value!r}")


def test_check_number_ranges_and_normalisation() -> None:
    v = check_number("x", np.float32(0.25), lo=0.0, hi=1.0)
    assert v == 0.25 and type(v) is float
    assert type(check_number("x", 2)) is float
    assert check_number("x", 0.0, lo=0.0) == 0.0
    assert check_number("x", 1.0, hi=1.0) == 1.0
    assert _message(check_number, "x", 0.0, lo=0.0, lo_open=True) == "x: must be > 0.0, got 0.0"
    assert _message(check_number, "x", 1, lo=0, hi=1, hi_open=True) == "x: must be in [0, 1), got 1"
    assert (
        _message(check_number, "x", -1, lo=0, hi=1, lo_open=True) == "x: must be in (0, 1], got -1"
    )
    assert _message(check_number, "x", 2.5, hi=2) == "x: must be <= 2, got 2.5"
    assert check_number("x", INF, allow_inf=True) == INF
    assert check_number("x", -INF, allow_inf=True, hi=0.0) == -INF
    assert (
        _message(check_number, "x", INF, allow_inf=True, hi=10.0) == "x: must be <= 10.0, got inf"
    )
    assert _message(check_number, "x", NAN, allow_inf=True).startswith("x: expected a finite")


def test_check_bool() -> None:
    assert check_bool("b", True) is True and check_bool("b", np.bool_(False)) is False
    for value in (1, 0, "True", None, 1.0):
        assert _message(check_bool, "b", value) == f"b: expected True or False, got {value!r}"


def test_check_choice() -> None:
    assert check_choice("c", "b", ("a", "b")) == "b"
    assert type(check_choice("c", np.str_("b"), ("a", "b"))) is str
    assert check_choice("c", 1, (0, 1)) == 1
    for value in ("B", None, True, 1.0, ["a"], ("a",)):
        msg = _message(check_choice, "c", value, ("a", "b", 1))
        assert msg == f"c: expected one of ('a', 'b', 1), got {value!r}"


def test_check_str() -> None:
    assert check_str("s", "x") == "x"
    assert check_str("s", None, none_ok=True) is None
    assert _message(check_str, "s", "") == "s: expected a non-empty string, got ''"
    assert _message(check_str, "s", None) == "s: expected a non-empty string, got None"
    assert _message(check_str, "s", 3, none_ok=True) == (
        "s: expected a non-empty string or None, got 3"
    )


def test_check_options() -> None:
    given = {"a": 1}
    out = check_options("o", given, ("a", "b"))
    assert out == given and out is not given
    msg = _message(check_options, "o", {"a": 1, "zz": 2}, ("a", "b"))
    assert msg.startswith("o: unknown key(s) 'zz'; expected some of ['a', 'b']")
    assert msg.endswith("got {'a': 1, 'zz': 2}")
    assert _message(check_options, "o", [("a", 1)], ("a",)).startswith("o: expected a dict")


def test_check_schedule() -> None:
    assert check_schedule("lr", np.float32(0.5)) == 0.5
    assert check_schedule("lr", ((0, 1e-3), [np.int64(20), 1e-4])) == [[0, 1e-3], [20, 1e-4]]
    out = check_schedule("lr", [[0.0, 1e-3], [2e4, 1e-4], [2.5e4 + 0.5, 5e-5]])
    assert out == [[0, 1e-3], [20000, 1e-4], [25000.5, 5e-5]]
    assert type(out[1][0]) is int
    assert _message(check_schedule, "lr", 0.0) == "lr: must be > 0.0, got 0.0"
    two_points = "lr: a schedule needs two or more [timestep, value] points from timestep 0"
    for bad in ([], [[0, 1e-3]], [[5, 1e-3], [9, 1e-4]]):
        assert _message(check_schedule, "lr", bad).startswith(two_points)
    assert _message(check_schedule, "lr", [[0, 1e-3], [0, 1e-4]]).startswith(
        "lr: schedule timesteps must increase strictly"
    )
    assert _message(check_schedule, "lr", [[0, 1e-3], [9, -1.0]]) == (
        "lr[1][1]: must be > 0.0, got -1.0"
    )
    assert _message(check_schedule, "lr", [[0, 1e-3, 2], [9, 1e-4]]).startswith(
        "lr[0]: expected a [timestep, value] pair"
    )
    assert _message(check_schedule, "lr", [[-1, 1e-3]]).startswith("lr[0][0] (timestep)")


def test_validation_is_numpy_only() -> None:
    code = (
        "import sys, marl_bft_rllib.validation; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('marl_bft_rllib', 'ray', 'torch', 'pyarrow', 'pandas', 'gymnasium', 'pettingzoo')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['marl_bft_rllib', 'marl_bft_rllib.validation']"


def test_package_root_names_the_env_lazily() -> None:
    code = (
        "import sys, marl_bft_rllib as m; light = 'ray' not in sys.modules; "
        "name = m.ENV_NAME; print(light, name, 'ray' in sys.modules, m.register(), "
        "m.register('other'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "marl_bft", "True", "marl_bft", "other"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import marl_bft_rllib

        marl_bft_rllib.nope  # noqa: B018
