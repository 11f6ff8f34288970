"""Learned Byzantine attackers' per-instance strategies, and the non-BFT baseline decision rules."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft import (
    ATTACKER_STRATEGIES,
    BEHAVIORS,
    CERTIFICATES,
    DECISION_RULES,
    LEARNED,
    N_STRATEGIES,
    STRATEGY_REGISTRY,
    BFTConfig,
    NaiveMajority,
    PBFTConsensus,
    RandomReplica,
    proves_fault,
    robust_aggregate,
)
from marl_bft_rllib.bft import byzantine as bz

SETTINGS = settings(max_examples=40, deadline=None)
S = {name: k for k, name in enumerate(ATTACKER_STRATEGIES)}  # strategy name -> action index
VOTE_STRATEGIES = ("vote_allow", "vote_alert", "vote_block", "vote_quarantine")


# ---------------------------------------------------------------- helpers
@st.composite
def groups(draw: st.DrawFn, lossless: bool = False, sizes: tuple[int, ...] = ()) -> tuple:
    """A group with b <= f, each Byzantine learned or scripted, a strategy pool, loss, a seed.

    The certificate rule is drawn too.
    """
    sizes_st = st.sampled_from(sizes) if sizes else st.integers(4, 10) | st.sampled_from([13, 16])
    n = draw(sizes_st)
    f = (n - 1) // 3
    b = draw(st.integers(0, f))
    names = [draw(st.sampled_from((LEARNED, LEARNED, LEARNED, *BEHAVIORS))) for _ in range(b)]
    pool = tuple(draw(st.lists(st.integers(0, N_STRATEGIES - 1), min_size=1, max_size=4)))
    p_drop = 0.0 if lossless else draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.7]))
    p_delay = 0.0 if lossless else draw(st.sampled_from([0.0, 0.05, 0.2]))
    certificate = draw(st.sampled_from(CERTIFICATES))
    cfg = BFTConfig(
        n_replicas=n, n_byzantine=b, p_drop=p_drop, p_delay=p_delay, certificate=certificate
    )
    return cfg, names, pool, draw(st.integers(0, 2**32 - 1))


def _episode(cfg: BFTConfig, names: list[str], pool: tuple[int, ...], seed: int, steps: int):
    """Yield (engine, honest votes, strategies, result) with random strategies per instance."""
    bft = PBFTConsensus(cfg)
    rng = np.random.default_rng(seed)
    bft.reset(rng, behaviors=names)
    learned = [i for i, name in bft.behaviors.items() if name == LEARNED]
    skew = rng.dirichlet(np.ones(4))  # honest replicas agree more or less, per episode
    for _ in range(steps):
        votes = rng.choice(4, size=cfg.n_replicas, p=skew)
        strategies = {i: int(rng.choice(pool)) for i in learned}
        bft.act_as(strategies)
        yield bft, votes, strategies, bft.decide(votes)


def _learned_group(n: int = 4, at: int = 0, **cfg: object) -> PBFTConsensus:
    """A group with one learned attacker at replica `at`."""
    bft = PBFTConsensus(BFTConfig(n_replicas=n, n_byzantine=1, **cfg))
    bft.reset(np.random.default_rng(0), byzantine=[at], behaviors=LEARNED)
    return bft


def _step(bft: PBFTConsensus, strategy: str, votes: list[int]):
    """One instance with every learned replica playing `strategy`."""
    learned = [i for i, name in bft.behaviors.items() if name == LEARNED]
    bft.act_as(dict.fromkeys(learned, S[strategy]))
    return bft.decide(np.array(votes))


# ---------------------------------------------------------------- the strategy registry
def test_strategy_registry_order_codes_and_docs() -> None:
    assert ATTACKER_STRATEGIES == (
        "vote_allow",
        "vote_alert",
        "vote_block",
        "vote_quarantine",
        "equivocate",
        "silent",
        "delay",
        "omit",
        "stall",
    )
    assert N_STRATEGIES == 9 and tuple(STRATEGY_REGISTRY) == ATTACKER_STRATEGIES
    first = len(BEHAVIORS) + 1
    assert [s.code for s in STRATEGY_REGISTRY.values()] == list(range(first, first + 9))
    assert len(bz.VOTE_RULES) == len(bz.PRIMARY_RULES) == first + 9
    messages = {name: s.messages for name, s in STRATEGY_REGISTRY.items()}
    assert messages["silent"] == "none" and messages["delay"] == "late"
    assert messages["equivocate"] == "conflicting"
    assert {messages[k] for k in (*VOTE_STRATEGIES, "omit", "stall")} == {"protocol"}
    code = {name: s.code for name, s in STRATEGY_REGISTRY.items()}
    assert code["stall"] in bz.FOLLOWS_PROTOCOL and code["omit"] in bz.FOLLOWS_PROTOCOL
    assert code["silent"] in bz.SENDS_NOTHING and code["delay"] in bz.ALWAYS_LATE
    assert code["equivocate"] in bz.EQUIVOCATES
    assert STRATEGY_REGISTRY["stall"].primary(0, 1) == bz.PRIMARY_SILENT
    assert STRATEGY_REGISTRY["omit"].primary(0, 1) == bz.PRIMARY_SELECTIVE
    table = bz.strategy_table()
    assert all(name in table for name in ATTACKER_STRATEGIES)
    assert table in bz.__doc__ and bz.behavior_table() in bz.__doc__


def test_learned_is_not_a_configurable_behaviour() -> None:
    assert LEARNED not in BEHAVIORS
    with pytest.raises(ValueError, match="byzantine_behaviors"):
        BFTConfig(byzantine_behaviors=(LEARNED,))
    bft = PBFTConsensus(BFTConfig(n_replicas=7, n_byzantine=2))
    bft.reset(np.random.default_rng(0), byzantine=[1, 4], behaviors={1: LEARNED, 4: "silent"})
    assert bft.behaviors == {1: LEARNED, 4: "silent"}
    bft.reset(np.random.default_rng(0), behaviors=LEARNED)
    assert set(bft.behaviors.values()) == {LEARNED}


# ---------------------------------------------------------------- invariants (property tests)
@SETTINGS
@given(groups())
def test_learned_attackers_keep_agreement_validity_and_never_convict_honest(group: tuple) -> None:
    cfg, names, pool, seed = group
    equivocated: set[int] = set()
    for bft, votes, strategies, r in _episode(cfg, names, pool, seed, 60):
        equivocated |= {i for i, k in strategies.items() if k == S["equivocate"]}
        commits = r.honest_commits[list(bft.honest)]
        assert len(set(commits[commits >= 0].tolist())) <= 1  # agreement
        assert not r.agreement_violation and not r.validity_violation
        if r.committed:
            assert r.decision in commits
            honest_in = [i for i in bft.honest if r.certificate[i]]
            assert honest_in
            hv = votes[honest_in]
            assert hv.min() <= r.decision <= hv.max()  # validity
        else:
            assert r.decision == cfg.fail_safe_action and (r.honest_commits == -1).all()
        assert (r.signed_votes[list(bft.honest)] == votes[list(bft.honest)]).all()
        for i, k in strategies.items():  # what each learned replica signed
            name, signed = ATTACKER_STRATEGIES[k], int(r.signed_votes[i])
            if name in VOTE_STRATEGIES:
                assert signed == k
            elif name == "silent":
                assert signed == -1 and not r.certificate[i] and r.revealed_votes[i] == -1
            elif name == "equivocate":
                assert signed in votes[list(bft.honest)]
            else:
                assert signed == Action.ALLOW
            if name == "delay":
                assert not r.certificate[i]  # its vote is always past the deadline
        assert not bft.convicted[list(bft.honest)].any()
        for i in np.flatnonzero(bft.convicted):
            i = int(i)
            assert bft.behaviors[i] == "equivocate" or i in equivocated
            a, b = bft.evidence[i]
            assert proves_fault(a, b) and a.sender == i
    stats = bft.stats()
    assert stats["agreement_violations"] == 0 and stats["validity_violations"] == 0


@SETTINGS
@given(groups(lossless=True, sizes=(4, 5, 6, 7, 8, 9, 10, 13, 16)))
def test_learned_attackers_cannot_stop_liveness_without_losses(group: tuple) -> None:
    cfg, names, pool, seed = group
    for bft, _, strategies, r in _episode(cfg, names, pool, seed, 40):
        assert r.committed, (bft.behaviors, strategies, r)
        assert r.view_changes <= cfg.f  # committed within f + 1 views
        for i, k in strategies.items():  # an equivocation is caught in the instance it is tried
            if k == S["equivocate"]:
                assert bft.convicted[i]
    assert bft.stats()["undecided"] == 0


@SETTINGS
@given(groups(lossless=True, sizes=(4, 7, 10)), st.integers(0, 2**16))
def test_honest_primary_commits_in_its_own_view(group: tuple, _salt: int) -> None:
    cfg, names, pool, seed = group
    for bft, _, _, r in _episode(cfg, names, pool, seed, 30):
        if r.primary in bft.honest and r.view_changes == 0:
            assert r.committed and r.certificate[r.primary]


@settings(max_examples=15, deadline=None)
@given(
    n=st.sampled_from([4, 5, 7, 10]),
    extra=st.integers(1, 2),
    pool=st.lists(st.integers(0, N_STRATEGIES - 1), min_size=1, max_size=4),
    p_drop=st.sampled_from([0.0, 0.1, 0.5]),
    rule=st.sampled_from(sorted(DECISION_RULES)),
    seed=st.integers(0, 2**32 - 1),
)
def test_beyond_f_learned_attackers_keep_running_and_report(
    n: int, extra: int, pool: list[int], p_drop: float, rule: str, seed: int
) -> None:
    b = min((n - 1) // 3 + extra, n - 1)
    bft = DECISION_RULES[rule](BFTConfig(n_replicas=n, n_byzantine=b, p_drop=p_drop))
    rng = np.random.default_rng(seed)
    bft.reset(rng, behaviors=LEARNED)
    agreement = validity = 0
    for _ in range(100):
        bft.act_as({i: int(rng.choice(pool)) for i in bft.byzantine})
        r = bft.decide(rng.integers(0, 4, size=n))
        agreement += r.agreement_violation
        validity += r.validity_violation
        commits = r.honest_commits[list(bft.honest)]
        assert r.agreement_violation == (len(set(commits[commits >= 0].tolist())) > 1)
        assert not bft.convicted[list(bft.honest)].any()
    stats = bft.stats()
    assert stats["agreement_violations"] == agreement and stats["validity_violations"] == validity


@pytest.mark.parametrize("certificate", CERTIFICATES)
@pytest.mark.parametrize("seed", range(4))
def test_fast_path_equals_full_simulation_with_learned_attackers(
    seed: int, certificate: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    for n in (4, 5, 7, 10, 13):
        b = int(rng.integers(1, (n - 1) // 3 + 1))
        cfg = BFTConfig(n_replicas=n, n_byzantine=b, certificate=certificate)
        fast, full = PBFTConsensus(cfg), PBFTConsensus(cfg)
        monkeypatch.setattr(full, "_view_fast", full._view_full)
        fast.reset(np.random.default_rng(seed), behaviors=LEARNED)
        full.reset(np.random.default_rng(seed), behaviors=LEARNED)
        for votes in rng.integers(0, 4, size=(40, n)):
            strategies = {i: int(rng.integers(N_STRATEGIES)) for i in fast.byzantine}
            fast.act_as(strategies)
            full.act_as(strategies)
            x, y = fast.decide(votes), full.decide(votes)
            for field in dataclasses.fields(x):
                assert np.array_equal(getattr(x, field.name), getattr(y, field.name)), field.name
        assert fast.stats() == full.stats()


# ---------------------------------------------------------------- act_as errors
def test_act_as_rejects_bad_strategies_ids_and_missing_replicas() -> None:
    bft = PBFTConsensus(BFTConfig(n_replicas=7, n_byzantine=2))
    bft.reset(np.random.default_rng(0), byzantine=[2, 5], behaviors={2: LEARNED, 5: "random"})
    for bad in (N_STRATEGIES, -1, 1.0, True, "silent", None):
        with pytest.raises(ValueError, match="ATTACKER_STRATEGIES") as err:
            bft.act_as({2: bad})
        assert "vote_allow" in str(err.value) and "stall" in str(err.value)
    for key in (0, 5, 7, -1, "2"):  # honest, scripted Byzantine, out of range, not an int
        with pytest.raises(ValueError, match="not a learned Byzantine replica"):
            bft.act_as({2: 0, key: 0})
    with pytest.raises(ValueError, match="mapping"):
        bft.act_as([(2, 0)])
    bft.reset(np.random.default_rng(0), byzantine=[2, 5], behaviors=LEARNED)
    with pytest.raises(ValueError, match=r"no strategy for learned replica\(s\) \[5\]"):
        bft.act_as({2: 0})
    bft.act_as({np.int64(2): np.int64(3), 5: 0})  # numpy integers are fine
    assert bft.decide(np.zeros(7, dtype=int)).signed_votes[2] == 3


def test_decide_needs_act_as_every_instance() -> None:
    bft = _learned_group()
    message = r"act_as\(\.\.\.\) must give every learned replica a strategy before decide\(\)"
    with pytest.raises(ValueError, match=message):
        bft.decide(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="ATTACKER_STRATEGIES"):
        bft.act_as({0: 99})
    with pytest.raises(ValueError, match=message):  # a rejected act_as sets nothing
        bft.decide(np.zeros(4, dtype=int))
    bft.act_as({0: 0})
    bft.decide(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match=message):  # the strategies were for one instance
        bft.decide(np.zeros(4, dtype=int))
    scripted = PBFTConsensus(BFTConfig())  # no learned replica: no act_as needed
    scripted.decide(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="not a learned Byzantine replica"):
        scripted.act_as({scripted.byzantine[0]: 0})


# ---------------------------------------------------------------- each strategy
@pytest.mark.parametrize("strategy", VOTE_STRATEGIES)
def test_vote_strategies_sign_their_vote_and_follow_the_protocol(strategy: str) -> None:
    k = S[strategy]
    backup = _learned_group(at=3)
    r = _step(backup, strategy, [1, 1, 1, 0])
    assert r.signed_votes.tolist() == [1, 1, 1, k] and r.messages == 27 and r.view == 0
    primary = _learned_group(at=0)  # as primary: a certificate like an honest primary's
    r = _step(primary, strategy, [0, 2, 2, 2])
    assert r.committed and r.view == 0 and r.certificate[0] and r.revealed_votes[0] == k
    assert r.certificate.sum() == 3 and r.messages == 27
    assert r.decision == robust_aggregate(r.revealed_votes[r.certificate], 1)


def test_silent_sends_nothing_as_backup_and_fails_its_view_as_primary() -> None:
    bft = _learned_group(at=3)
    r = _step(bft, "silent", [1, 2, 2, 0])
    # 2 votes + 3 pre-prepares + 2 backups x 3 prepares + 3 replicas x 3 commits: none from it
    assert r.signed_votes[3] == -1 and r.messages == 20 and r.committed
    assert not r.certificate[3] and r.revealed_votes[3] == -1
    assert _step(bft, "vote_allow", [1, 2, 2, 0]).messages == 27  # speaking again next instance
    primary = _learned_group(at=0)
    r = _step(primary, "silent", [0, 2, 2, 2])
    assert r.committed and r.view == 1 and r.view_changes == 1 and not r.certificate[0]


def test_delay_is_always_late_as_backup_and_as_primary() -> None:
    bft = _learned_group(at=3)
    for _ in range(30):  # arrival order is random: it would get in sometimes if it were on time
        r = _step(bft, "delay", [1, 2, 2, 0])
        assert r.committed and not r.certificate[3] and r.signed_votes[3] == Action.ALLOW
        assert r.messages == 27  # it does send, past the deadline
    primary = _learned_group(at=0)
    r = _step(primary, "delay", [0, 2, 2, 2])
    assert r.committed and r.view == 1 and r.view_changes == 1 and not r.certificate[0]


def test_lateness_follows_the_strategy_of_each_instance_under_losses() -> None:
    bft = _learned_group(at=3, p_drop=0.02, p_delay=0.02)
    in_cert = {"delay": 0, "vote_quarantine": 0}
    for step in range(400):
        strategy = "delay" if step % 2 else "vote_quarantine"
        r = _step(bft, strategy, [1, 1, 1, 0])
        in_cert[strategy] += bool(r.certificate[3])
    assert in_cert["delay"] == 0 and in_cert["vote_quarantine"] > 20


def test_equivocating_backup_is_convicted_and_its_later_strategies_are_moot() -> None:
    bft = _learned_group(n=7, at=3)
    r = _step(bft, "equivocate", [0, 1, 1, 0, 1, 1, 1])
    assert r.committed and r.newly_convicted == (3,) and bft.convicted[3]
    a, b = bft.evidence[3]
    assert proves_fault(a, b) and a.sender == 3
    for k in range(N_STRATEGIES):  # still accepted, never counted again
        bft.act_as({3: k})
        r = bft.decide(np.array([2, 2, 2, 0, 2, 2, 2]))
        assert r.committed and r.decision == 2 and not r.certificate[3]
    assert bft.stats()["convictions"] == 1


def test_equivocating_primary_is_convicted_and_its_view_skipped() -> None:
    bft = _learned_group(at=0)
    r = _step(bft, "equivocate", [0, 0, 3, 3])
    assert r.newly_convicted == (0,)
    a, b = bft.evidence[0]
    assert proves_fault(a, b) and a.sender == 0
    r2 = _step(bft, "vote_allow", [0, 1, 1, 1])
    assert r2.committed and r2.primary == 1 and not r2.certificate[0]


def test_stall_fails_the_view_as_primary_but_follows_the_protocol_as_backup() -> None:
    bft = _learned_group(at=0)
    r = _step(bft, "stall", [0, 2, 2, 2])
    assert r.committed and r.view == 1 and r.primary == 1 and r.view_changes == 1
    assert r.signed_votes[0] == Action.ALLOW
    # view 0: VIEW-CHANGE-free, 3 votes sent to it and nothing else; view 1: VIEW-CHANGE
    # from 4 replicas then a full honest view in which it takes part as a backup
    assert r.messages == 3 + 4 * 3 + 27
    assert bft.stats()["view_changes"] == 1
    r2 = _step(bft, "stall", [0, 2, 2, 2])  # now a backup: an ordinary view
    assert r2.committed and r2.view == 1 and r2.view_changes == 0 and r2.messages == 27


def test_omit_leaves_the_most_severe_honest_votes_out_as_primary() -> None:
    bft = _learned_group(n=7, at=0)
    votes = [0, 0, 1, 1, 3, 3, 3]
    for _ in range(20):
        r = _step(bft, "omit", votes)
        assert r.primary == 0 and r.certificate[0] and r.committed
        in_cert = r.revealed_votes[r.certificate].tolist()
        assert sorted(in_cert) == [0, 0, 1, 1, 3]  # its own Allow + the 4 least severe
        assert r.decision == robust_aggregate(in_cert, 2) == 1
        assert r.certificate[[4, 5, 6]].sum() == 1  # two honest Quarantines left out
    backup = _learned_group(n=7, at=3)  # as backup it just signs Allow and follows
    r = _step(backup, "omit", votes)
    assert r.signed_votes[3] == Action.ALLOW and r.view == 0 and r.committed


# ---------------------------------------------------------------- scripted episodes unchanged
_PIN_FIELDS = (
    "decision",
    "committed",
    "view",
    "primary",
    "view_changes",
    "certificate",
    "revealed_votes",
    "honest_commits",
    "messages",
    "newly_convicted",
    "agreement_violation",
    "validity_violation",
)


def _scripted_trace(cfg: BFTConfig, seed: int, steps: int, **pins: object) -> tuple:
    """Decisions, stats and a digest of every result field of one scripted episode."""
    bft = PBFTConsensus(cfg)
    rng = np.random.default_rng(seed)
    bft.reset(rng, **pins)
    h = hashlib.sha256()
    decisions = []
    for votes in rng.integers(0, 4, size=(steps, cfg.n_replicas)):
        r = bft.decide(votes)
        decisions.append(str(r.decision))
        for name in _PIN_FIELDS:
            value = getattr(r, name)
            h.update(repr(value.tolist() if isinstance(value, np.ndarray) else value).encode())
    h.update(repr((bft.convicted.tolist(), bft.view, sorted(bft.evidence))).encode())
    return "".join(decisions), bft.stats(), h.hexdigest()[:16]


def _stats(views: int, changes: int, undecided: int, messages: int, convictions: int) -> dict:
    """A stats dict with no invariant violations."""
    return {
        "views": views,
        "view_changes": changes,
        "undecided": undecided,
        "messages": messages,
        "convictions": convictions,
        "agreement_violations": 0,
        "validity_violations": 0,
    }


# Recorded with the protocol as it was before learned attackers existed.
_SCRIPTED_PINS = [
    (
        (BFTConfig(), 0, 40, {}),
        "0222223010223222212221101323222331210223",
        _stats(40, 0, 0, 1080, 0),
        "6ad43927eed0a2f5",
    ),
    (
        (
            BFTConfig(n_replicas=7, n_byzantine=2, p_drop=0.02, p_delay=0.02),
            1,
            60,
            {"byzantine": [2, 5], "behaviors": ["delay", "equivocate"]},
        ),
        "312211111211122122132231111121213111032212113111321112211211",
        _stats(128, 88, 20, 8418, 1),
        "5e5b00ae08d70ece",
    ),
    (
        (BFTConfig(p_drop=0.05, p_delay=0.05), 2, 60, {"behaviors": "delay"}),
        "111121131111111212211120211111111123110111122111111212201132",
        _stats(101, 73, 32, 2442, 0),
        "495c97eb6844029b",
    ),
    (
        (
            BFTConfig(
                n_replicas=10,
                n_byzantine=3,
                p_drop=0.05,
                byzantine_behaviors=("on_off", "selective_primary", "silent"),
            ),
            7,
            60,
            {},
        ),
        "123121111112001101012231121222121113001202312021111022222021",
        _stats(87, 32, 5, 12792, 0),
        "a6ab7f12593b7c1a",
    ),
    (
        (
            BFTConfig(n_replicas=4, n_byzantine=2, p_drop=0.1),
            3,
            60,
            {"byzantine": [0, 3], "behaviors": ["equivocate", "always_allow"]},
        ),
        "011101031130112011110110101100010012300111120121111112101110",
        _stats(100, 67, 27, 1526, 1),
        "93bffde251f22c2b",
    ),
    (
        (
            BFTConfig(n_replicas=7, n_byzantine=2, on_off_period=2),
            5,
            60,
            {"behaviors": ["delay", "on_off"]},
        ),
        "101012032110111121200211121032111122110121212221330002101101",
        _stats(60, 0, 0, 5400, 0),
        "86298a3b554bf505",
    ),
]


@pytest.mark.parametrize(("case", "decisions", "stats", "digest"), _SCRIPTED_PINS)
def test_scripted_episodes_are_bit_identical_to_before(
    case: tuple, decisions: str, stats: dict, digest: str
) -> None:
    cfg, seed, steps, pins = case
    assert _scripted_trace(cfg, seed, steps, **pins) == (decisions, stats, digest)


# ---------------------------------------------------------------- NaiveMajority
def test_majority_takes_the_plurality_ties_toward_most_severe() -> None:
    bft = NaiveMajority(BFTConfig(n_byzantine=0))
    bft.reset(np.random.default_rng(0))
    for votes, expected in (
        ([0, 0, 2, 3], 0),
        ([0, 0, 3, 3], 3),
        ([1, 2, 3, 0], 3),
        ([2, 2, 1, 1], 2),
        ([1, 1, 1, 0], 1),
    ):
        r = bft.decide(np.array(votes))
        assert r.committed and r.decision == expected
        assert r.certificate.all() and r.revealed_votes.tolist() == votes
        assert (r.honest_commits == expected).all() and r.signed_votes.tolist() == votes
        assert r.messages == 4 and r.view == 0 and r.view_changes == 0 and not r.newly_convicted
    assert bft.stats() == _stats(0, 0, 0, 20, 0)


def test_an_always_allow_insider_swings_a_tied_majority() -> None:
    cfg = BFTConfig(n_replicas=5, n_byzantine=1)
    votes = np.array([3, 3, 0, 0, 0])
    for behavior, expected in (("always_allow", 0), ("silent", 3), ("always_quarantine", 3)):
        bft = NaiveMajority(cfg)
        bft.reset(np.random.default_rng(0), byzantine=[4], behaviors=behavior)
        r = bft.decide(votes)
        assert r.decision == expected and not r.validity_violation
    pbft = PBFTConsensus(cfg)
    pbft.reset(np.random.default_rng(0), byzantine=[4], behaviors="always_allow")
    assert pbft.decide(votes).committed


def test_majority_reports_validity_violations_beyond_f() -> None:
    bft = NaiveMajority(BFTConfig(n_replicas=5, n_byzantine=2))
    bft.reset(np.random.default_rng(0), byzantine=[3, 4], behaviors="always_allow")
    r = bft.decide(np.array([3, 2, 1, 0, 0]))
    assert r.committed and r.decision == 0 and r.validity_violation
    assert not r.agreement_violation and bft.stats()["validity_violations"] == 1


def test_majority_counts_the_votes_that_arrive_under_learned_strategies() -> None:
    bft = NaiveMajority(BFTConfig())
    bft.reset(np.random.default_rng(0), byzantine=[3], behaviors=LEARNED)
    votes = [0, 0, 3, 0]
    for strategy, decision, messages in (
        ("vote_quarantine", 3, 4),  # 2-2 tie, most severe wins
        ("silent", 0, 3),  # sends no vote
        ("delay", 0, 4),  # sent, misses the tally
        ("equivocate", 0, 4),  # an honest-looking vote: 0 or 3
    ):
        r = _step(bft, strategy, votes)
        if strategy == "equivocate":
            decision = 3 if r.signed_votes[3] == 3 else 0
        assert r.decision == decision and r.messages == messages, strategy
        assert r.certificate[3] == (strategy not in ("silent", "delay"))


def test_majority_applies_message_loss_per_vote_and_falls_back_to_fail_safe() -> None:
    bft = NaiveMajority(BFTConfig(n_byzantine=0, p_drop=1.0, fail_safe_action="block"))
    bft.reset(np.random.default_rng(0))
    r = bft.decide(np.array([0, 0, 0, 0]))
    assert not r.committed and r.decision == Action.BLOCK and (r.honest_commits == -1).all()
    assert not r.certificate.any() and r.messages == 4 and bft.stats()["undecided"] == 1
    half = NaiveMajority(BFTConfig(n_byzantine=0, p_drop=0.5))
    half.reset(np.random.default_rng(1))
    counted = undecided = 0
    for _ in range(2000):
        r = half.decide(np.array([1, 1, 1, 1]))
        counted += int(r.certificate.sum())
        undecided += not r.committed
    assert abs(counted / 8000 - 0.5) < 0.03 and abs(undecided / 2000 - 1 / 16) < 0.025


# ---------------------------------------------------------------- RandomReplica
def test_random_replica_is_byzantine_about_b_over_n_of_the_time() -> None:
    for n, b in ((4, 1), (7, 2)):
        bft = RandomReplica(BFTConfig(n_replicas=n, n_byzantine=b))
        rng = np.random.default_rng(0)
        deciders, byzantine = [], 0
        for _ in range(2000):
            bft.reset(rng)
            deciders.append(bft.decider)
            byzantine += bft.decider in bft.byzantine
        assert abs(byzantine / 2000 - b / n) < 0.04
        assert set(deciders) == set(range(n))


def _random_replica_with(byzantine_decider: bool, behaviors: str, **cfg: object) -> RandomReplica:
    """A RandomReplica whose decider is (or is not) its Byzantine replica."""
    bft = RandomReplica(BFTConfig(**cfg))
    for seed in range(100):
        bft.reset(np.random.default_rng(seed), behaviors=behaviors)
        if (bft.decider in bft.byzantine) == byzantine_decider:
            return bft
    raise AssertionError("no such seed")


def test_random_replica_decides_alone_with_its_signed_vote() -> None:
    bft = _random_replica_with(False, "always_quarantine")
    d = bft.decider
    for votes in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 2, 2, 2]):
        r = bft.decide(np.array(votes))
        assert r.committed and r.decision == votes[d] and r.messages == 0
        assert np.flatnonzero(r.certificate).tolist() == [d] and r.revealed_votes[d] == votes[d]
        assert (r.honest_commits[list(bft.honest)] == votes[d]).all()
    insider = _random_replica_with(True, "always_quarantine")
    r = insider.decide(np.zeros(4, dtype=int))
    assert r.decision == Action.QUARANTINE and r.validity_violation
    learned = _random_replica_with(True, LEARNED)
    assert _step(learned, "vote_block", [0, 0, 0, 0]).decision == Action.BLOCK


@pytest.mark.parametrize("behavior", ["silent", "delay"])
def test_random_replica_silent_or_late_decider_gives_fail_safe(behavior: str) -> None:
    bft = _random_replica_with(True, behavior, fail_safe_action="quarantine")
    r = bft.decide(np.array([0, 0, 0, 0]))
    assert not r.committed and r.decision == Action.QUARANTINE and not r.certificate.any()
    assert bft.stats()["undecided"] == 1
    learned = _random_replica_with(True, LEARNED)
    r = _step(learned, behavior, [0, 0, 0, 0])
    assert not r.committed and r.decision == learned.config.fail_safe_action


def test_baselines_leave_the_episode_draws_of_pbft_unchanged() -> None:
    cfg = BFTConfig(n_replicas=7, n_byzantine=2)
    votes = np.random.default_rng(9).integers(0, 4, size=(30, 7))
    runs = {}
    for name, rule in DECISION_RULES.items():
        assert issubclass(rule, PBFTConsensus)
        bft = rule(cfg)
        rng = np.random.default_rng(4)
        bft.reset(rng, behaviors=["random", "on_off"])
        after = int(rng.integers(2**32))  # the caller's stream is left where PBFT leaves it
        signed = [bft.decide(v).signed_votes.tolist() for v in votes]
        runs[name] = (bft.byzantine, bft.behaviors, after, signed)
    pbft, majority, single = runs["pbft"], runs["majority"], runs["random_replica"]
    assert majority[:3] == pbft[:3] == single[:3]
    assert majority[3][0] == pbft[3][0]  # PBFT draws arrival orders after the votes
    assert majority[3] == single[3]  # the decider is drawn from a stream of its own
