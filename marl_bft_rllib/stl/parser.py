"""Recursive-descent parser for the STL formula grammar (see docs/stl.md).

Grammar, lowest precedence first (binary operators are right-associative)::

    formula := implies
    implies := or ( "->" implies )?
    or      := and ( "|" and )*
    and     := until ( "&" until )*
    until   := unary ( "U" interval? until )?
    unary   := "!" unary | ("G" | "F") interval? unary | atom
    atom    := "(" formula ")" | NAME (">" | ">=" | "<" | "<=") NUMBER
    interval:= "[" INT "," (INT | "inf") "]"

``G``, ``F`` and ``U`` are reserved words and cannot be signal names.
"""

from __future__ import annotations

import re
from functools import lru_cache

from marl_bft_rllib.stl.ast import (
    Always,
    And,
    Eventually,
    Formula,
    Implies,
    Not,
    Or,
    Predicate,
    Until,
)

__all__ = ["parse"]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>->|>=|<=|>|<|!|&|\||\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)
_RESERVED = {"G", "F", "U"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(
                    f"STL parse error at position {pos}: unexpected character {text[pos]!r} "
                    f"in {text!r}"
                )
            kind = m.lastgroup
            if kind != "ws":
                val = m.group()
                if kind == "name" and val in _RESERVED:
                    kind = "op"
                self.toks.append((kind, val, pos))
            pos = m.end()
        self.toks.append(("end", "", len(text)))
        self.i = 0

    # -- helpers -------------------------------------------------------------------
    def peek(self) -> tuple[str, str, int]:
        """The current token (kind, value, position), not consumed."""
        return self.toks[self.i]

    def error(self, expected: str) -> ValueError:
        """A parse error naming what was expected and what was found at the current token."""
        kind, val, pos = self.peek()
        got = "end of input" if kind == "end" else repr(val)
        return ValueError(
            f"STL parse error at position {pos}: expected {expected}, got {got} in {self.text!r}"
        )

    def accept(self, val: str) -> bool:
        """Consume the current token if it is the operator ``val``; say whether it was."""
        kind, v, _ = self.peek()
        if kind == "op" and v == val:
            self.i += 1
            return True
        return False

    def expect(self, val: str, what: str | None = None) -> None:
        """Consume the operator ``val`` or raise a parse error."""
        if not self.accept(val):
            raise self.error(what or repr(val))

    # -- grammar -------------------------------------------------------------------
    def formula(self) -> Formula:
        """Parse ``formula := or ( '->' formula )?``."""
        left = self.or_()
        if self.accept("->"):
            return Implies(left, self.formula())
        return left

    def or_(self) -> Formula:
        """Parse ``or := and ( '|' and )*``."""
        left = self.and_()
        while self.accept("|"):
            left = Or(left, self.and_())
        return left

    def and_(self) -> Formula:
        """Parse ``and := until ( '&' until )*``."""
        left = self.until()
        while self.accept("&"):
            left = And(left, self.until())
        return left

    def until(self) -> Formula:
        """Parse ``until := unary ( 'U' interval? until )?``."""
        left = self.unary()
        if self.accept("U"):
            lo, hi = self.interval()
            return Until(left, self.until(), lo, hi)
        return left

    def unary(self) -> Formula:
        """Parse ``unary := '!' unary | ('G' | 'F') interval? unary | atom``."""
        if self.accept("!"):
            return Not(self.unary())
        for name, cls in (("G", Always), ("F", Eventually)):
            if self.accept(name):
                lo, hi = self.interval()
                return cls(self.unary(), lo, hi)
        return self.atom()

    def interval(self) -> tuple[int, int | None]:
        """Parse an optional ``[lo,hi]`` interval; ``(0, None)`` when absent."""
        if not self.accept("["):
            return 0, None
        lo = self.integer("an integer interval start >= 0")
        self.expect(",", "',' between the interval bounds")
        kind, val, _ = self.peek()
        if kind == "name" and val == "inf":
            self.i += 1
            hi: int | None = None
        else:
            hi = self.integer("an integer interval end or 'inf'")
            if hi < lo:
                self.i -= 1
                raise self.error(f"an interval end >= the start {lo}")
        self.expect("]", "']' closing the interval")
        return lo, hi

    def integer(self, what: str) -> int:
        """Parse a non-negative integer literal, or raise naming ``what`` was expected."""
        kind, val, _ = self.peek()
        if kind != "num" or not val.isdigit():
            raise self.error(what)
        self.i += 1
        return int(val)

    def atom(self) -> Formula:
        """Parse ``atom := '(' formula ')' | NAME comparison NUMBER``."""
        if self.accept("("):
            f = self.formula()
            self.expect(")", "')'")
            return f
        kind, val, _ = self.peek()
        if kind != "name":
            raise self.error("a predicate 'signal > number', '(', '!', 'G' or 'F'")
        self.i += 1
        kind2, op, _ = self.peek()
        if kind2 != "op" or op not in (">", ">=", "<", "<="):
            raise self.error(f"a comparison '>', '>=', '<' or '<=' after signal {val!r}")
        self.i += 1
        kind3, num, _ = self.peek()
        if kind3 != "num":
            raise self.error(f"a number after '{val} {op}'")
        self.i += 1
        return Predicate(val, op, float(num))


def parse(text: str) -> Formula:
    """Parse an STL formula string into a Formula (ValueError with position on bad input)."""
    if not isinstance(text, str):
        raise ValueError(f"formula: expected a string, got {type(text).__name__}")
    return _parse(text)


@lru_cache(maxsize=1024)
def _parse(text: str) -> Formula:
    p = _Parser(text)
    if p.peek()[0] == "end":
        raise p.error("a formula")
    f = p.formula()
    if p.peek()[0] != "end":
        raise p.error("an operator ('&', '|', '->', 'U') or end of input")
    return f
