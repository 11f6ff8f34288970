"""STL formula parser: grammar, precedence and error messages."""

from __future__ import annotations

import pytest

from marl_bft_rllib.stl import (
    Always,
    And,
    Eventually,
    Implies,
    Not,
    Or,
    Predicate,
    Until,
    parse,
)

a, b, c = Predicate("a", ">", 0.0), Predicate("b", "<=", 1.5), Predicate("c", ">=", -2.0)


def test_predicates_and_numbers() -> None:
    assert parse("a > 0") == a
    assert parse("b<=1.5") == b
    assert parse("c >= -2") == c
    assert parse("x < 1e-3") == Predicate("x", "<", 1e-3)
    assert parse("fp_window <= .1") == Predicate("fp_window", "<=", 0.1)


def test_precedence_and_associativity() -> None:
    # ! / G / F bind tightest, then U, &, |, and -> lowest (right-associative)
    assert parse("a > 0 & b <= 1.5 | c >= -2") == Or(And(a, b), c)
    assert parse("a > 0 | b <= 1.5 & c >= -2") == Or(a, And(b, c))
    assert parse("a > 0 -> b <= 1.5 -> c >= -2") == Implies(a, Implies(b, c))
    assert parse("a > 0 | b <= 1.5 -> c >= -2") == Implies(Or(a, b), c)
    assert parse("!a > 0 & b <= 1.5") == And(Not(a), b)
    assert parse("G a > 0 & b <= 1.5") == And(Always(a), b)
    assert parse("a > 0 U b <= 1.5 & c >= -2") == And(Until(a, b), c)
    assert parse("a > 0 U[1,2] b <= 1.5 U c >= -2") == Until(a, Until(b, c), 1, 2)
    assert parse("(a > 0 | b <= 1.5) & c >= -2") == And(Or(a, b), c)


def test_temporal_operators() -> None:
    assert parse("G[2,5](a > 0)") == Always(a, 2, 5)
    assert parse("F[0,3] a > 0") == Eventually(a, 0, 3)
    assert parse("F(G[0,3](a > 0))") == Eventually(Always(a, 0, 3))
    assert parse("G[1,inf](a > 0)") == Always(a, 1, None)
    assert parse("(a > 0) U[0,5] (b <= 1.5)") == Until(a, b, 0, 5)
    f = parse("G((threat > 0.5) -> F[0,3](restrictive > 0.5))")
    assert f.horizon is None and f.signals == {"threat", "restrictive"}
    assert parse("G[1,3](F[0,2](a > 0 U[1,3] b <= 1.5))").horizon == 8


def test_roundtrip_str() -> None:
    for text in ["G((a > 0) -> F[0,3](b <= 1.5))", "!(a > 0 U[1,4] b <= 1.5) | G[2,2] c >= -2"]:
        f = parse(text)
        assert parse(str(f)) == f


@pytest.mark.parametrize(
    "text,pos,expected",
    [
        ("", 0, "a formula"),
        ("a >", 3, "a number"),
        ("a > 0 &", 7, "a predicate"),
        ("G[2,1](a > 0)", 4, "interval end >= the start"),
        ("G[1 2](a > 0)", 4, "','"),
        ("(a > 0", 6, "')'"),
        ("a > 0 b > 1", 6, "an operator"),
        ("a = 1", 2, "unexpected character"),
        ("a 1", 2, "a comparison"),
        ("G[-1,2](a > 0)", 2, "an integer interval start"),
        ("F > 1", 2, "a predicate"),
    ],
)
def test_errors_name_position_and_expectation(text: str, pos: int, expected: str) -> None:
    with pytest.raises(ValueError, match=f"position {pos}") as e:
        parse(text)
    assert expected in str(e.value)


def test_non_string() -> None:
    with pytest.raises(ValueError, match="formula"):
        parse(None)  # type: ignore[arg-type]
