"""Property-based tests of the BFT invariants: agreement, validity, liveness, convictions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.bft import (
    BEHAVIORS,
    CERTIFICATES,
    BFTConfig,
    PBFTConsensus,
    proves_fault,
    robust_aggregate,
)

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def groups(draw: st.DrawFn, lossless: bool = False, sizes: tuple[int, ...] = ()) -> tuple:
    """A consensus group with b <= f, a behaviour subset, loss rates, a certificate rule, a seed."""
    sizes_st = st.sampled_from(sizes) if sizes else st.integers(4, 10) | st.sampled_from([13, 16])
    n = draw(sizes_st)
    f = (n - 1) // 3
    b = draw(st.integers(0, f))
    behaviors = tuple(draw(st.lists(st.sampled_from(BEHAVIORS), min_size=1, max_size=4)))
    p_drop = 0.0 if lossless else draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.7]))
    p_delay = 0.0 if lossless else draw(st.sampled_from([0.0, 0.05, 0.2]))
    cfg = BFTConfig(
        n_replicas=n,
        n_byzantine=b,
        byzantine_behaviors=behaviors,
        p_drop=p_drop,
        p_delay=p_delay,
        certificate=draw(st.sampled_from(CERTIFICATES)),
    )
    return cfg, draw(st.integers(0, 2**32 - 1))


def _episode(cfg: BFTConfig, seed: int, steps: int):
    """Yield (engine, honest votes, result) for `steps` instances with random honest votes."""
    bft = PBFTConsensus(cfg)
    rng = np.random.default_rng(seed)
    bft.reset(rng)
    skew = rng.dirichlet(np.ones(4))  # honest replicas agree more or less, per episode
    for _ in range(steps):
        votes = rng.choice(4, size=cfg.n_replicas, p=skew)
        yield bft, votes, bft.decide(votes)


@SETTINGS
@given(votes=st.lists(st.integers(0, 3), min_size=1, max_size=20), data=st.data())
def test_robust_aggregate_lies_within_honest_votes(votes: list[int], data: st.DataObject) -> None:
    f = data.draw(st.integers(0, (len(votes) - 1) // 2))
    n_byz = data.draw(st.integers(0, f))
    byz = data.draw(st.lists(st.integers(0, 3), min_size=n_byz, max_size=n_byz))
    honest = votes[: len(votes) - n_byz] if n_byz else votes
    allv = honest + byz if n_byz else votes
    if len(allv) <= 2 * f:
        return
    d = robust_aggregate(allv, f)
    assert min(honest) <= d <= max(honest)


@SETTINGS
@given(groups())
def test_agreement_validity_and_no_honest_conviction(group: tuple) -> None:
    cfg, seed = group
    for bft, votes, r in _episode(cfg, seed, 60):
        commits = r.honest_commits[list(bft.honest)]
        assert len(set(commits[commits >= 0].tolist())) <= 1  # agreement
        assert (r.honest_commits[list(bft.byzantine)] == -1).all()
        assert not r.agreement_violation and not r.validity_violation
        if r.committed:
            assert r.decision in commits
            honest_in = [i for i in bft.honest if r.certificate[i]]
            assert honest_in  # b <= f: n - f votes always hold an honest one
            hv = votes[honest_in]
            assert hv.min() <= r.decision <= hv.max()  # validity
        else:
            assert r.decision == cfg.fail_safe_action and (r.honest_commits == -1).all()
        assert not bft.convicted[list(bft.honest)].any()
        for i in np.flatnonzero(bft.convicted):
            assert bft.behaviors[int(i)] == "equivocate"
            a, b = bft.evidence[int(i)]
            assert proves_fault(a, b) and a.sender == i
    stats = bft.stats()
    assert stats["agreement_violations"] == 0 and stats["validity_violations"] == 0


@SETTINGS
@given(groups(lossless=True, sizes=(4, 5, 6, 7, 8, 9, 10, 13, 16)))
def test_liveness_without_losses(group: tuple) -> None:
    cfg, seed = group
    steps = 0
    for bft, _, r in _episode(cfg, seed, 40):
        assert r.committed, (bft.behaviors, r)
        assert r.view_changes <= cfg.f  # committed within f + 1 views
        steps += 1
        # equivocators have been caught as soon as one instance ran with them
        for i, name in bft.behaviors.items():
            if name == "equivocate":
                assert bft.convicted[i]
    stats = bft.stats()
    assert stats["undecided"] == 0 and stats["views"] <= steps + cfg.f * cfg.n_byzantine


@SETTINGS
@given(groups(), st.integers(0, 2**16))
def test_stats_are_sums_of_results(group: tuple, _salt: int) -> None:
    cfg, seed = group
    total_msgs = undecided = changes = conv = 0
    for _bft, _, r in _episode(cfg, seed, 30):
        total_msgs += r.messages
        undecided += not r.committed
        changes += r.view_changes
        conv += len(r.newly_convicted)
        assert r.messages >= 0 and 0 <= r.view_changes <= cfg.deadline
    stats = _bft.stats()
    assert stats["messages"] == total_msgs and stats["undecided"] == undecided
    assert stats["view_changes"] == changes and stats["convictions"] == conv
    assert conv == int(_bft.convicted.sum())


@settings(max_examples=15, deadline=None)
@given(
    n=st.sampled_from([4, 5, 7, 10]),
    extra=st.integers(1, 2),
    behaviors=st.lists(st.sampled_from(BEHAVIORS), min_size=1, max_size=3),
    p_drop=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_beyond_f_keeps_running_and_reports(
    n: int, extra: int, behaviors: list[str], p_drop: float, seed: int
) -> None:
    b = min((n - 1) // 3 + extra, n - 1)
    cfg = BFTConfig(n_replicas=n, n_byzantine=b, byzantine_behaviors=behaviors, p_drop=p_drop)
    agreement = validity = 0
    for bft, _, r in _episode(cfg, seed, 150):
        agreement += r.agreement_violation
        validity += r.validity_violation
        commits = r.honest_commits[list(bft.honest)]
        # the flag is exactly "two honest replicas committed different decisions"
        assert r.agreement_violation == (len(set(commits[commits >= 0].tolist())) > 1)
        assert not bft.convicted[list(bft.honest)].any()
    stats = bft.stats()
    assert stats["agreement_violations"] == agreement and stats["validity_violations"] == validity


def test_colluding_equivocators_beyond_f_break_agreement_and_it_is_reported() -> None:
    """n = 4, b = 2: an equivocating primary plus a colluding equivocator split the honest pair."""
    cfg = BFTConfig(n_replicas=4, n_byzantine=2)
    bft = PBFTConsensus(cfg)
    bft.reset(np.random.default_rng(0), byzantine=[0, 1], behaviors="equivocate")
    r = bft.decide(np.array([0, 0, 0, 3]))
    assert r.agreement_violation
    assert r.honest_commits[2] != r.honest_commits[3] and (r.honest_commits[2:] >= 0).all()
    assert bft.stats()["agreement_violations"] == 1
    assert set(r.newly_convicted) == {0, 1}  # the split itself proves both faulty
    for _ in range(50):  # and the group keeps running
        bft.decide(np.array([1, 1, 1, 1]))
    assert bft.stats()["agreement_violations"] == 1


def test_colluding_insiders_beyond_f_break_validity_and_it_is_reported() -> None:
    """n = 4, b = 2 always_allow: certificates with both insiders override an honest Quarantine."""
    bft = PBFTConsensus(BFTConfig(n_replicas=4, n_byzantine=2))
    bft.reset(np.random.default_rng(0), byzantine=[1, 2], behaviors="always_allow")
    results = [bft.decide(np.array([3, 0, 0, 3])) for _ in range(60)]
    bad = [r for r in results if r.validity_violation]
    assert bad and bft.stats()["validity_violations"] == len(bad)
    for r in bad:
        assert r.decision == 0 and r.certificate[1] and r.certificate[2]
