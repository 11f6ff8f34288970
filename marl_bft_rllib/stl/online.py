"""Online robustness monitor: one time step at a time for a whole batch of traces.

Each node of the (negation normal form) formula streams its values: at step k it
outputs its value for time k - H(node). Window operators keep doubling levels
(level j holds the min / max over 2^j consecutive child values) in ring buffers, so a
window of w steps costs O(log w) vector operations per step whatever the batch size;
until keeps the same levels of the (max, min) until-recurrence. All buffers are
preallocated; min / max are exact, so the values are bitwise those of
:func:`marl_bft_rllib.stl.robustness`.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from marl_bft_rllib.stl.offline import as_formula, robustness

__all__ = ["OnlineMonitor"]

INF = float("inf")


class _Ring:
    """Fixed-length ring of batch arrays; age 0 is the newest entry."""

    __slots__ = ("data", "n", "p")

    def __init__(self, length: int, shape: tuple[int, ...], fill: float) -> None:
        self.data = np.full((length,) + shape, fill)
        self.n = length
        self.p = 0

    def push(self, v: np.ndarray) -> None:
        """Append ``v`` as the newest entry, dropping the oldest."""
        self.p = (self.p + 1) % self.n
        self.data[self.p] = v

    def slot(self) -> np.ndarray:
        """Advance and return the new newest slot (to be written in place)."""
        self.p = (self.p + 1) % self.n
        return self.data[self.p, ...]

    def get(self, age: int) -> np.ndarray:
        """The entry pushed ``age`` steps before the newest (a view, not a copy)."""
        return self.data[(self.p - age) % self.n, ...]


class _Node:
    H: int

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Take step k's signals; return the robustness at step k - H, or None before it exists."""
        raise NotImplementedError


class _Pred(_Node):
    def __init__(self, f: Predicate, shape: tuple[int, ...]) -> None:
        self.H = 0
        self.name, self.c = f.signal, f.threshold
        self.pos = f.op in (">", ">=")
        self.buf = np.empty(shape)

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray:
        """The predicate's robustness at step k."""
        if self.pos:
            return np.subtract(sig[self.name], self.c, out=self.buf)
        return np.subtract(self.c, sig[self.name], out=self.buf)


class _Neg(_Node):
    def __init__(self, child: _Node, shape: tuple[int, ...]) -> None:
        self.child, self.H = child, child.H
        self.buf = np.empty(shape)

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Minus the child's robustness at step k - H, or None before it exists."""
        x = self.child.step(k, sig)
        return None if x is None else np.negative(x, out=self.buf)


class _Delay:
    """Returns the value pushed ``d`` steps ago."""

    def __init__(self, d: int, shape: tuple[int, ...]) -> None:
        self.d = d
        self.ring = _Ring(d + 1, shape, 0.0) if d else None

    def __call__(self, x: np.ndarray | None) -> np.ndarray | None:
        if self.ring is None or x is None:
            return x if self.ring is None else None
        self.ring.push(x)
        return self.ring.get(self.d)


class _Binary(_Node):
    def __init__(self, op: np.ufunc, left: _Node, right: _Node, shape: tuple[int, ...]) -> None:
        self.op, self.left, self.right = op, left, right
        self.H = max(left.H, right.H)
        self.dl = _Delay(self.H - left.H, shape)
        self.dr = _Delay(self.H - right.H, shape)
        self.buf = np.empty(shape)

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Min or max of both children's robustness at step k - H, or None before it exists."""
        lv = self.dl(self.left.step(k, sig))
        rv = self.dr(self.right.step(k, sig))
        if k < self.H:
            return None
        return self.op(lv, rv, out=self.buf)


