"""PBFT-style consensus on each env step's response, simulated fast enough for RL.

One consensus *instance* per env step decides the response to that step's event;
its sequence number ``seq`` is the step index. Replicas ``0 .. n-1``; ``f = (n-1)//3``;
the Byzantine ones are scripted or learned (see :mod:`marl_bft_rllib.bft.byzantine`).

*Learned attackers*: a Byzantine replica whose behaviour is ``byzantine.LEARNED`` acts,
in each instance, by the message strategy :meth:`PBFTConsensus.act_as` set for that
instance (an index into ``byzantine.ATTACKER_STRATEGIES``); every per-replica table of
the simulation follows the instance's strategy. ``decide`` refuses to run an instance
before every learned replica has one.

A *view* ``v`` has primary ``v % n`` and is one synchronous round of up to five
message phases, each a set of point-to-point signed messages. ``Q`` is the Byzantine
quorum ``ceil((n + f + 1) / 2)``: ``2f + 1`` when ``n = 3f + 1`` (PBFT's sizes), larger
otherwise, because two quorums of ``2f + 1`` out of e.g. 5 replicas can meet in a
single, Byzantine one (the agreement property test finds that split at once).

1. VIEW-CHANGE (only when the view was entered by a view change): every active
   replica broadcasts it; the new primary needs ``Q`` of them (its own included)
   to open the view.
2. VOTE: every backup sends its signed vote (action) to the primary.
3. PRE-PREPARE: the primary puts its own vote and the first ``n - f - 1`` votes to
   arrive (arrival order: ring order from a random rotation) into a certificate and
   sends it to every backup; with ``certificate="all_timely"`` it puts in every vote
   that arrived by the deadline (at least ``n - f - 1``). A Byzantine primary that
   deviates (selective, equivocating) always signs ``n - f`` votes. Replicas accept a
   certificate when its voters are authentic, distinct and not convicted, and the view
   and seq are right (the simulated certificates always are; only delivery can fail).
4. PREPARE: every backup that accepted a pre-prepare broadcasts PREPARE(digest). A
   replica is *prepared* with the pre-prepare and ``Q - 1`` matching PREPAREs (its
   own counts; the primary sends none).
5. COMMIT: every prepared replica broadcasts COMMIT(digest); it *commits* with
   ``Q`` matching COMMITs (its own counts). The decision is
   :func:`robust_aggregate` of the certificate's votes.

A *message* is one (sender, receiver) pair of one phase; ``messages`` counts those
sent (dropped and late ones included, nothing from silent or convicted replicas).
*Delivery*: each message is dropped with ``p_drop``; an honest replica's message is
also late with ``p_delay``; a ``delay`` replica's messages are always late. A late
message misses the view's deadline, which is the end of its round, so it counts as
lost for that view. Delivery is drawn in batches of views as boolean
(phase, receiver, sender) arrays and packed into one sender bitmask per receiver
and phase; a quorum check is then ``(on_time & senders_of_digest).bit_count()``,
so a view costs O(n) integer operations per phase, not O(n^2) message objects.
The drawn loss probability of a sender depends only on whether it is honest; the
senders that are always late *now* (their code, which a learned attacker changes per
instance) are cleared from a view's masks when it is used.

*Deadline and view changes*: an instance ends at the first view in which at least
one honest replica commits (the others catch up by state transfer; their
``honest_commits`` entry stays -1). A view with no honest commit (silent, late or
equivocating primary, too many losses, convicted primary) is followed by a view
change to ``v + 1`` within the instance, up to ``deadline_views`` views
(default ``f + 1``). If none commits, the instance is *undecided*: the decision is
``fail_safe_action``, and the view advances once more so the next instance starts
with a view change (its VIEW-CHANGE messages are counted in that next instance).
A view whose primary is already convicted is skipped at once (it still uses up a
view). Since an instance stops at its first view with a commit, safety never needs
certificates carried across views, so PBFT's NEW-VIEW re-proposal is not simulated:
each view's primary builds a fresh certificate.

*Convictions*: two conflicting messages signed by one replica for the same phase,
view and seq, each delivered to some honest replica, prove it faulty (a PREPARE
carries the primary's signed pre-prepare header, so equivocating primaries are
caught the same way). The proof is forwarded reliably with the honest replicas'
next messages: the replica is convicted from the next view on, its messages are
ignored and its votes never enter a certificate again. ``evidence`` keeps the two
messages of every conviction. Honest replicas never sign conflicting messages, so
they can never be convicted.

*Fast path*: with no drops or delays, ``b <= f`` and a primary that sends one
certificate to everyone (honest, or a protocol-following Byzantine acting as an honest
or a selective primary), the outcome is
fixed: every honest replica commits that certificate, equivocating backups are
convicted, and the message count has a closed form. That path gives exactly the
result of the full simulation (a test runs both), in plain Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from marl_bft_rllib.actions import N_ACTIONS
from marl_bft_rllib.bft import byzantine as bz
from marl_bft_rllib.bft.aggregate import robust_aggregate
from marl_bft_rllib.bft.config import BEHAVIORS, BFTConfig
from marl_bft_rllib.bft.messages import BOGUS_DIGEST, MsgType, SignedMessage
from marl_bft_rllib.metrics import BFT_STAT_KEYS

_N_PHASES = len(MsgType)
_BUFFER = 2048  # uniforms drawn at once for the per-step scripted randomness
_DELIVERY_BATCH = 1 << 16  # message deliveries drawn at once (whole views)

Proof = tuple[SignedMessage, SignedMessage]  # two conflicting messages signed by one replica
Conviction = tuple[int, Proof]  # (convicted replica, its proof)


_SINGLE_CERTIFICATE = bz.SINGLE_CERTIFICATE_MODES
_MAX_CODE_TABLES = 4096  # code combinations _set_codes keeps per episode

# What _set_codes derives from the codes: Byzantine vote rules, primary rules (None: honest),
# protocol-following / equivocating / always-late bitmasks, lossless delivery masks.
_CodeTables = tuple[
    list[tuple[int, bz.VoteRule]], list[bz.PrimaryRule | None], int, int, int, list[list[int]]
]


def _as_int(value: object) -> int | None:
    """`value` as a plain int when it is an integer (not a bool), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def _bits(flags: Iterable[bool]) -> int:
    """Bitmask with bit i set where flags[i] is true."""
    return sum(1 << i for i, flag in enumerate(flags) if flag)


