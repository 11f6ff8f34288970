"""Hypothesis strategies for random bounded STL formulas, shared by the STL tests."""

from __future__ import annotations

from hypothesis import strategies as st

from marl_bft_rllib.stl import Always, And, Eventually, Formula, Implies, Not, Or, Until


def bounded_formulas(
    preds: st.SearchStrategy[Formula], max_lo: int, max_width: int, max_leaves: int
) -> st.SearchStrategy[Formula]:
    """Formulas over ``preds`` with every temporal interval [lo, lo + width] bounded."""
    intervals = st.tuples(st.integers(0, max_lo), st.integers(0, max_width)).map(
        lambda p: (p[0], p[0] + p[1])
    )

    def extend(children: st.SearchStrategy[Formula]) -> st.SearchStrategy[Formula]:
        """One more operator on top of ``children``."""
        return st.one_of(
            st.builds(Not, children),
            st.builds(And, children, children),
            st.builds(Or, children, children),
            st.builds(Implies, children, children),
            st.builds(lambda c, i: Always(c, *i), children, intervals),
            st.builds(lambda c, i: Eventually(c, *i), children, intervals),
            st.builds(lambda x, y, i: Until(x, y, *i), children, children, intervals),
        )

    return st.recursive(preds, extend, max_leaves=max_leaves)