class _Window(_Node):
    """G[lo,hi] / F[lo,hi] over the child's stream with doubling levels."""

    def __init__(self, op: np.ufunc, lo: int, hi: int, child: _Node, shape: tuple[int, ...]):
        self.op, self.child = op, child
        self.H = hi + child.H
        self.w = w = hi - lo + 1
        self.K = K = w.bit_length() - 1
        ident = INF if op is np.minimum else -INF
        self.levels = [_Ring(w + 1, shape, ident) for _ in range(K + 1)]
        self.qage = w - (1 << K)
        self.buf = np.empty(shape)

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The windowed min or max robustness at step k - H, or None before it exists."""
        x = self.child.step(k, sig)
        if x is None:
            return None
        lv, op = self.levels, self.op
        lv[0].push(x)
        for j in range(1, self.K + 1):
            prev = lv[j - 1]
            op(prev.get(1 << (j - 1)), prev.get(0), out=lv[j].slot())
        if k < self.H:
            return None
        top = lv[self.K]
        return op(top.get(0), top.get(self.qage), out=self.buf)


class _Until(_Node):
    """left U[lo,hi] right with doubling levels of (U_L, P_L) pairs."""

    def __init__(self, lo: int, hi: int, left: _Node, right: _Node, shape: tuple[int, ...]):
        self.left, self.right = left, right
        hc = max(left.H, right.H)
        self.H = hi + hc
        self.dl = _Delay(hc - left.H, shape)
        self.dr = _Delay(hc - right.H, shape)
        self.lo, self.hi = lo, hi
        w = hi - lo + 1
        self.K = K = max(w.bit_length(), lo.bit_length()) - 1
        self.U = [_Ring(hi + 2, shape, -INF) for _ in range(K + 1)]
        self.P = [_Ring(hi + 2, shape, INF) for _ in range(K + 1)]
        # (level, age) of each set bit of w, lowest first, for the left fold
        comps, off = [], 0
        for j in range(w.bit_length()):
            if w >> j & 1:
                comps.append((j, w - (1 << j) - off))
                off += 1 << j
        self.comps = comps
        if lo:
            kp = lo.bit_length() - 1
            self.gq = (kp, w, hi - (1 << kp) + 1)
        self.acc_u = np.empty(shape)
        self.acc_p = np.empty(shape)
        self.tmp = np.empty(shape)

    def step(self, k: int, sig: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The Until robustness at step k - H, or None before it exists."""
        phi = self.dl(self.left.step(k, sig))
        psi = self.dr(self.right.step(k, sig))
        if phi is None or psi is None:
            return None
        U, P, tmp = self.U, self.P, self.tmp
        U[0].push(psi)
        P[0].push(phi)
        for j in range(1, self.K + 1):
            h = 1 << (j - 1)
            u_old, p_old = U[j - 1].get(h), P[j - 1].get(h)
            u_new, p_new = U[j - 1].get(0), P[j - 1].get(0)
            np.minimum(p_old, u_new, out=tmp)
            np.maximum(u_old, tmp, out=U[j].slot())
            np.minimum(p_old, p_new, out=P[j].slot())
        if k < self.H:
            return None
        acc_u, acc_p = self.acc_u, self.acc_p
        first = True
        for j, age in self.comps:
            if first:
                acc_u[...] = U[j].get(age)
                acc_p[...] = P[j].get(age)
                first = False
            else:
                np.minimum(acc_p, U[j].get(age), out=tmp)
                np.maximum(acc_u, tmp, out=acc_u)
                np.minimum(acc_p, P[j].get(age), out=acc_p)
        if self.lo:
            kp, a1, a2 = self.gq
            np.minimum(P[kp].get(a1), P[kp].get(a2), out=tmp)
            np.minimum(tmp, acc_u, out=acc_u)
        return acc_u


def _build(f: Formula, shape: tuple[int, ...]) -> _Node:
    if isinstance(f, Predicate):
        return _Pred(f, shape)
    if isinstance(f, Not):
        return _Neg(_build(f.child, shape), shape)
    if isinstance(f, (And, Or)):
        op = np.minimum if isinstance(f, And) else np.maximum
        return _Binary(op, _build(f.left, shape), _build(f.right, shape), shape)
    if isinstance(f, (Always, Eventually)):
        op = np.minimum if isinstance(f, Always) else np.maximum
        assert f.hi is not None
        return _Window(op, f.lo, f.hi, _build(f.child, shape), shape)
    if isinstance(f, Until):
        assert f.hi is not None
        return _Until(f.lo, f.hi, _build(f.left, shape), _build(f.right, shape), shape)
    raise TypeError(f"unexpected node {f!r}")