@dataclass(slots=True)
class ConsensusResult:
    """Outcome of one consensus instance (one env step)."""

    decision: int  # committed decision, or fail_safe_action if undecided
    committed: bool
    view: int  # view in which it committed (or the last tried)
    primary: int
    view_changes: int  # view changes this instance made (incl. the one after an undecided end)
    certificate: np.ndarray  # (n,) bool: whose signed votes are in the committed certificate
    revealed_votes: np.ndarray  # (n,) int8: votes in certificates honest replicas saw (-1 unknown)
    honest_commits: np.ndarray  # (n,) int8: decision each honest replica committed, else -1
    messages: int  # protocol messages sent this instance
    newly_convicted: tuple[int, ...]
    agreement_violation: bool  # two honest replicas committed different decisions
    validity_violation: bool  # decision outside [min, max] of the honest votes in its certificate
    # (n,) int8: the vote each replica signed this instance, Byzantine ones included (-1: none,
    # e.g. silent); a convicted replica's vote is listed though nobody counts it
    signed_votes: np.ndarray


@dataclass(frozen=True, slots=True)
class _ViewOutcome:
    """What one simulated view produced."""

    # digest each replica committed (-1: none; only honest rows are read); None: no honest commit
    commits: list[int] | None
    certificates: list[bz.Certificate]  # those the primary signed; a digest is an index here
    messages: int  # protocol messages sent in the view
    convictions: list[Conviction]  # replicas proven faulty in the view
    seen: tuple[int, ...]  # digests of the certificates honest replicas received


@dataclass(slots=True)
class _InstanceRun:
    """The views of one instance: where it ended and what they cost."""

    committed: bool  # some honest replica committed (else: undecided)
    view: int  # the last view tried
    primary: int
    views: int  # views tried
    view_changes: int  # incl. the one after an undecided end
    messages: int
    newly_convicted: list[int]
    revealed: list[int] | None  # votes of certificates honest replicas saw (-1 unknown); None: none
    last: _ViewOutcome | None  # outcome of the last view simulated (None: every primary convicted)


@dataclass(slots=True)
class _Decision:
    """The decision-dependent part of a ConsensusResult."""

    decision: int
    certificate: np.ndarray
    revealed_votes: np.ndarray
    honest_commits: np.ndarray
    agreement_violation: bool
    validity_violation: bool


