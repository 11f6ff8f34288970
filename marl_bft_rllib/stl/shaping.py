"""STL reward shaping: per-step rewards from the robustness of security specifications.

R_i(t) = clip(rho_i(trace prefix [0..t], 0)) is maintained incrementally: for a top-level
``G psi`` / ``F psi`` with a bounded ``psi`` of horizon H only the last H values of psi
change when the prefix grows, so a running min / max of the final ones plus H + 1
fresh evaluations per step gives the exact prefix value at a cost independent of t.
Bounded formulas become final after H + 1 steps. Anything else falls back to a full
re-evaluation of the prefix (exact, O(t) per step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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
from marl_bft_rllib.validation import check_int, check_number

__all__ = ["DEFAULT_SPECS", "SHAPING_MODES", "SIGNALS", "STLShaper", "validate_specs"]

DEFAULT_SPECS: dict[str, tuple[str, float]] = {
    "containment": ("G((threat > 0.5) -> F[0,3](restrictive > 0.5))", 1.0),
    "false_positives": ("G(fp_window <= 0.1)", 1.0),
    "quarantine_budget": ("G(quarantined <= 0.25)", 1.0),
    "liveness": ("G(F[0,2](decided > 0.5))", 1.0),
    "agreement": ("G(agreement > 0.5)", 1.0),
}
SHAPING_MODES = ("none", "terminal", "incremental", "potential")
SIGNALS = ("threat", "restrictive", "decided", "agreement", "fp_window", "quarantined")

INF = math.inf
# Python scalar evaluation is used while it needs at most this many node visits per step.
_PY_WORK_LIMIT = 96


def validate_specs(
    specs: Mapping[str, tuple[str | Formula, float]] | None,
    field: str = "stl_specs",
    allowed: Iterable[str] | None = SIGNALS,
) -> dict[str, tuple[Formula, float]]:
    """Parse and check ``{name: (formula, weight)}`` (None: DEFAULT_SPECS); ValueError naming field."""
    if specs is None:
        specs = DEFAULT_SPECS
    if not isinstance(specs, Mapping):
        raise ValueError(f"{field}: expected a dict name -> (formula, weight), got {specs!r}")
    allowed_set = None if allowed is None else frozenset(allowed)
    out: dict[str, tuple[Formula, float]] = {}
    for name, spec in specs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{field}: spec names must be non-empty strings, got {name!r}")
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            raise ValueError(
                f"{field}: spec {name!r} must be a (formula, weight) pair, got {spec!r}"
            )
        text, weight = spec
        try:
            formula = as_formula(text)
        except ValueError as e:
            raise ValueError(f"{field}: spec {name!r}: {e}") from None
        weight = check_number(f"{field}: spec {name!r}: weight", weight)
        if allowed_set is not None:
            unknown = sorted(formula.signals - allowed_set)
            if unknown:
                raise ValueError(
                    f"{field}: spec {name!r} uses unknown signal(s) {unknown}; "
                    f"allowed: {sorted(allowed_set)}"
                )
        out[name] = (formula, weight)
    return out


# --- scalar Python evaluator: ev(s, n) = rho(f, s) on the trace prefix of length n ---------
Ev = Callable[[int, int], float]


def _py_eval(f: Formula, trace: dict[str, list[float]]) -> tuple[Ev, int]:
    """Compile an NNF bounded formula to a scalar evaluator and its work per call."""
    if isinstance(f, Predicate):
        xs, c = trace[f.signal], f.threshold
        if f.op in (">", ">="):
            return (lambda s, n: xs[s] - c), 1
        return (lambda s, n: c - xs[s]), 1
    if isinstance(f, Not):
        ch, w = _py_eval(f.child, trace)
        return (lambda s, n: -ch(s, n)), w + 1
    if isinstance(f, (And, Or)):
        (l_, wl), (r_, wr) = _py_eval(f.left, trace), _py_eval(f.right, trace)
        if isinstance(f, And):
            return (lambda s, n: min(l_(s, n), r_(s, n))), wl + wr + 1
        return (lambda s, n: max(l_(s, n), r_(s, n))), wl + wr + 1
    if isinstance(f, (Always, Eventually)):
        ch, w = _py_eval(f.child, trace)
        lo, hi = f.lo, f.hi
        assert hi is not None
        if isinstance(f, Always):

            def g(s: int, n: int) -> float:
                """Min of the child's robustness over the window at ``s`` on a prefix of n."""
                v = INF
                for u in range(s + lo, min(s + hi + 1, n)):
                    x = ch(u, n)
                    if x < v:
                        v = x
                return v

            return g, (hi - lo + 1) * w + 1

        def ev(s: int, n: int) -> float:
            """Max of the child's robustness over the window at ``s`` on a prefix of n."""
            v = -INF
            for u in range(s + lo, min(s + hi + 1, n)):
                x = ch(u, n)
                if x > v:
                    v = x
            return v

        return ev, (hi - lo + 1) * w + 1
    if isinstance(f, Until):
        (phi, wl), (psi, wr) = _py_eval(f.left, trace), _py_eval(f.right, trace)
        lo, hi = f.lo, f.hi
        assert hi is not None

        def until(s: int, n: int) -> float:
            """Robustness of the Until node at position ``s`` on a prefix of length n."""
            acc, run = -INF, INF
            for u in range(s, min(s + hi + 1, n)):
                if u >= s + lo:
                    acc = max(acc, min(psi(u, n), run))
                run = min(run, phi(u, n))
            return acc

        return until, (hi + 1) * (wl + wr) + 1
    raise TypeError(f"unexpected node {f!r}")