class OnlineMonitor:
    """Streams rho(t) of a formula for a batch of traces; online + flush() == offline.

    ``step`` takes one time step of every signal (arrays of ``batch_shape``) and
    returns the values that became final: an array ``(1, *batch_shape)`` holding
    rho(t - H) once t >= H (H = ``horizon``), else ``(0, *batch_shape)``. ``flush``
    ends the trace, returns the remaining ``(min(T, H), *batch_shape)`` values and
    resets the monitor for a new trace. A formula with an unbounded operator has an
    infinite horizon: ``step`` then only buffers and ``flush`` returns all T values.
    """

    def __init__(self, formula: str | Formula, batch_shape: tuple[int, ...] | int = ()) -> None:
        self.formula = as_formula(formula)
        if isinstance(batch_shape, (int, np.integer)):
            batch_shape = (int(batch_shape),)
        try:
            shape = tuple(int(s) for s in batch_shape)
        except TypeError as e:
            raise ValueError(f"batch_shape: expected a tuple of ints, got {batch_shape!r}") from e
        if any(s < 0 for s in shape):
            raise ValueError(f"batch_shape: sizes must be >= 0, got {shape}")
        self.batch_shape = shape
        self.names = tuple(sorted(self.formula.signals))
        self.horizon: int | None = self.formula.horizon
        self._empty = np.empty((0,) + shape)
        self._root = None if self.horizon is None else _build(nnf(self.formula), shape)
        # trailing signal rows for flush(): the last H rows (or the whole trace if H is None)
        cap = 64 if self.horizon is None else max(self.horizon, 1)
        self._hist = {n: np.empty((cap,) + shape) for n in self.names}
        self._sig: dict[str, np.ndarray] = {}
        self.t = 0

    def reset(self) -> None:
        """Forget the current trace (buffers are kept)."""
        self.t = 0
        if self.horizon is not None:
            self._root = _build(nnf(self.formula), self.batch_shape)

    def step(self, signals_at_t: Mapping[str, Any]) -> np.ndarray:
        """Consume one time step; return the newly final values, shape (0 or 1, *batch)."""
        if not isinstance(signals_at_t, Mapping):
            raise ValueError(
                f"signals_at_t: expected a mapping name -> array, got {type(signals_at_t).__name__}"
            )
        sig = self._sig
        H, k = self.horizon, self.t
        for n in self.names:
            if n not in signals_at_t:
                raise ValueError(f"signals_at_t: missing signal {n!r} needed by {self.formula}")
            v = np.asarray(signals_at_t[n], dtype=np.float64)
            if v.shape != self.batch_shape:
                raise ValueError(
                    f"signals_at_t: signal {n!r} has shape {v.shape}, "
                    f"expected batch_shape {self.batch_shape}"
                )
            hist = self._hist[n]
            if H is None:
                if k == hist.shape[0]:
                    hist = np.concatenate([hist, np.empty_like(hist)])
                    self._hist[n] = hist
                hist[k] = v
            elif H:
                hist[k % H] = v
            sig[n] = v
        self.t = k + 1
        if self._root is None:
            return self._empty
        out = self._root.step(k, sig)
        return self._empty if out is None else out[None].copy()

    def flush(self) -> np.ndarray:
        """End the trace: return the values not emitted yet, then reset for a new trace."""
        T, H = self.t, self.horizon
        n = T if H is None else min(T, H)
        if n == 0:
            self.reset()
            return self._empty
        if H is None:
            rows = {k: v[:T] for k, v in self._hist.items()}
        else:
            idx = np.arange(T - n, T) % H
            rows = {k: v[idx] for k, v in self._hist.items()}
        out = robustness(self.formula, rows)
        self.reset()
        return np.ascontiguousarray(out)