class PBFTConsensus:
    """n replicas running one PBFT instance per step, b of them scripted Byzantine."""

    def __init__(self, config: BFTConfig) -> None:
        if not isinstance(config, BFTConfig):
            raise ValueError(f"config: expected a BFTConfig, got {type(config).__name__}")
        self.config = config
        n, f = config.n_replicas, config.f
        self.n, self.f = n, f
        # Byzantine quorum: any two intersect in an honest replica; 2f + 1 when n = 3f + 1
        self.quorum = (n + f + 2) // 2
        self._cert_size = n - f  # votes in a certificate (at least, with "all_timely")
        self._take_all = config.certificate == "all_timely"
        self._deadline = config.deadline
        self._lossy = config.p_drop > 0.0 or config.p_delay > 0.0
        self._ring = [[(p + 1 + j) % n for j in range(n - 1)] for p in range(n)]
        # even_after[s][r]: r is at an even position in ring order after s (gets the real digest)
        self._even_after = [[((r - s - 1) % n) % 2 == 0 for r in range(n)] for s in range(n)]
        # digest each replica gets from a primary that signed two certificates
        self._alternating_digest = [[0 if even else 1 for even in row] for row in self._even_after]
        self._single_digest = [0] * n
        self._bit_weights = np.array([float(1 << i) for i in range(n)])
        self.reset(np.random.default_rng(0))

    # ------------------------------------------------------------------ episode set-up
    def reset(
        self,
        rng: np.random.Generator,
        byzantine: Sequence[int] | None = None,
        behaviors: str | Sequence[str] | Mapping[int, str] | None = None,
    ) -> None:
        """Start an episode: pick Byzantine ids and behaviours, view 0, seq 0, clear state.

        `byzantine` pins the faulty ids (exactly n_byzantine distinct ids); `behaviors`
        pins their behaviours (one name for all, one per id in order, or {id: name}).
        A pinned name may be ``byzantine.LEARNED``: that replica then acts each instance
        by the strategy :meth:`act_as` gives it.
        """
        byz, names = self._pick_adversary(rng, byzantine, behaviors)
        cfg, n = self.config, self.n
        self._rng = np.random.default_rng(int(rng.integers(2**63)))
        self.byzantine: tuple[int, ...] = tuple(byz)
        self.honest: tuple[int, ...] = tuple(i for i in range(n) if i not in set(byz))
        self.behaviors: dict[int, str] = dict(zip(byz, names, strict=True))
        self._learned = tuple(i for i in byz if self.behaviors[i] == bz.LEARNED)
        self._learned_set = frozenset(self._learned)
        self._strategies_given = False  # act_as was called since the last decide
        codes = [bz.HONEST] * n
        for i, name in self.behaviors.items():
            # a learned replica's code is set per instance by act_as; until then, strategy 0
            codes[i] = bz.STRATEGY_CODES[0] if name == bz.LEARNED else bz.CODE[name]
        self._is_honest = [c == bz.HONEST for c in codes]
        self._honest_bits = _bits(self._is_honest)
        # a sender's probability of missing the deadline, per message (an always-late
        # sender is cleared from the delivery masks at use time, see _delivery)
        keep_honest = (1.0 - cfg.p_drop) * (1.0 - cfg.p_delay)
        self._p_lost = np.array([1.0 - keep_honest if h else cfg.p_drop for h in self._is_honest])
        self._derived: dict[tuple[int, ...], _CodeTables] = {}  # _set_codes' cache, per episode
        self._delivery_buffer: list[list[list[int]]] = []
        self._delivery_index = 0
        self._fast_path_possible = not self._lossy and len(byz) <= self.f
        # the fast path's commits: every honest replica committed certificate 0
        self._fast_commits = [0 if honest else -1 for honest in self._is_honest]
        self._honest_commits_by_decision = [
            np.array([d if honest else -1 for honest in self._is_honest], dtype=np.int8)
            for d in range(N_ACTIONS)
        ]
        self._unknown_votes = [-1] * n
        self._uniforms: list[float] = []
        self._uniform_index = 0

        self.view = 0
        self.seq = 0
        self.convicted = np.zeros(n, dtype=bool)
        self.evidence: dict[int, Proof] = {}
        self._pending_change = False
        self._stats = dict.fromkeys(BFT_STAT_KEYS, 0)
        self._set_codes(codes)

    def _set_codes(self, codes: list[int]) -> None:
        """Install the replicas' codes for this instance and everything derived from them."""
        key = tuple(codes)
        tables = self._derived.get(key)
        if tables is None:  # learned attackers revisit few combinations: keep them
            if len(self._derived) >= _MAX_CODE_TABLES:
                self._derived.clear()
            tables = self._derived[key] = self._code_tables(codes)
        self._codes = codes
        (
            self._byzantine_vote_rules,
            self._primary_rules,
            self._follow_bits,
            self._equivocating_bits,
            self._late_bits,
            self._lossless_delivery,
        ) = tables
        self._refresh_masks()

    def _code_tables(self, codes: list[int]) -> _CodeTables:
        """The rule tables, bitmasks and lossless delivery masks that `codes` determine."""
        n = self.n
        late = _bits(c in bz.ALWAYS_LATE for c in codes)  # always-late senders: never on time
        on_time = ((1 << n) - 1) & ~late
        return (
            [(i, bz.VOTE_RULES[codes[i]]) for i in self.byzantine],
            [bz.PRIMARY_RULES[c] for c in codes],  # None: honest
            _bits(c in bz.FOLLOWS_PROTOCOL for c in codes),
            _bits(c in bz.EQUIVOCATES for c in codes),
            late,
            [[on_time & ~(1 << r) for r in range(n)] for _ in range(_N_PHASES)],
        )

    def _pick_adversary(
        self,
        rng: np.random.Generator,
        byzantine: Sequence[int] | None,
        behaviors: str | Sequence[str] | Mapping[int, str] | None,
    ) -> tuple[list[int], list[str]]:
        """The sorted Byzantine ids and their behaviour names, drawn or pinned (validated)."""
        cfg, n = self.config, self.n
        b = cfg.n_byzantine
        if byzantine is None:
            byz = sorted(int(i) for i in rng.choice(n, size=b, replace=False))
        else:
            byz = sorted(int(i) for i in byzantine)
            if len(byz) != b or len(set(byz)) != b or any(not 0 <= i < n for i in byz):
                raise ValueError(
                    f"byzantine: need {b} distinct replica ids in [0, {n}), got {byzantine!r}"
                )
        if behaviors is None:
            pool = cfg.byzantine_behaviors
            names = [pool[int(k)] for k in rng.integers(len(pool), size=b)] if b else []
        elif isinstance(behaviors, str):
            names = [behaviors] * b
        elif isinstance(behaviors, Mapping):
            if sorted(int(k) for k in behaviors) != byz:
                raise ValueError(
                    f"behaviors: keys must be the Byzantine ids {byz}, got {sorted(behaviors)}"
                )
            names = [behaviors[i] for i in byz]
        else:
            names = list(behaviors)
            if len(names) != b:
                raise ValueError(f"behaviors: need {b} names (one per Byzantine), got {names}")
        unknown = [name for name in names if name not in BEHAVIORS and name != bz.LEARNED]
        if unknown:
            raise ValueError(
                f"behaviors: unknown behaviour(s) {unknown}; expected names from {BEHAVIORS} "
                f"or {bz.LEARNED!r}"
            )
        return byz, names

    def _refresh_masks(self) -> None:
        """Recompute who is active / whose vote can arrive after a conviction."""
        convicted = self.convicted.tolist()
        self._convicted_list = convicted
        codes = self._codes
        self._active = [
            not convicted[i] and codes[i] not in bz.SENDS_NOTHING for i in range(self.n)
        ]
        self._vote_arrives = [
            active and codes[i] not in bz.ALWAYS_LATE for i, active in enumerate(self._active)
        ]
        self._active_bits = _bits(self._active)
        self._n_active = sum(self._active)
        self._equivocating_backups = [
            i for i in range(self.n) if self._active[i] and codes[i] in bz.EQUIVOCATES
        ]
        # messages of a fast-path view, without / with VIEW-CHANGE: every active replica
        # (honest + active Byzantine) sends in every phase
        n, a = self.n, self._n_active
        steady = (a - 1) + (n - 1) + (2 * a - 1) * (n - 1)  # VOTE, PRE-PREPARE, PREPARE, COMMIT
        self._fast_view_messages = (steady, steady + a * (n - 1))

    def _draw(self) -> float:
        """Next uniform in [0, 1) from the episode's buffered stream."""
        if self._uniform_index >= len(self._uniforms):
            self._uniforms = self._rng.random(_BUFFER).tolist()
            self._uniform_index = 0
        u = self._uniforms[self._uniform_index]
        self._uniform_index += 1
        return u

    @property
    def primary(self) -> int:
        """Primary of the current view."""
        return self.view % self.n

    # ------------------------------------------------------------------ one instance
    def act_as(self, strategies: Mapping[int, int]) -> None:
        """Set each learned replica's strategy (ATTACKER_STRATEGIES index) for the next instance."""
        if not isinstance(strategies, Mapping):
            raise ValueError(
                f"act_as: expected a mapping {{replica id: strategy index}}, got {strategies!r}"
            )
        codes = list(self._codes)
        given = set()
        for key, value in strategies.items():
            i = _as_int(key)
            if i is None or i not in self._learned_set:
                raise ValueError(
                    f"act_as: replica {key!r} is not a learned Byzantine replica; the learned "
                    f"ones are {list(self._learned)}"
                )
            k = _as_int(value)
            if k is None or not 0 <= k < bz.N_STRATEGIES:
                raise ValueError(
                    f"act_as: replica {i} got strategy {value!r}; expected an int 0.."
                    f"{bz.N_STRATEGIES - 1} indexing ATTACKER_STRATEGIES {bz.ATTACKER_STRATEGIES}"
                )
            codes[i] = bz.STRATEGY_CODES[k]
            given.add(i)
        missing = [i for i in self._learned if i not in given]
        if missing:
            raise ValueError(
                f"act_as: no strategy for learned replica(s) {missing}; every learned replica "
                f"{list(self._learned)} needs one"
            )
        if codes != self._codes:
            self._set_codes(codes)
        self._strategies_given = True

    def decide(self, votes: np.ndarray) -> ConsensusResult:
        """Run one consensus instance on the honest replicas' votes and return its outcome."""
        vote = self._check_votes(votes)
        if self._learned:
            self._use_strategies()
        self._script_byzantine_votes(vote)
        signed = np.fromiter(vote, np.int8, self.n)
        run = self._run_views(vote)
        self.seq += 1
        decided = self._committed_decision(run) if run.committed else self._undecided_decision(run)
        self._add_to_stats(run, decided)
        return ConsensusResult(
            decision=decided.decision,
            committed=run.committed,
            view=run.view,
            primary=run.primary,
            view_changes=run.view_changes,
            certificate=decided.certificate,
            revealed_votes=decided.revealed_votes,
            honest_commits=decided.honest_commits,
            messages=run.messages,
            newly_convicted=tuple(run.newly_convicted),
            agreement_violation=decided.agreement_violation,
            validity_violation=decided.validity_violation,
            signed_votes=signed,
        )

    def _use_strategies(self) -> None:
        """Consume the strategies act_as set; raise ValueError when it was not called."""
        if not self._strategies_given:
            raise ValueError(
                "act_as(...) must give every learned replica a strategy before decide(); "
                f"learned replicas: {list(self._learned)}"
            )
        self._strategies_given = False

    def _check_votes(self, votes: np.ndarray | Sequence[int]) -> list[int]:
        """The votes as a list of ints; raise ValueError on a bad shape or honest action."""
        n = self.n
        if isinstance(votes, np.ndarray):
            if votes.shape != (n,) or votes.dtype.kind not in "iu":
                raise ValueError(
                    f"votes: expected an integer array of shape ({n},), got "
                    f"{votes.dtype} {votes.shape}"
                )
            vote = votes.tolist()
        else:
            vote = list(votes)
            if len(vote) != n:
                raise ValueError(f"votes: expected {n} entries (one per replica), got {len(vote)}")
        for i in self.honest:
            x = vote[i]
            if type(x) is not int or not 0 <= x < N_ACTIONS:
                if (
                    isinstance(x, (bool, np.bool_))
                    or not isinstance(x, (int, np.integer))
                    or not 0 <= x < N_ACTIONS
                ):
                    raise ValueError(f"votes: replica {i} voted {x!r}; expected an action 0..3")
                vote[i] = int(x)
        return vote

    def _script_byzantine_votes(self, vote: list[int]) -> None:
        """Fill in the votes the Byzantine replicas sign in this instance."""
        seq, period, honest, draw = self.seq, self.config.on_off_period, self.honest, self._draw
        for i, rule in self._byzantine_vote_rules:
            vote[i] = rule(seq, period, vote, honest, draw)

    def _run_views(self, vote: list[int]) -> _InstanceRun:
        """Try views from the current one until an honest replica commits or the deadline passes.

        An undecided instance then moves on to the next view (a view change the next
        instance starts with).
        """
        n, seq, deadline, period = self.n, self.seq, self._deadline, self.config.on_off_period
        messages = view_changes = views = 0
        newly: list[int] = []
        revealed: list[int] | None = None
        outcome: _ViewOutcome | None = None
        changed = self._pending_change  # the previous instance was undecided (change counted there)
        for attempt in range(deadline):
            view = self.view
            primary = view % n
            views += 1
            if not self._convicted_list[primary]:
                # how the primary acts: one of byzantine.PRIMARY_*
                rule = self._primary_rules[primary]
                mode = bz.PRIMARY_HONEST if rule is None else rule(seq, period)
                if (
                    self._fast_path_possible
                    and mode in _SINGLE_CERTIFICATE
                    and self._follow_bits >> primary & 1
                ):
                    outcome = self._view_fast(view, primary, changed, vote, seq, mode)
                else:
                    outcome = self._view_full(view, primary, changed, vote, seq, mode)
                messages += outcome.messages
                if outcome.seen:  # reveal the votes of the certificates honest replicas saw
                    if revealed is None:
                        revealed = [-1] * n
                    for digest in outcome.seen:
                        for i, x in zip(*outcome.certificates[digest], strict=True):
                            revealed[i] = x
                if outcome.convictions:
                    self._convict(outcome.convictions, newly)
                if outcome.commits is not None:
                    break
            changed = True
            if attempt + 1 < deadline:
                self.view += 1
                view_changes += 1
        committed = outcome is not None and outcome.commits is not None
        if not committed:
            self.view += 1
            view_changes += 1
        self._pending_change = not committed
        return _InstanceRun(
            committed, view, primary, views, view_changes, messages, newly, revealed, outcome
        )

    def _add_to_stats(self, run: _InstanceRun, decided: _Decision) -> None:
        """Add one instance to the episode statistics."""
        stats = self._stats
        stats["views"] += run.views
        stats["messages"] += run.messages
        if run.view_changes:
            stats["view_changes"] += run.view_changes
        if not run.committed:
            stats["undecided"] += 1
        if decided.agreement_violation:
            stats["agreement_violations"] += 1
        if decided.validity_violation:
            stats["validity_violations"] += 1

    def _undecided_decision(self, run: _InstanceRun) -> _Decision:
        """An instance with no commit by its deadline: the fail-safe action."""
        n = self.n
        return _Decision(
            self.config.fail_safe_action,
            np.zeros(n, dtype=bool),  # no certificate
            np.array(run.revealed or self._unknown_votes, dtype=np.int8),
            np.full(n, -1, dtype=np.int8),  # no honest commit
            False,
            False,
        )

    def _committed_decision(self, run: _InstanceRun) -> _Decision:
        """Decision, certificate, revealed votes, honest commits and violations of a commit."""
        outcome = run.last
        if outcome.commits is not self._fast_commits:
            return self._full_committed_decision(
                outcome.commits, outcome.certificates, run.revealed
            )
        # fast path: every honest replica committed certificate 0
        n, is_honest = self.n, self._is_honest
        voters, vals = outcome.certificates[0]
        decision = robust_aggregate(vals, self.f)
        honest_votes = [x for i, x in zip(voters, vals, strict=True) if is_honest[i]]
        if run.views == 1:  # only this certificate was revealed
            revealed = np.fromiter(run.revealed, np.int8, n)
            certificate = revealed >= 0
        else:
            revealed = np.array(run.revealed, dtype=np.int8)
            certificate = np.zeros(n, dtype=bool)
            certificate[voters] = True
        invalid = not honest_votes or not min(honest_votes) <= decision <= max(honest_votes)
        honest_commits = self._honest_commits_by_decision[decision].copy()
        return _Decision(decision, certificate, revealed, honest_commits, False, invalid)

    def _full_committed_decision(
        self, commits: list[int], certificates: list[bz.Certificate], revealed: list[int] | None
    ) -> _Decision:
        """A commit of the full simulation: the first honest commit's certificate decides."""
        n, f, is_honest = self.n, self.f, self._is_honest
        decisions = [robust_aggregate(vals, f) for _, vals in certificates]
        honest_commits = [-1] * n
        first = -1
        committed_digests: set[int] = set()
        for i in self.honest:
            digest = commits[i]
            if digest >= 0:
                honest_commits[i] = decisions[digest]
                committed_digests.add(digest)
                if first < 0:
                    first = digest
        agreement_violation = len({decisions[d] for d in committed_digests}) > 1
        validity_violation = False
        for d in committed_digests:
            honest_votes = [x for i, x in zip(*certificates[d], strict=True) if is_honest[i]]
            if not honest_votes or not min(honest_votes) <= decisions[d] <= max(honest_votes):
                validity_violation = True
        revealed = revealed or list(self._unknown_votes)
        voters, vals = certificates[first]
        for i, x in zip(voters, vals, strict=True):  # the committed certificate's votes win
            revealed[i] = x
        certificate = np.zeros(n, dtype=bool)
        certificate[voters] = True
        return _Decision(
            decisions[first],
            certificate,
            np.array(revealed, dtype=np.int8),
            np.array(honest_commits, dtype=np.int8),
            agreement_violation,
            validity_violation,
        )

    def _convict(self, convictions: list[Conviction], newly: list[int]) -> None:
        """Record convictions (with their proofs) and exclude the convicted from now on."""
        before = len(newly)
        for r, proof in convictions:
            if not self.convicted[r]:
                if self._is_honest[r]:  # cannot happen: honest replicas never sign conflicts
                    raise RuntimeError(f"internal error: honest replica {r} would be convicted")
                self.convicted[r] = True
                self.evidence[r] = proof
                newly.append(r)
        self._stats["convictions"] += len(newly) - before
        self._refresh_masks()

    # ------------------------------------------------------------------ view simulation
    def _view_fast(
        self, view: int, primary: int, changed: bool, vote: list[int], seq: int, mode: int
    ) -> _ViewOutcome:
        """A lossless view, b <= f, a protocol-following primary sending one certificate to all."""
        n = self.n
        rotation = int(self._draw() * (n - 1))
        ring = self._ring[primary]
        arrives = self._vote_arrives
        arrivals = [i for i in ring[rotation:] + ring[:rotation] if arrives[i]]
        certificates = bz.build_certificates(
            mode, primary, arrivals, vote, self._cert_size, self._take_all
        )
        messages = self._fast_view_messages[changed]
        convictions = [
            (s, self._proof(MsgType.PREPARE, view, seq, s, 0, BOGUS_DIGEST))
            for s in self._equivocating_backups
        ]
        return _ViewOutcome(self._fast_commits, certificates, messages, convictions, (0,))

    def _delivery(self) -> list[list[int]]:
        """This view's delivery: [phase][receiver] -> bitmask of senders whose message is on time."""
        if not self._lossy:
            return self._lossless_delivery
        if self._delivery_index >= len(self._delivery_buffer):
            n = self.n
            views = max(8, _DELIVERY_BATCH // (_N_PHASES * n * n))
            ok = self._rng.random((views, _N_PHASES, n, n)) >= self._p_lost
            if n <= 52:  # exact in float64
                masks = (ok @ self._bit_weights).astype(np.int64).tolist()
            else:
                packed = np.packbits(ok, axis=-1, bitorder="little")
                masks = [
                    [[int.from_bytes(row.tobytes(), "little") for row in phase] for phase in view]
                    for view in packed
                ]
            self._delivery_buffer, self._delivery_index = masks, 0
        delivery = self._delivery_buffer[self._delivery_index]
        self._delivery_index += 1
        late = self._late_bits
        if late:  # an always-late sender is never on time
            keep = ~late
            delivery = [[mask & keep for mask in phase] for phase in delivery]
        return delivery

    def _view_full(
        self, view: int, primary: int, changed: bool, vote: list[int], seq: int, mode: int
    ) -> _ViewOutcome:
        """The full simulation of one view, message by message, as sender bitmasks per receiver."""
        n = self.n
        delivery = self._delivery()
        primary_bit = 1 << primary
        active = self._active_bits
        messages = 0
        view_change_quorum = True
        if changed:
            messages += self._n_active * (n - 1)
            backups = delivery[MsgType.VIEW_CHANGE][primary] & active & ~primary_bit
            view_change_quorum = backups.bit_count() + self._active[primary] >= self.quorum
        voters = active & ~primary_bit
        messages += voters.bit_count()
        arrived = delivery[MsgType.VOTE][primary] & voters
        rotation = int(self._draw() * (n - 1))
        ring = self._ring[primary]
        arrivals = [i for i in ring[rotation:] + ring[:rotation] if arrived >> i & 1]
        certificates: list[bz.Certificate] = []
        if mode == bz.PRIMARY_DELAY:
            messages += n - 1
        elif mode != bz.PRIMARY_SILENT and view_change_quorum:
            certificates = bz.build_certificates(
                mode, primary, arrivals, vote, self._cert_size, self._take_all
            )
            if certificates:
                messages += n - 1
        if not certificates:
            return _ViewOutcome(None, certificates, messages, [], ())

        # PRE-PREPARE: the digest each replica holds (-1: none arrived in time)
        pre_prepare = delivery[MsgType.PRE_PREPARE]
        digest = (
            self._single_digest if len(certificates) == 1 else self._alternating_digest[primary]
        )
        holds = [digest[r] if pre_prepare[r] >> primary & 1 else -1 for r in range(n)]
        holds[primary] = 0
        holders = [0, 0]  # bitmask of replicas holding digest 0 / 1
        for r in range(n):
            if holds[r] >= 0:
                holders[holds[r]] |= 1 << r
        holds_any = holders[0] | holders[1]
        seen = tuple(d for d in (0, 1) if holders[d] & self._honest_bits)
        convictions = []
        split = len(seen) > 1
        if split:
            convictions.append(
                (primary, self._proof(MsgType.PRE_PREPARE, view, seq, primary, 0, 1))
            )

        # PREPARE: backups holding a pre-prepare broadcast its digest
        preparers = active & holds_any & ~primary_bit
        messages += preparers.bit_count() * (n - 1)
        got = self._matching_counts(
            MsgType.PREPARE, delivery, preparers, holds, holders, split, view, seq, convictions
        )
        prepared = 0
        need = self.quorum - 1
        for r in range(n):
            if holds[r] >= 0 and got[r] + (preparers >> r & 1) >= need:
                prepared |= 1 << r

        # COMMIT: prepared replicas (and equivocating / late ones holding a digest) broadcast
        follow = self._follow_bits
        committers = active & ((prepared & follow) | (holds_any & ~follow))
        messages += committers.bit_count() * (n - 1)
        got = self._matching_counts(
            MsgType.COMMIT, delivery, committers, holds, holders, split, view, seq, convictions
        )
        commits = None
        for r in self.honest:
            if prepared >> r & 1 and got[r] + 1 >= self.quorum:
                if commits is None:
                    commits = [-1] * n
                commits[r] = holds[r]
        return _ViewOutcome(commits, certificates, messages, convictions, seen)

    def _matching_counts(
        self,
        kind: MsgType,
        delivery: list[list[int]],
        senders: int,
        holds: list[int],
        holders: list[int],
        split: bool,
        view: int,
        seq: int,
        convictions: list[Conviction],
    ) -> list[int]:
        """Per receiver, how many on-time messages of one broadcast phase match the digest it holds.

        Appends to `convictions` each equivocating sender whose conflicting messages reached
        honest replicas.
        """
        n = self.n
        on_time = delivery[kind]
        equivocators = senders & self._equivocating_bits
        consistent = senders & ~equivocators
        backing = [consistent & holders[0], consistent & holders[1]]  # senders of digest 0 / 1
        got = [
            (on_time[r] & backing[d] & ~(1 << r)).bit_count() if d >= 0 else 0
            for r, d in enumerate(holds)
        ]
        if equivocators:
            for e in range(n):
                if not equivocators >> e & 1:
                    continue
                own = holds[e]
                if split:  # collude: confirm to each replica the certificate it holds
                    sent = [d if d >= 0 else own for d in holds]
                else:  # conflict: the real digest to every second replica, a bogus one to the rest
                    sent = [own if even else BOGUS_DIGEST for even in self._even_after[e]]
                reached = set()
                for r in range(n):
                    if r != e and on_time[r] >> e & 1:
                        if sent[r] == holds[r]:
                            got[r] += 1
                        if self._is_honest[r]:
                            reached.add(sent[r])
                if len(reached) > 1:
                    d1, d2 = sorted(reached)[:2]
                    convictions.append((e, self._proof(kind, view, seq, e, d1, d2)))
        return got

    @staticmethod
    def _proof(kind: MsgType, view: int, seq: int, sender: int, d1: int, d2: int) -> Proof:
        """The two conflicting signed messages that convict replica `sender`."""
        first = SignedMessage(kind, view, seq, sender, d1)
        return first, SignedMessage(kind, view, seq, sender, d2)

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, int]:
        """Episode totals keyed by marl_bft_rllib.metrics.BFT_STAT_KEYS."""
        return dict(self._stats)