class _Tracker:
    """rho(f, 0) on a growing trace prefix."""

    def __init__(self, f: Formula, trace: dict[str, list[float]]) -> None:
        self.f, self.trace = f, trace
        self.names = sorted(f.signals)

    def reset(self) -> None:
        """Forget any state kept from a previous episode."""

    def _arrays(self, a: int, b: int) -> dict[str, np.ndarray]:
        return {k: np.array(self.trace[k][a:b]) for k in self.names}

    def update(self, n: int) -> float:
        """Value on the prefix of length n (called once per n = 1, 2, ...)."""
        return float(robustness(self.f, self._arrays(0, n))[0])


class _TopTemporal(_Tracker):
    """Top-level G[lo,inf] psi or F[lo,inf] psi with psi bounded (horizon H)."""

    def __init__(self, f: Always | Eventually, trace: dict[str, list[float]]) -> None:
        super().__init__(f, trace)
        self.child = f.child
        self.H = f.child.horizon
        self.lo = f.lo
        self.is_min = isinstance(f, Always)
        ev, work = _py_eval(f.child, trace)
        self.ev = ev if work * (self.H + 1) <= _PY_WORK_LIMIT else None
        self.reset()

    def reset(self) -> None:
        """Forget the robustness accumulated over positions that are already final."""
        self.final = INF if self.is_min else -INF

    def update(self, n: int) -> float:
        """Value on the prefix of length n (called once per n = 1, 2, ...)."""
        H, lo = self.H, self.lo
        s0 = max(n - 1 - H, lo)  # s0 == n-1-H is final now; later positions are not
        if s0 > n - 1:
            return self.final  # empty window so far
        if H == 0 and self.ev is not None:  # every value is final at once
            v = self.ev(n - 1, n)
            if (v < self.final) if self.is_min else (v > self.final):
                self.final = v
            return self.final
        if self.ev is not None:
            ev = self.ev
            vals = [ev(s, n) for s in range(s0, n)]
        else:
            a = max(n - 1 - H, 0)
            rho = robustness(self.child, self._arrays(a, n))
            vals = rho[s0 - a :].tolist()
        if s0 == n - 1 - H:
            v = vals[0]
            if (v < self.final) if self.is_min else (v > self.final):
                self.final = v
            vals = vals[1:]
        if self.is_min:
            return min(self.final, min(vals)) if vals else self.final
        return max(self.final, max(vals)) if vals else self.final


class _Bounded(_Tracker):
    """A formula with a finite horizon H: rho(f, 0) is final once n > H."""

    def __init__(self, f: Formula, trace: dict[str, list[float]]) -> None:
        super().__init__(f, trace)
        self.H = f.horizon
        ev, work = _py_eval(f, trace)
        self.ev = ev if work <= _PY_WORK_LIMIT else None
        self.reset()

    def reset(self) -> None:
        """Forget the final value of a previous episode."""
        self.value = None

    def update(self, n: int) -> float:
        """Value on the prefix of length n (called once per n = 1, 2, ...)."""
        if self.value is not None:
            return self.value
        v = self.ev(0, n) if self.ev is not None else super().update(n)
        if n > self.H:
            self.value = v
        return v


