"""STL reward shaping: incremental prefix robustness, telescoping, potential, clip, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stl_strategies import bounded_formulas

from marl_bft_rllib.stl import (
    DEFAULT_SPECS,
    SHAPING_MODES,
    SIGNALS,
    Always,
    And,
    Eventually,
    Formula,
    Not,
    Predicate,
    STLShaper,
    Until,
    robustness,
    validate_specs,
)


def _episode(rng: np.random.Generator, T: int) -> list[dict[str, float]]:
    tr = {k: np.round(rng.random(T), 2) for k in SIGNALS}
    return [{k: float(tr[k][t]) for k in SIGNALS} for t in range(T)]


def _prefix_rho(formula: Formula, steps: list[dict[str, float]]) -> float:
    arrays = {k: np.array([s[k] for s in steps]) for k in formula.signals}
    return float(robustness(formula, arrays)[0])


@pytest.mark.parametrize("T", [1, 2, 5, 60])
def test_default_specs_prefix_values_match_full_reevaluation(T: int) -> None:
    rng = np.random.default_rng(T)
    steps = _episode(rng, T)
    specs = validate_specs(None)
    sh = STLShaper(None, "incremental")
    for t, s in enumerate(steps):
        sh.step(s, last=t == T - 1)
        got = sh.episode_robustness()
        for name, (f, _) in specs.items():
            assert got[name] == _prefix_rho(f, steps[: t + 1])


values = st.integers(-10, 10).map(lambda i: i / 10)
preds = st.builds(
    Predicate, st.sampled_from(["threat", "decided"]), st.sampled_from([">", "<="]), values
)
bounded = bounded_formulas(preds, max_lo=2, max_width=3, max_leaves=4)
# top-level G / F over a bounded formula (incremental path), bounded formulas, and others
shapes = st.one_of(
    st.builds(Always, bounded),
    st.builds(Eventually, bounded),
    st.builds(lambda c, lo: Always(c, lo, None), bounded, st.integers(1, 3)),
    st.builds(lambda c: Not(Eventually(c)), bounded),
    bounded,
    st.builds(lambda a, b: And(Always(a), Eventually(b)), bounded, bounded),
    st.builds(lambda a, b: Until(a, b), bounded, bounded),
)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 14), st.integers(0, 2**31))
def test_incremental_path_matches_prefix_reevaluation(f: Formula, T: int, seed: int) -> None:
    steps = _episode(np.random.default_rng(seed), T)
    sh = STLShaper({"spec": (f, 1.0)}, "incremental", clip=1e9)
    for t, s in enumerate(steps):
        sh.step(s)
        assert sh.episode_robustness()["spec"] == _prefix_rho(f, steps[: t + 1])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31), st.sampled_from([0.3, 1.0, 5.0]))
def test_incremental_telescopes_to_terminal(T: int, seed: int, clip: float) -> None:
    steps = _episode(np.random.default_rng(seed), T)
    specs = {**DEFAULT_SPECS, "agreement": ("G(agreement > 0.5)", 2.5)}
    inc = STLShaper(specs, "incremental", clip=clip)
    term = STLShaper(specs, "terminal", clip=clip)
    r_inc = [inc.step(s, last=t == T - 1) for t, s in enumerate(steps)]
    r_term = [term.step(s, last=t == T - 1) for t, s in enumerate(steps)]
    assert all(r == 0.0 for r in r_term[:-1])
    rho = term.episode_robustness()
    expected = sum(w * min(max(rho[n], -clip), clip) for n, (_, w) in specs.items())
    assert r_term[-1] == pytest.approx(expected, abs=1e-12)
    assert sum(r_inc) == pytest.approx(expected, abs=1e-9)
    assert inc.episode_robustness() == rho


def test_potential_follows_gamma_phi_next_minus_phi() -> None:
    rng = np.random.default_rng(3)
    steps = _episode(rng, 30)
    gamma = 0.9
    pot = STLShaper(None, "potential", gamma=gamma, clip=0.5)
    ref = STLShaper(None, "none", clip=0.5)
    phi_prev = 0.0  # Phi(-1) = 0
    for t, s in enumerate(steps):
        last = t == len(steps) - 1
        r = pot.step(s, last=last)
        ref.step(s)
        phi = ref.potential()
        # the terminal state's potential counts as 0 at the last step
        expected = (0.0 if last else gamma * phi) - phi_prev
        assert r == pytest.approx(expected, abs=1e-12)
        phi_prev = phi
    assert pot.potential() == pytest.approx(phi_prev)


def test_clip_and_modes() -> None:
    # G[5,9] on a 1-step trace is +inf: clipped to +clip
    sh = STLShaper({"far": ("G[5,9](threat > 0.5)", 2.0)}, "incremental", clip=0.75)
    assert sh.step({"threat": 0.0}) == 2.0 * 0.75
    assert sh.episode_robustness() == {"far": math.inf}
    big = STLShaper({"g": ("G(threat <= 10)", 1.0)}, "terminal", clip=1.0)
    assert big.step({"threat": 0.0}, last=True) == 1.0
    none = STLShaper(None, "none")
    steps = _episode(np.random.default_rng(0), 5)
    assert [none.step(s, last=i == 4) for i, s in enumerate(steps)] == [0.0] * 5
    specs = validate_specs(None)
    assert none.episode_robustness() == {n: _prefix_rho(f, steps) for n, (f, _) in specs.items()}
    with pytest.raises(ValueError, match="already ended"):
        none.step(steps[0])
    none.reset()
    none.step(steps[0])


def test_bad_specs_and_arguments() -> None:
    with pytest.raises(ValueError, match="stl_specs: spec 'bad': STL parse error at position"):
        validate_specs({"bad": ("G(threat >", 1.0)})
    with pytest.raises(ValueError, match="env_specs: spec 'w'.*finite"):
        validate_specs({"w": ("G(threat > 0)", math.nan)}, field="env_specs")
    with pytest.raises(ValueError, match="spec 'u'.*unknown signal.*'speed'"):
        validate_specs({"u": ("G(speed > 0)", 1.0)})
    assert "speed" in validate_specs({"u": ("G(speed > 0)", 1.0)}, allowed=None)["u"][0].signals
    with pytest.raises(ValueError, match="pair"):
        validate_specs({"p": "G(threat > 0)"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="spec 'p': weight: expected a number"):
        validate_specs({"p": ("G(threat > 0)", "1")})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="mode"):
        STLShaper(None, "sparse")
    for clip in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="clip"):
            STLShaper(None, clip=clip)
    with pytest.raises(ValueError, match="gamma"):
        STLShaper(None, gamma=1.5)
    with pytest.raises(ValueError, match="horizon"):
        STLShaper(None, horizon=0)
    sh = STLShaper(None)
    with pytest.raises(ValueError, match="missing 'threat'"):
        sh.step({k: 0.0 for k in SIGNALS if k != "threat"})
    with pytest.raises(ValueError, match="NaN"):
        sh.step({**{k: 0.0 for k in SIGNALS}, "decided": math.nan})
    with pytest.raises(ValueError, match="no step"):
        STLShaper(None).episode_robustness()
    assert SHAPING_MODES == ("none", "terminal", "incremental", "potential")
