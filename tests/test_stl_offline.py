"""Offline STL robustness: brute-force reference, rtamt oracle, properties, errors."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import rtamt  # the oracle: a dev dependency, imported hard so the test never skips
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.stl import (
    Always,
    And,
    Eventually,
    Formula,
    Implies,
    Not,
    Or,
    Predicate,
    Until,
    parse,
    robustness,
)

# (our syntax, rtamt syntax with implication written as `or`)
FORMULAS = [
    ("G(a > 0)", "always(a > 0)"),
    ("F(a > 0.2)", "eventually(a > 0.2)"),
    ("G[2,5](a >= 0.3)", "always[2,5](a >= 0.3)"),
    ("F[1,7](a < 0.1)", "eventually[1,7](a < 0.1)"),
    ("G((a > 0) -> F[0,4](b > 0))", "always((not(a > 0)) or eventually[0,4](b > 0))"),
    ("G(a > 0.5 -> F[0,10] b > 0.5)", "always((not(a > 0.5)) or eventually[0,10](b > 0.5))"),
    ("(a > 0) U[0,5] (b > 0)", "(a > 0) until[0,5] (b > 0)"),
    ("(a > 0) U[2,6] (b <= 0.1)", "(a > 0) until[2,6] (b <= 0.1)"),
    ("(a > 0) U (b > 0)", "(a > 0) until (b > 0)"),
    ("F(G[0,3](a > 0))", "eventually(always[0,3](a > 0))"),
    (
        "G[1,3](F[0,2]((a > 0) U[1,3] (b <= 0.2)))",
        "always[1,3](eventually[0,2]((a > 0) until[1,3] (b <= 0.2)))",
    ),
    ("G(F[0,2](a > 0) & !(b < -0.5))", "always(eventually[0,2](a > 0) and not(b < -0.5))"),
]


def brute(f: Formula, t: int, tr: dict[str, list[float]], T: int) -> float:
    """rho(f, t) straight from the finite-trace definitions, one time step at a time."""
    if isinstance(f, Predicate):
        x = tr[f.signal][t]
        return x - f.threshold if f.op in (">", ">=") else f.threshold - x
    if isinstance(f, Not):
        return -brute(f.child, t, tr, T)
    if isinstance(f, And):
        return min(brute(f.left, t, tr, T), brute(f.right, t, tr, T))
    if isinstance(f, Or):
        return max(brute(f.left, t, tr, T), brute(f.right, t, tr, T))
    if isinstance(f, Implies):
        return max(-brute(f.left, t, tr, T), brute(f.right, t, tr, T))
    if isinstance(f, (Always, Eventually, Until)):
        hi = T - 1 if f.hi is None else min(t + f.hi, T - 1)
        window = range(t + f.lo, hi + 1)
        if isinstance(f, Always):
            return min((brute(f.child, u, tr, T) for u in window), default=math.inf)
        if isinstance(f, Eventually):
            return max((brute(f.child, u, tr, T) for u in window), default=-math.inf)
        return max(
            (
                min(
                    brute(f.right, u, tr, T),
                    min((brute(f.left, v, tr, T) for v in range(t, u)), default=math.inf),
                )
                for u in window
            ),
            default=-math.inf,
        )
    raise TypeError(f)


def _trace(rng: np.random.Generator, T: int, shape: tuple[int, ...] = ()) -> dict:
    # coarse values so ties (and zero robustness) happen often
    return {k: np.round(rng.normal(size=(T, *shape)), 1) for k in "ab"}


@pytest.mark.parametrize("text", [f for f, _ in FORMULAS])
def test_matches_brute_force(text: str) -> None:
    rng = np.random.default_rng(zlib.crc32(text.encode()))  # stable across processes
    f = parse(text)
    for T in (1, 2, 3, 5, 8, 13, 25):
        tr = _trace(rng, T)
        lists = {k: v.tolist() for k, v in tr.items()}
        ref = np.array([brute(f, t, lists, T) for t in range(T)])
        got = robustness(f, tr)
        assert got.shape == (T,)
        np.testing.assert_array_equal(got, ref)


def test_until_left_side_is_half_open() -> None:
    # left side false only at t' where the right side becomes true: until still holds
    a = np.array([1.0, 1.0, -1.0, 1.0])
    b = np.array([-1.0, -1.0, 2.0, -1.0])
    rho = robustness("(a > 0) U[0,3] (b > 0)", {"a": a, "b": b})
    assert rho[0] == 1.0  # min(b(2)=2, min a over [0,2)=1)
    # right side at t itself: left side over the empty [t, t) is ignored
    assert robustness("(a > 0) U[0,0] (b > 0)", {"a": a, "b": b})[2] == 2.0


def test_end_of_trace_conventions() -> None:
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_array_equal(robustness("G[1,2](x > 0)", {"x": x}), [-1.0, 2.0, np.inf])
    np.testing.assert_array_equal(robustness("F[1,2](x > 0)", {"x": x}), [2.0, 2.0, -np.inf])
    np.testing.assert_array_equal(
        robustness("(x > 0) U[1,5] (x > 1)", {"x": x}), [-1.0, -1.0, -np.inf]
    )
    np.testing.assert_array_equal(robustness("x > 0", {"x": x}), robustness("x >= 0", {"x": x}))
    np.testing.assert_array_equal(robustness("G(x < 1)", {"x": x}), [-1.0, -1.0, -1.0])


def test_errors() -> None:
    with pytest.raises(ValueError, match="missing signal 'b'"):
        robustness("a > 0 & b > 0", {"a": [1.0]})
    with pytest.raises(ValueError, match="shape"):
        robustness("a > 0 & b > 0", {"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="empty trace"):
        robustness("G(a > 0)", {"a": []})
    with pytest.raises(ValueError, match="formula"):
        robustness(3, {"a": [1.0]})  # type: ignore[arg-type]


@pytest.mark.parametrize("text,rt_text", FORMULAS)
def test_against_rtamt(text: str, rt_text: str) -> None:
    rng = np.random.default_rng(len(text))
    spec = rtamt.StlDiscreteTimeOfflineSpecification()
    spec.declare_var("a", "float")
    spec.declare_var("b", "float")
    spec.spec = rt_text
    spec.parse()
    for T in (2, 3, 4, 7, 16, 61, 300):
        tr = _trace(rng, T)
        ds = {"time": list(range(T)), "a": tr["a"].tolist(), "b": tr["b"].tolist()}
        ref = np.array([v for _, v in spec.evaluate(ds)])
        got = robustness(text, tr)
        # max |diff| == 0 where inf entries count as equal only when identical
        fin = np.isfinite(ref)
        np.testing.assert_array_equal(got[~fin], ref[~fin])
        assert np.max(np.abs(got[fin] - ref[fin]), initial=0.0) == 0.0


# ---- hypothesis properties -------------------------------------------------------------

values = st.integers(-20, 20).map(lambda i: i / 10)
preds = st.builds(Predicate, st.sampled_from("ab"), st.sampled_from([">", ">=", "<", "<="]), values)
intervals = st.tuples(st.integers(0, 3), st.integers(0, 4)).map(lambda p: (p[0], p[0] + p[1]))


def _extend(children: st.SearchStrategy[Formula]) -> st.SearchStrategy[Formula]:
    iv = intervals
    return st.one_of(
        st.builds(Not, children),
        st.builds(And, children, children),
        st.builds(Or, children, children),
        st.builds(Implies, children, children),
        st.builds(lambda c, i: Always(c, *i), children, iv),
        st.builds(lambda c, i: Eventually(c, *i), children, iv),
        st.builds(lambda a, b, i: Until(a, b, *i), children, children, iv),
        st.builds(Always, children),
        st.builds(Eventually, children),
        st.builds(Until, children, children),
    )


formulas = st.recursive(preds, _extend, max_leaves=4)


@st.composite
def traces(draw, batch: tuple[int, ...] = ()) -> dict:
    T = draw(st.integers(1, 12))
    n = T * int(np.prod(batch, dtype=int))
    return {
        k: np.array(draw(st.lists(values, min_size=n, max_size=n))).reshape((T, *batch))
        for k in "ab"
    }


@settings(max_examples=60, deadline=None)
@given(formulas, traces())
def test_brute_force_random_formulas(f: Formula, tr: dict) -> None:
    T = len(tr["a"])
    lists = {k: v.tolist() for k, v in tr.items()}
    np.testing.assert_array_equal(
        robustness(f, tr), np.array([brute(f, t, lists, T) for t in range(T)])
    )


@settings(max_examples=60, deadline=None)
@given(formulas, formulas, traces(), intervals)
def test_dualities(f: Formula, g: Formula, tr: dict, iv: tuple[int, int]) -> None:
    def rho(x: Formula) -> np.ndarray:
        return robustness(x, tr)

    np.testing.assert_array_equal(rho(Not(Always(f))), rho(Eventually(Not(f))))
    np.testing.assert_array_equal(rho(Not(Eventually(f, *iv))), rho(Always(Not(f), *iv)))
    np.testing.assert_array_equal(rho(Not(And(f, g))), rho(Or(Not(f), Not(g))))
    np.testing.assert_array_equal(rho(Implies(f, g)), rho(Or(Not(f), g)))
    np.testing.assert_array_equal(rho(Not(Not(f))), rho(f))
    np.testing.assert_array_equal(rho(Not(Until(f, g, *iv))), -rho(Until(f, g, *iv)))


@settings(max_examples=40, deadline=None)
@given(formulas, traces(batch=(2, 3)))
def test_batch_equals_per_trace(f: Formula, tr: dict) -> None:
    out = robustness(f, tr)
    assert out.shape == tr["a"].shape
    for i in range(2):
        for j in range(3):
            single = robustness(f, {k: v[:, i, j] for k, v in tr.items()})
            np.testing.assert_array_equal(out[:, i, j], single)


def test_large_batch_chunked_equals_per_trace() -> None:
    rng = np.random.default_rng(5)
    tr = _trace(rng, 300, (400,))  # above the chunking threshold
    f = "G((a > 0) -> F[0,10](b > 0)) | (a > 0) U[2,9] (b > 1)"
    out = robustness(f, tr)
    for j in (0, 137, 399):
        np.testing.assert_array_equal(out[:, j], robustness(f, {k: v[:, j] for k, v in tr.items()}))