def _tracker(f: Formula, trace: dict[str, list[float]]) -> _Tracker:
    g = nnf(f)
    if isinstance(g, (Always, Eventually)) and g.hi is None and g.child.horizon is not None:
        return _TopTemporal(g, trace)
    if g.horizon is not None:
        return _Bounded(g, trace)
    return _Tracker(g, trace)


class STLShaper:
    """Per-step STL shaping reward for one episode trace (modes: SHAPING_MODES)."""

    def __init__(
        self,
        specs: Mapping[str, tuple[str | Formula, float]] | None,
        mode: str = "incremental",
        *,
        gamma: float = 0.99,
        clip: float = 1.0,
        horizon: int | None = None,
    ) -> None:
        if mode not in SHAPING_MODES:
            raise ValueError(f"shaping: unknown mode {mode!r}; expected one of {SHAPING_MODES}")
        clip = check_number("clip", clip, lo=0.0, lo_open=True)
        gamma = check_number("gamma", gamma, lo=0.0, hi=1.0)
        if horizon is not None:
            horizon = check_int("horizon", horizon, lo=1)
        self.specs = validate_specs(specs, allowed=None)
        self.mode = mode
        self.gamma = gamma
        self.clip = clip
        self.horizon = horizon  # documentation / sanity only: traces may be any length
        self.names = tuple(self.specs)
        self.weights = [w for _, w in self.specs.values()]
        self.signal_names = tuple(sorted(set().union(*(f.signals for f, _ in self.specs.values()))))
        self._trace: dict[str, list[float]] = {k: [] for k in self.signal_names}
        self._trackers = [_tracker(f, self._trace) for f, _ in self.specs.values()]
        self.reset()

    def reset(self) -> None:
        """Start a new episode."""
        for xs in self._trace.values():
            xs.clear()
        for tr in self._trackers:
            tr.reset()
        self.t = 0
        self._rho: list[float] | None = None  # per-spec rho of the current prefix
        self._prev = 0.0  # R_total(t-1) (incremental) or Phi(t-1) (potential)
        self._done = False

    def step(self, signals: Mapping[str, Any], last: bool = False) -> float:
        """Append this step's signal values and return the weighted shaping reward."""
        if self._done:
            raise ValueError("step: the episode already ended (last=True); call reset() first")
        try:
            vals = [float(signals[k]) for k in self.signal_names]
        except KeyError as e:
            raise ValueError(
                f"signals: missing {e.args[0]!r} (needed by the STL specs); got {sorted(signals)}"
            ) from None
        for k, v in zip(self.signal_names, vals, strict=True):
            if v != v:
                raise ValueError(f"signals: {k!r} is NaN at step {self.t}")
        trace = self._trace
        for k, v in zip(self.signal_names, vals, strict=True):
            trace[k].append(v)
        self.t += 1
        self._done = bool(last)
        mode = self.mode
        if mode == "none" or (mode == "terminal" and not last):
            self._rho = None
            return 0.0
        if mode == "terminal":
            return self._total(self.episode_robustness().values())
        n = self.t
        rho = [tr.update(n) for tr in self._trackers]
        self._rho = rho
        total = self._total(rho)
        if mode == "incremental":
            r = total - self._prev
            self._prev = total
            return r
        # potential: gamma * Phi(s') - Phi(s); the terminal state's potential is 0
        r = (0.0 if last else self.gamma * total) - self._prev
        self._prev = total
        return r

    def _total(self, rhos: Iterable[float]) -> float:
        c = self.clip
        total = 0.0
        for w, r in zip(self.weights, rhos, strict=True):
            total += w * (c if r > c else (-c if r < -c else r))
        return total

    def potential(self) -> float:
        """Phi of the current prefix: sum_i w_i * clip(rho_i(prefix, 0)) (0 before any step)."""
        if self.t == 0:
            return 0.0
        return self._total(self.episode_robustness().values())

    def episode_robustness(self) -> dict[str, float]:
        """Unclipped rho_i(trace so far, 0) per spec name (ValueError before the first step)."""
        if self.t == 0:
            raise ValueError("episode_robustness: no step recorded since reset()")
        if self._rho is None:
            arrays = {k: np.asarray(v) for k, v in self._trace.items()}
            self._rho = [float(robustness(f, arrays)[0]) for f, _ in self.specs.values()]
        return dict(zip(self.names, self._rho, strict=True))
