"""Online STL monitor: online + flush equals offline exactly, any batch shape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stl_strategies import bounded_formulas

from marl_bft_rllib.stl import (
    Formula,
    OnlineMonitor,
    Predicate,
    robustness,
)

values = st.integers(-20, 20).map(lambda i: i / 10)
preds = st.builds(Predicate, st.sampled_from("ab"), st.sampled_from([">", ">=", "<", "<="]), values)
bounded = bounded_formulas(preds, max_lo=3, max_width=4, max_leaves=5)


def run_online(f: Formula | str, tr: dict, batch: tuple[int, ...]) -> tuple[list, np.ndarray]:
    mon = OnlineMonitor(f, batch_shape=batch)
    T = len(tr["a"])
    outs = [mon.step({k: v[t] for k, v in tr.items()}) for t in range(T)]
    return outs, mon.flush()


@settings(max_examples=80, deadline=None)
@given(
    bounded,
    st.integers(1, 15),
    st.sampled_from([(), (1,), (3,), (2, 2)]),
    st.integers(0, 2**31),
)
def test_online_plus_flush_equals_offline(f: Formula, T: int, batch: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    tr = {k: np.round(rng.normal(size=(T, *batch)), 1) for k in "ab"}
    outs, rest = run_online(f, tr, batch)
    H = f.horizon
    # rho(t) is emitted at step t + H exactly
    for k, o in enumerate(outs):
        assert o.shape == ((1 if k >= H else 0), *batch)
    assert rest.shape == (min(T, H), *batch)
    np.testing.assert_array_equal(np.concatenate(outs + [rest]), robustness(f, tr))


def test_monitor_is_reusable_after_flush() -> None:
    rng = np.random.default_rng(0)
    f = "G[0,2]((a > 0) -> F[1,4](b > 0)) & (a > 0) U[1,3] (b > 0.5)"
    mon = OnlineMonitor(f, batch_shape=(8,))
    for T in (20, 3, 11):
        tr = {k: np.round(rng.normal(size=(T, 8)), 1) for k in "ab"}
        outs = [mon.step({k: v[t] for k, v in tr.items()}) for t in range(T)]
        np.testing.assert_array_equal(np.concatenate(outs + [mon.flush()]), robustness(f, tr))


def test_unbounded_formula_emits_everything_at_flush() -> None:
    rng = np.random.default_rng(1)
    f = "G((a > 0) -> F[0,3](b > 0)) | (a > 0) U (b > 1)"
    tr = {k: np.round(rng.normal(size=(150, 4)), 1) for k in "ab"}  # grows the buffer
    outs, rest = run_online(f, tr, (4,))
    assert all(o.shape == (0, 4) for o in outs)
    np.testing.assert_array_equal(rest, robustness(f, tr))


def test_long_trace_large_batch() -> None:
    rng = np.random.default_rng(2)
    f = "(a > 0.5) -> F[0,10](b > 0.5)"
    tr = {k: rng.random((200, 1024)) for k in "ab"}
    outs, rest = run_online(f, tr, (1024,))
    np.testing.assert_array_equal(np.concatenate(outs + [rest]), robustness(f, tr))


def test_errors() -> None:
    mon = OnlineMonitor("a > 0 & b > 0", batch_shape=(2,))
    with pytest.raises(ValueError, match="missing signal 'b'"):
        mon.step({"a": np.zeros(2)})
    with pytest.raises(ValueError, match="batch_shape"):
        mon.step({"a": np.zeros(3), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="batch_shape"):
        OnlineMonitor("a > 0", batch_shape=(-1,))
    with pytest.raises(ValueError, match="parse error"):
        OnlineMonitor("a >")
