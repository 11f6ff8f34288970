"""STL abstract syntax tree: immutable formula nodes, horizons and pretty-printing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Formula",
    "Predicate",
    "Not",
    "And",
    "Or",
    "Implies",
    "Always",
    "Eventually",
    "Until",
    "nnf",
]

COMPARISONS = (">", ">=", "<", "<=")


class Formula:
    """Base class of every STL formula node."""

    __slots__ = ()

    @property
    def horizon(self) -> int | None:
        """Steps of future the value at t depends on (None: unbounded)."""
        raise NotImplementedError

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        raise NotImplementedError

    def children(self) -> tuple[Formula, ...]:
        """Direct sub-formulas."""
        return ()


def _interval(lo: int, hi: int | None) -> str:
    return "" if hi is None and lo == 0 else f"[{lo},{'inf' if hi is None else hi}]"


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _max(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


@dataclass(frozen=True)
class Predicate(Formula):
    """Atomic predicate ``signal op threshold``; robustness x - c (>, >=) or c - x (<, <=)."""

    signal: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.op not in COMPARISONS:
            raise ValueError(f"op: expected one of {COMPARISONS}, got {self.op!r}")

    @property
    def horizon(self) -> int:
        """Steps of future the value at t depends on (None: unbounded)."""
        return 0

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        return frozenset((self.signal,))

    def __str__(self) -> str:
        return f"({self.signal} {self.op} {self.threshold!r})"


@dataclass(frozen=True)
class Not(Formula):
    """Negation: rho = -rho(child)."""

    child: Formula

    @property
    def horizon(self) -> int | None:
        """Steps of future the value at t depends on (None: unbounded)."""
        return self.child.horizon

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        return self.child.signals

    def children(self) -> tuple[Formula, ...]:
        """Direct sub-formulas."""
        return (self.child,)

    def __str__(self) -> str:
        return f"!{self.child}"


@dataclass(frozen=True)
class _Binary(Formula):
    left: Formula
    right: Formula

    @property
    def horizon(self) -> int | None:
        """Steps of future the value at t depends on (None: unbounded)."""
        return _max(self.left.horizon, self.right.horizon)

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        return self.left.signals | self.right.signals

    def children(self) -> tuple[Formula, ...]:
        """Direct sub-formulas."""
        return (self.left, self.right)


@dataclass(frozen=True)
class And(_Binary):
    """Conjunction: rho = min(rho(left), rho(right))."""

    def __str__(self) -> str:
        return f"({self.left} & {self.right})"


@dataclass(frozen=True)
class Or(_Binary):
    """Disjunction: rho = max(rho(left), rho(right))."""

    def __str__(self) -> str:
        return f"({self.left} | {self.right})"


@dataclass(frozen=True)
class Implies(_Binary):
    """Implication: rho = max(-rho(left), rho(right))."""

    def __str__(self) -> str:
        return f"({self.left} -> {self.right})"


@dataclass(frozen=True)
class _Temporal(Formula):
    child: Formula
    lo: int = 0
    hi: int | None = None

    def __post_init__(self) -> None:
        _check_interval(self.lo, self.hi)

    @property
    def horizon(self) -> int | None:
        """Steps of future the value at t depends on (None: unbounded)."""
        return _add(self.hi, self.child.horizon)

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        return self.child.signals

    def children(self) -> tuple[Formula, ...]:
        """Direct sub-formulas."""
        return (self.child,)


def _check_interval(lo: int, hi: int | None) -> None:
    if isinstance(lo, bool) or not isinstance(lo, int) or lo < 0:
        raise ValueError(f"lo: interval start must be an int >= 0, got {lo!r}")
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or hi < lo):
        raise ValueError(f"hi: interval end must be an int >= lo={lo} or None, got {hi!r}")


@dataclass(frozen=True)
class Always(_Temporal):
    """G[lo,hi] child: min of rho(child) over [t+lo, t+hi] cut at the trace end (+inf if empty)."""

    def __str__(self) -> str:
        return f"G{_interval(self.lo, self.hi)}{_paren(self.child)}"


@dataclass(frozen=True)
class Eventually(_Temporal):
    """F[lo,hi] child: max of rho(child) over [t+lo, t+hi] cut at the trace end (-inf if empty)."""

    def __str__(self) -> str:
        return f"F{_interval(self.lo, self.hi)}{_paren(self.child)}"


@dataclass(frozen=True)
class Until(Formula):
    """left U[lo,hi] right: max over t' of min(rho(right, t'), min of rho(left) over [t, t'))."""

    left: Formula
    right: Formula
    lo: int = 0
    hi: int | None = None

    def __post_init__(self) -> None:
        _check_interval(self.lo, self.hi)

    @property
    def horizon(self) -> int | None:
        """Steps of future the value at t depends on (None: unbounded)."""
        return _add(self.hi, _max(self.left.horizon, self.right.horizon))

    @property
    def signals(self) -> frozenset[str]:
        """Names of the signals the formula reads."""
        return self.left.signals | self.right.signals

    def children(self) -> tuple[Formula, ...]:
        """Direct sub-formulas."""
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"({self.left} U{_interval(self.lo, self.hi)} {self.right})"


def _paren(f: Formula) -> str:
    s = str(f)
    return s if s.startswith("(") and s.endswith(")") else f"({s})"


_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def nnf(f: Formula, negate: bool = False) -> Formula:
    """Negation normal form with the same robustness (pushes ``!`` into predicates; exact)."""
    if isinstance(f, Predicate):
        # -(x - c) == c - x exactly in IEEE arithmetic (up to the sign of zero).
        return Predicate(f.signal, _FLIP[f.op], f.threshold) if negate else f
    if isinstance(f, Not):
        return nnf(f.child, not negate)
    if isinstance(f, And):
        cls = Or if negate else And
        return cls(nnf(f.left, negate), nnf(f.right, negate))
    if isinstance(f, Or):
        cls = And if negate else Or
        return cls(nnf(f.left, negate), nnf(f.right, negate))
    if isinstance(f, Implies):
        if negate:
            return And(nnf(f.left), nnf(f.right, True))
        return Or(nnf(f.left, True), nnf(f.right))
    if isinstance(f, Always):
        cls = Eventually if negate else Always
        return cls(nnf(f.child, negate), f.lo, f.hi)
    if isinstance(f, Eventually):
        cls = Always if negate else Eventually
        return cls(nnf(f.child, negate), f.lo, f.hi)
    if isinstance(f, Until):
        u = Until(nnf(f.left), nnf(f.right), f.lo, f.hi)
        return Not(u) if negate else u
    raise TypeError(f"not an STL formula node: {f!r}")
