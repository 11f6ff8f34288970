"""Unit tests of the BFT consensus layer: config, aggregation, protocol scenarios."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft import (
    BEHAVIORS,
    CERTIFICATES,
    BFTConfig,
    ConsensusResult,
    PBFTConsensus,
    proves_fault,
    robust_aggregate,
)
from marl_bft_rllib.metrics import BFT_STAT_KEYS


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_replicas": 3, "n_byzantine": 1}, "n_replicas"),
        ({"n_replicas": 4, "n_byzantine": 4}, "n_byzantine"),
        ({"n_byzantine": -1}, "n_byzantine"),
        ({"n_replicas": 0, "n_byzantine": 0}, "n_replicas"),
        ({"n_replicas": 4.0}, "n_replicas"),
        ({"byzantine_behaviors": ("silent", "sneaky")}, "sneaky"),
        ({"byzantine_behaviors": ()}, "byzantine_behaviors"),
        ({"p_drop": 1.5}, "p_drop"),
        ({"p_drop": -0.1}, "p_drop"),
        ({"p_drop": float("nan")}, "p_drop"),
        ({"p_delay": 2}, "p_delay"),
        ({"deadline_views": 0}, "deadline_views"),
        ({"fail_safe_action": 7}, "fail_safe_action"),
        ({"fail_safe_action": "ignore"}, "fail_safe_action"),
        ({"on_off_period": 0}, "on_off_period"),
        ({"certificate": "all"}, "certificate"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BFTConfig(**kwargs)


def test_config_normalises_and_derives() -> None:
    cfg = BFTConfig(
        n_replicas=np.int64(7),
        n_byzantine=2,
        byzantine_behaviors=["silent", "delay"],
        fail_safe_action="block",
    )
    assert cfg.byzantine_behaviors == ("silent", "delay")
    assert cfg.fail_safe_action == Action.BLOCK and type(cfg.fail_safe_action) is int
    assert cfg.f == 2 and cfg.deadline == 3
    assert BFTConfig(deadline_views=5).deadline == 5
    assert [BFTConfig(n_replicas=n, n_byzantine=0).f for n in (1, 3, 4, 6, 7, 10, 16)] == [
        0,
        0,
        1,
        1,
        2,
        3,
        5,
    ]
    # no Byzantine: small groups and an empty behaviour set are fine
    BFTConfig(n_replicas=2, n_byzantine=0, byzantine_behaviors=())


# ---------------------------------------------------------------- aggregation
def test_robust_aggregate_trims_f_each_side() -> None:
    assert robust_aggregate([0, 0, 3], 1) == 0
    assert robust_aggregate([3, 3, 0], 1) == 3
    assert robust_aggregate([0, 1, 2, 3, 3], 1) == 3
    assert robust_aggregate(np.array([0, 1, 2, 3, 3]), 2) == 2
    assert robust_aggregate([2], 0) == 2
    with pytest.raises(ValueError, match="votes"):
        robust_aggregate([0, 1], 1)


# ---------------------------------------------------------------- helpers
def _run(
    cfg: BFTConfig, steps: int, seed: int = 0, **reset_kwargs
) -> tuple[PBFTConsensus, list[ConsensusResult]]:
    bft = PBFTConsensus(cfg)
    rng = np.random.default_rng(seed)
    bft.reset(rng, **reset_kwargs)
    votes = rng.integers(0, 4, size=(steps, cfg.n_replicas))
    return bft, [bft.decide(v) for v in votes]


# ---------------------------------------------------------------- protocol
def test_honest_run_message_count_and_outputs() -> None:
    bft, results = _run(BFTConfig(n_byzantine=0), 5)
    for r in results:
        assert r.committed and r.view == 0 and r.view_changes == 0
        # 3 votes + 3 pre-prepares + 3 backups x 3 prepares + 4 replicas x 3 commits
        assert r.messages == 27
        assert r.certificate.sum() == 3 and r.certificate[0]  # primary's own vote is in it
        assert (r.honest_commits == r.decision).all()
        assert r.revealed_votes.dtype == np.int8 and (r.revealed_votes >= 0).sum() == 3
    stats = bft.stats()
    assert tuple(stats) == BFT_STAT_KEYS
    assert stats["views"] == 5 and stats["messages"] == 5 * 27 and stats["undecided"] == 0


def test_decision_is_robust_aggregate_of_certificate() -> None:
    cfg = BFTConfig(n_replicas=7, n_byzantine=2, p_drop=0.05)
    bft = PBFTConsensus(cfg)
    rng = np.random.default_rng(3)
    bft.reset(rng)
    for _ in range(200):
        votes = rng.integers(0, 4, size=7)
        r = bft.decide(votes)
        if r.committed:
            cert_votes = r.revealed_votes[r.certificate]
            assert (cert_votes >= 0).all() and len(cert_votes) == cfg.n_replicas - cfg.f
            assert r.decision == robust_aggregate(cert_votes, cfg.f)
            honest_in = [i for i in np.flatnonzero(r.certificate) if i in bft.honest]
            assert all(r.revealed_votes[i] == votes[i] for i in honest_in)


def test_byzantine_entries_of_votes_are_ignored() -> None:
    cfg = BFTConfig(n_replicas=7, n_byzantine=2)
    a, b = PBFTConsensus(cfg), PBFTConsensus(cfg)
    a.reset(np.random.default_rng(1))
    b.reset(np.random.default_rng(1))
    rng = np.random.default_rng(2)
    for _ in range(50):
        votes = rng.integers(0, 4, size=7)
        other = votes.copy()
        other[list(a.byzantine)] = [3 - x for x in other[list(a.byzantine)]]
        ra, rb = a.decide(votes), b.decide(other)
        assert ra.decision == rb.decision
        assert np.array_equal(ra.certificate, rb.certificate)


def test_votes_are_validated() -> None:
    bft = PBFTConsensus(BFTConfig(n_byzantine=0))
    with pytest.raises(ValueError, match="votes"):
        bft.decide(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="votes"):
        bft.decide(np.array([0, 1, 4, 0]))
    with pytest.raises(ValueError, match="votes"):
        bft.decide(np.array([0, -1, 0, 0]))


def test_same_seed_same_episode() -> None:
    cfg = BFTConfig(n_replicas=7, n_byzantine=2, p_drop=0.1, p_delay=0.05)
    a, ra = _run(cfg, 100, seed=11)
    b, rb = _run(cfg, 100, seed=11)
    assert a.byzantine == b.byzantine and a.behaviors == b.behaviors
    assert [r.decision for r in ra] == [r.decision for r in rb]
    assert a.stats() == b.stats()


def test_reset_pins_byzantine_and_behaviours_and_rejects_bad_pins() -> None:
    bft = PBFTConsensus(BFTConfig(n_replicas=7, n_byzantine=2))
    rng = np.random.default_rng(0)
    bft.reset(rng, byzantine=[5, 2], behaviors=["delay", "silent"])
    assert bft.byzantine == (2, 5) and bft.honest == (0, 1, 3, 4, 6)
    assert bft.behaviors == {2: "delay", 5: "silent"}
    bft.reset(rng, byzantine=(1, 4), behaviors={4: "random", 1: "on_off"})
    assert bft.behaviors == {1: "on_off", 4: "random"}
    bft.reset(rng, behaviors="equivocate")
    assert set(bft.behaviors.values()) == {"equivocate"}
    for kwargs in (
        {"byzantine": [1]},
        {"byzantine": [1, 1]},
        {"byzantine": [1, 9]},
        {"byzantine": [1, 2], "behaviors": ["silent"]},
        {"byzantine": [1, 2], "behaviors": {1: "silent", 3: "silent"}},
        {"behaviors": "lazy"},
    ):
        with pytest.raises(ValueError, match="byzantine|behaviors"):
            bft.reset(rng, **kwargs)


def test_reset_samples_from_configured_behaviours() -> None:
    cfg = BFTConfig(n_replicas=10, n_byzantine=3, byzantine_behaviors=("delay", "random"))
    bft = PBFTConsensus(cfg)
    seen = set()
    for seed in range(20):
        bft.reset(np.random.default_rng(seed))
        assert len(bft.byzantine) == 3 and set(bft.byzantine).isdisjoint(bft.honest)
        seen |= set(bft.behaviors.values())
    assert seen == {"delay", "random"}


def test_silent_primary_forces_one_view_change_then_commits() -> None:
    bft = PBFTConsensus(BFTConfig())
    bft.reset(np.random.default_rng(0), byzantine=[0], behaviors=["silent"])
    r = bft.decide(np.array([0, 2, 2, 2]))
    assert r.committed and r.view == 1 and r.primary == 1 and r.view_changes == 1
    assert r.decision == 2 and not r.certificate[0]
    assert bft.view == 1 and bft.primary == 1
    r2 = bft.decide(np.array([0, 1, 1, 1]))
    assert r2.view == 1 and r2.view_changes == 0  # a good primary keeps its view
    assert bft.stats()["view_changes"] == 1 and bft.stats()["views"] == 3


def test_undecided_instance_applies_fail_safe_and_next_step_changes_view() -> None:
    cfg = BFTConfig(deadline_views=1, fail_safe_action=Action.QUARANTINE)
    bft = PBFTConsensus(cfg)
    bft.reset(np.random.default_rng(0), byzantine=[0], behaviors=["delay"])
    r = bft.decide(np.array([0, 0, 0, 0]))
    assert not r.committed and r.decision == Action.QUARANTINE
    assert (r.honest_commits == -1).all() and not r.certificate.any()
    assert r.view == 0 and bft.view == 1 and r.view_changes == 1
    r2 = bft.decide(np.array([0, 0, 0, 0]))
    assert r2.committed and r2.view == 1 and r2.decision == 0
    # the second instance opened with VIEW-CHANGE messages from all 4 active replicas
    assert r2.messages == 4 * 3 + 27
    assert bft.stats()["undecided"] == 1


def test_all_messages_dropped_never_commits_and_never_raises() -> None:
    bft, results = _run(BFTConfig(n_replicas=7, n_byzantine=2, p_drop=1.0), 30)
    assert all(not r.committed and r.decision == Action.ALERT for r in results)
    assert bft.stats()["undecided"] == 30
    assert bft.view == 30 * bft.config.deadline


def test_equivocating_primary_is_convicted_with_proof_and_skipped() -> None:
    bft = PBFTConsensus(BFTConfig())
    bft.reset(np.random.default_rng(0), byzantine=[0], behaviors=["equivocate"])
    r = bft.decide(np.array([0, 0, 3, 3]))
    assert r.newly_convicted == (0,) and bft.convicted.tolist() == [True, False, False, False]
    a, b = bft.evidence[0]
    assert proves_fault(a, b) and a.sender == 0
    r2 = bft.decide(np.array([0, 1, 1, 1]))
    assert r2.committed and r2.primary == 1 and not r2.certificate[0]
    assert r2.view_changes == 1  # the convicted primary's view is skipped
    for _ in range(20):
        r = bft.decide(np.array([0, 3, 3, 3]))
        assert not r.certificate[0] and r.decision == 3
    assert bft.stats()["convictions"] == 1


def test_equivocating_backup_is_convicted_and_excluded() -> None:
    bft = PBFTConsensus(BFTConfig(n_replicas=7, n_byzantine=2))
    bft.reset(np.random.default_rng(0), byzantine=[3, 5], behaviors=["equivocate", "random"])
    r = bft.decide(np.array([1, 1, 1, 0, 1, 0, 1]))
    assert r.committed and r.newly_convicted == (3,)
    a, b = bft.evidence[3]
    assert proves_fault(a, b) and a.sender == 3
    for _ in range(30):
        assert not bft.decide(np.array([2, 2, 2, 0, 2, 0, 2])).certificate[3]


def test_selective_primary_leaves_out_most_severe_votes() -> None:
    bft = PBFTConsensus(BFTConfig(n_replicas=7, n_byzantine=1))
    bft.reset(np.random.default_rng(0), byzantine=[0], behaviors=["selective_primary"])
    for _ in range(20):
        votes = np.array([0, 0, 1, 1, 3, 3, 3])
        r = bft.decide(votes)
        in_cert = r.revealed_votes[r.certificate]
        assert r.primary == 0 and r.certificate[0]
        # the 5 least severe of all 7 votes (its own honest-looking one included): two 3s are out
        everything = [int(r.revealed_votes[0]), *votes[1:].tolist()]
        assert sorted(in_cert.tolist()) == sorted(everything)[:5]
        assert r.decision == robust_aggregate(in_cert, 2) <= 1


def test_on_off_alternates_honest_and_allow_phases() -> None:
    cfg = BFTConfig(n_replicas=4, n_byzantine=1, on_off_period=3)
    bft = PBFTConsensus(cfg)
    bft.reset(np.random.default_rng(0), byzantine=[1], behaviors=["on_off"])
    revealed = []
    for _ in range(12):
        r = bft.decide(np.array([3, 0, 3, 3]))
        assert r.primary == 0
        revealed.append(int(r.revealed_votes[1]))
    for step, x in enumerate(revealed):
        if (step // 3) % 2 == 1:
            assert x in (-1, 0)  # malicious phase votes Allow
        else:
            assert x in (-1, 3)  # honest phase looks honest
    assert 0 in revealed and 3 in revealed


@pytest.mark.parametrize("p_drop", [0.0, 0.2])
def test_certificate_sizes_follow_the_rule(p_drop: float) -> None:
    sizes = {}
    for certificate in CERTIFICATES:
        bft = PBFTConsensus(
            BFTConfig(n_replicas=7, n_byzantine=0, p_drop=p_drop, certificate=certificate)
        )
        bft.reset(np.random.default_rng(3))
        rng = np.random.default_rng(4)
        sizes[certificate] = {
            int(r.certificate.sum())
            for r in (bft.decide(rng.integers(0, 4, size=7)) for _ in range(200))
            if r.committed
        }
    assert sizes["quorum"] == {5}  # n - f, whatever arrived
    if p_drop:  # every vote that reached the primary in time: n - f up to n
        assert sizes["all_timely"] == {5, 6, 7}
    else:
        assert sizes["all_timely"] == {7}


def test_all_timely_certificate_keeps_the_honest_majority_against_an_insider() -> None:
    # honest votes Block, Block, Allow; replica 3 always votes Allow. A certificate of
    # n - f = 3 votes holding both Allows decides Allow; all four votes decide Block.
    votes = np.array([Action.BLOCK, Action.BLOCK, Action.ALLOW, Action.BLOCK])
    decisions = {}
    for certificate in CERTIFICATES:
        bft = PBFTConsensus(BFTConfig(certificate=certificate))
        bft.reset(np.random.default_rng(0), byzantine=[3], behaviors="always_allow")
        decisions[certificate] = {int(bft.decide(votes).decision) for _ in range(60)}
    assert decisions["all_timely"] == {Action.BLOCK}
    assert decisions["quorum"] == {Action.ALLOW, Action.BLOCK}


@pytest.mark.parametrize("certificate", CERTIFICATES)
@pytest.mark.parametrize("seed", range(6))
def test_fast_path_equals_full_simulation(
    seed: int, certificate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    for n in (4, 5, 7, 10, 13):
        f = (n - 1) // 3
        b = int(rng.integers(0, f + 1))
        behaviors = list(rng.choice(BEHAVIORS, size=b)) or None
        cfg = BFTConfig(n_replicas=n, n_byzantine=b, certificate=certificate)
        fast, full = PBFTConsensus(cfg), PBFTConsensus(cfg)
        # run the full simulation even where the fast path applies
        monkeypatch.setattr(full, "_view_fast", full._view_full)
        fast.reset(np.random.default_rng(seed), behaviors=behaviors)
        full.reset(np.random.default_rng(seed), behaviors=behaviors)
        for votes in rng.integers(0, 4, size=(40, n)):
            x, y = fast.decide(votes), full.decide(votes)
            for field in dataclasses.fields(x):
                assert np.array_equal(getattr(x, field.name), getattr(y, field.name)), field.name
        assert fast.stats() == full.stats()


def test_reset_clears_episode_state() -> None:
    bft = PBFTConsensus(BFTConfig(p_drop=0.3))
    bft.reset(np.random.default_rng(0), byzantine=[0], behaviors="equivocate")
    for _ in range(20):
        bft.decide(np.array([1, 1, 1, 1]))
    assert bft.stats()["views"] > 0
    bft.reset(np.random.default_rng(1))
    assert bft.view == 0 and bft.seq == 0 and not bft.convicted.any() and not bft.evidence
    assert set(bft.stats().values()) == {0}
