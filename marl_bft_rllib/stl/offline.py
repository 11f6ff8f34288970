"""Offline (whole-trace) quantitative robustness, vectorised over any batch of traces.

Finite-trace conventions (docs/stl.md): discrete time, closed integer intervals, windows
cut at the trace end, an empty window gives G = +inf and F, U = -inf, until is
non-strict with its left side over [t, t'), ``>`` and ``>=`` have the same robustness.

Window operators use doubling (log2(w) whole-array ``minimum``/``maximum`` calls for a
window of w steps, i.e. O(log w) per element); unbounded G / F are reverse cumulative
min / max; until uses a doubling (parallel-prefix) scan of the (max, min) recurrence, so
no operator loops over time, envs or agents in Python. Min and max are exact, so any
evaluation order gives identical values: the online monitor relies on this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from marl_bft_rllib.stl.ast import (
    Always,
    And,
    Eventually,
    Formula,
    Not,
    Or,
    Predicate,
    Until,
    nnf,
)
from marl_bft_rllib.stl.parser import parse

__all__ = ["robustness", "as_formula", "sliding", "until"]

INF = float("inf")
Program = Callable[[dict[str, np.ndarray]], np.ndarray]

# Batches with more elements than this are evaluated in chunks of traces, so the
# intermediate arrays stay in the CPU cache.
_CHUNK_ELEMS = 1 << 14


def as_formula(formula: str | Formula) -> Formula:
    """Return ``formula`` parsed if it is a string (ValueError for anything else)."""
    if isinstance(formula, Formula):
        return formula
    if isinstance(formula, str):
        return parse(formula)
    raise ValueError(f"formula: expected a str or Formula, got {type(formula).__name__}")


def sliding(x: np.ndarray, lo: int, hi: int | None, op: np.ufunc) -> np.ndarray:
    """y[t] = op over x[t+lo .. t+hi] cut at the trace end (op's identity +-inf if empty)."""
    T = x.shape[0]
    ident = INF if op is np.minimum else -INF
    n = T - lo  # number of t whose window is not empty
    if n <= 0:
        return np.full(x.shape, ident)
    if hi is None:
        acc = op.accumulate(x[::-1], axis=0)[::-1]
        if lo == 0:
            return acc
        y = np.empty(x.shape)
        y[:n] = acc[lo:]
        y[n:] = ident
        return y
    w = hi - lo + 1
    if w == 1:
        if lo == 0:
            return x.copy()
        y = np.empty(x.shape)
        y[:n] = x[lo:]
        y[n:] = ident
        return y
    # Doubling on src = x[lo:]: cur[i] = op over src[i .. i+width-1]. Windows that
    # reach past the trace end are suffix accumulations of the last w-1 values.
    src = x[lo:]
    y = np.empty(x.shape)
    full = n - w + 1  # windows lying entirely inside the trace
    if full > 0:
        cur, width, m = src, 1, n
        while 2 * width <= w:
            m -= width
            cur = op(cur[:m], cur[width : width + m])
            width *= 2
        op(cur[:full], cur[w - width : w - width + full], out=y[:full])
        tail = src[full:]
    else:
        tail = src
    y[n - tail.shape[0] : n] = op.accumulate(tail[::-1], axis=0)[::-1]
    y[n:] = ident
    return y


def until(phi: np.ndarray, psi: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    """rho(phi U[lo,hi] psi) from the robustness arrays of phi and psi."""
    T = phi.shape[0]
    n = T - lo
    if n <= 0:
        return np.full(phi.shape, -INF)
    w = n if hi is None else hi - lo + 1
    # V(u) = max_{t' in [u, u+w-1]} min(psi(t'), min phi over [u, t')), u = t + lo.
    # Doubling on pairs (U_L, P_L) over windows of L steps; compose the set bits of w
    # left to right: (U, P) covering [u, u+off) then (U_k, P_k) at u+off.
    m = n + w - 1
    U = np.empty((m,) + phi.shape[1:])
    P = np.empty((m,) + phi.shape[1:])
    U[:n] = psi[lo:]
    U[n:] = -INF
    P[:n] = phi[lo:]
    P[n:] = INF
    accU: np.ndarray | None = None
    accP: np.ndarray | None = None
    off = 0
    width = 1
    rest = w
    while True:
        if rest & 1:
            Uk = U[off : off + n]
            if accU is None:
                accU = Uk.copy()
                accP = P[off : off + n].copy() if rest > 1 else None
            else:
                tmp = np.minimum(accP, Uk)
                np.maximum(accU, tmp, out=accU)
                if rest > 1:
                    np.minimum(accP, P[off : off + n], out=accP)
            off += width
        rest >>= 1
        if not rest:
            break
        k = U.shape[0] - width
        # U_2L[i] = max(U_L[i], min(P_L[i], U_L[i+L])); P_2L[i] = min(P_L[i], P_L[i+L])
        tmp = np.minimum(P[:k], U[width : width + k])
        np.maximum(U[:k], tmp, out=U[:k])
        np.minimum(P[:k], P[width : width + k], out=P[:k])
        U = U[:k]
        P = P[:k]
        width *= 2
    assert accU is not None
    if lo == 0:
        return accU
    out = np.empty(phi.shape)
    out[n:] = -INF
    # left side over [t, t+lo) must hold as well
    np.minimum(sliding(phi, 0, lo - 1, np.minimum)[:n], accU, out=out[:n])
    return out


def _compile(f: Formula) -> Program:
    """Closure tree evaluating an NNF formula on a dict of float64 signal arrays."""
    if isinstance(f, Predicate):
        name, c = f.signal, f.threshold
        if f.op in (">", ">="):
            return lambda env: np.subtract(env[name], c)
        return lambda env: np.subtract(c, env[name])
    if isinstance(f, Not):
        child = _compile(f.child)

        def neg(env: dict[str, np.ndarray]) -> np.ndarray:
            """Minus the child's robustness."""
            x = child(env)
            return np.negative(x, out=x)

        return neg
    if isinstance(f, (And, Or)):
        left, right = _compile(f.left), _compile(f.right)
        op = np.minimum if isinstance(f, And) else np.maximum

        def binary(env: dict[str, np.ndarray]) -> np.ndarray:
            """Elementwise min (And) or max (Or) of both children's robustness."""
            x = left(env)
            return op(x, right(env), out=x)

        return binary
    if isinstance(f, (Always, Eventually)):
        child = _compile(f.child)
        op = np.minimum if isinstance(f, Always) else np.maximum
        lo, hi = f.lo, f.hi
        return lambda env: sliding(child(env), lo, hi, op)
    if isinstance(f, Until):
        left, right = _compile(f.left), _compile(f.right)
        lo, hi = f.lo, f.hi
        return lambda env: until(left(env), right(env), lo, hi)
    raise TypeError(f"unexpected node {f!r}")  # Implies is gone after nnf()


def program(f: Formula) -> Program:
    """The compiled evaluator of ``f`` (cached on the formula object)."""
    prog = f.__dict__.get("_program")
    if prog is None:
        prog = _compile(nnf(f))
        object.__setattr__(f, "_program", prog)
    return prog


def prepare_signals(
    f: Formula, signals: Mapping[str, Any], field: str = "signals"
) -> dict[str, np.ndarray]:
    """Float64 arrays of the signals ``f`` reads, checked for presence and equal shapes."""
    if not isinstance(signals, Mapping):
        raise ValueError(f"{field}: expected a mapping name -> array, got {type(signals).__name__}")
    env: dict[str, np.ndarray] = {}
    shape = None
    for name in sorted(f.signals):
        if name not in signals:
            raise ValueError(
                f"{field}: missing signal {name!r} needed by formula {f}; got {sorted(signals)}"
            )
        arr = np.asarray(signals[name], dtype=np.float64)
        if arr.ndim == 0:
            raise ValueError(f"{field}: signal {name!r} must have time on axis 0, got a scalar")
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise ValueError(
                f"{field}: signal {name!r} has shape {arr.shape}, expected {shape} like the others"
            )
        env[name] = arr
    if shape is not None and shape[0] == 0:
        raise ValueError(f"{field}: empty trace (time axis has length 0)")
    return env


def robustness(formula: str | Formula, signals: Mapping[str, Any]) -> np.ndarray:
    """rho(formula, t) for every t of the traces: an array shaped like the signals (T, *batch)."""
    f = as_formula(formula)
    env = prepare_signals(f, signals)
    prog = program(f)
    if not env:
        raise ValueError(f"formula: {f} reads no signal")
    x = next(iter(env.values()))
    T, batch = x.shape[0], x.shape[1:]
    size = x.size
    if size <= _CHUNK_ELEMS or not batch:
        return prog(env)
    # large batches: evaluate chunks of traces so intermediates stay cache resident
    nb = size // T
    flat = {k: v.reshape(T, nb) for k, v in env.items()}
    step = max(1, _CHUNK_ELEMS // T)
    out = np.empty((T, nb))
    for j in range(0, nb, step):
        sub = {k: np.ascontiguousarray(v[:, j : j + step]) for k, v in flat.items()}
        out[:, j : j + step] = prog(sub)
    return out.reshape(x.shape)
