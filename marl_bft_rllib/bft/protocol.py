"""PBFT-style consensus on each env step's response, simulated fast enough for RL.

One consensus *instance* per env step decides the response to that step's event;
its sequence number ``seq`` is the step index. Replicas ``0 .. n-1``; ``f = (n-1)//3``;
the Byzantine ones are scripted (see :mod:`marl_bft_rllib.bft.byzantine`).

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
   sends it to every backup. Replicas accept it when its voters are authentic,
   distinct and not convicted, and the view and seq are right (the simulated
   certificates always are; only delivery can fail).
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
certificate to everyone (honest or a protocol-following Byzantine), the outcome is
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
from marl_bft_rllib.bft.config import BEHAVIORS, BFTConfig
from marl_bft_rllib.bft.messages import BOGUS_DIGEST, MsgType, SignedMessage
from marl_bft_rllib.metrics import BFT_STAT_KEYS

_N_PHASES = len(MsgType)
_BUFFER = 2048  # uniforms drawn at once for the per-step scripted randomness
_DELIVERY_BATCH = 1 << 16  # message deliveries drawn at once (whole views)


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


# One view's outcome: per-replica committed digest (-1 none; only honest rows are read),
# the certificates, messages sent, new convictions, digests seen by honest replicas.
_ViewOutcome = tuple[
    list[int] | None,
    list[bz.Certificate],
    int,
    list[tuple[int, tuple[SignedMessage, SignedMessage]]],
    tuple[int, ...],
]


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
        self._m = n - f  # certificate size
        self._pick = n - f - 1 - f  # index of the robust aggregate in the sorted certificate
        self._deadline = config.deadline
        self._lossy = config.p_drop > 0.0 or config.p_delay > 0.0
        self._ring = [[(p + 1 + j) % n for j in range(n - 1)] for p in range(n)]
        # parity[s][r]: r is at an even position in ring order after s (gets the real digest)
        self._parity_list = [[((r - s - 1) % n) % 2 == 0 for r in range(n)] for s in range(n)]
        self._alt_digest = [[0 if par else 1 for par in row] for row in self._parity_list]
        self._zero_digest = [0] * n
        self._bit_weights = np.array([float(1 << i) for i in range(n)])
        self._force_slow = False  # tests: run the full simulation even where the fast path applies
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
        """
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
        bad = [name for name in names if name not in BEHAVIORS]
        if bad:
            raise ValueError(
                f"behaviors: unknown behaviour(s) {bad}; expected names from {BEHAVIORS}"
            )

        self._rng = np.random.default_rng(int(rng.integers(2**63)))
        self.byzantine: tuple[int, ...] = tuple(byz)
        self.honest: tuple[int, ...] = tuple(i for i in range(n) if i not in set(byz))
        self.behaviors: dict[int, str] = dict(zip(byz, names, strict=True))
        code = [0] * n
        for i, name in self.behaviors.items():
            code[i] = bz.CODE[name]
        self._code = code
        self._honest_bits = _bits(c == bz.HONEST for c in code)
        self._follow_bits = _bits(c in bz.FOLLOWS_PROTOCOL for c in code)
        self._eq_bits = _bits(c == bz.EQUIVOCATE for c in code)
        self._n_h = len(self.honest)
        # a sender's probability of missing the deadline, per message
        keep_h = (1.0 - cfg.p_drop) * (1.0 - cfg.p_delay)
        plost = [1.0 - keep_h if c == bz.HONEST else cfg.p_drop for c in code]
        plost = [2.0 if c == bz.DELAY else x for c, x in zip(code, plost, strict=True)]
        self._plost_row = np.array(plost)  # uniforms are < 1: a `delay` sender is never on time
        on_time = _bits(x < 1.0 for x in plost)
        self._static_cols = [[on_time & ~(1 << r) for r in range(n)] for _ in range(_N_PHASES)]
        self._dbuf: list[list[list[int]]] = []
        self._di = 0
        self._fast = not self._lossy and len(byz) <= self.f
        self._commit_template = [0 if c == bz.HONEST else -1 for c in code]
        self._is_honest = [c == bz.HONEST for c in code]
        self._hc_by_decision = [
            np.array([d if h else -1 for h in self._is_honest], dtype=np.int8)
            for d in range(N_ACTIONS)
        ]
        self._unknown = [-1] * n
        self._ubuf: list[float] = []
        self._ui = 0

        self.view = 0
        self.seq = 0
        self.convicted = np.zeros(n, dtype=bool)
        self.evidence: dict[int, tuple[SignedMessage, SignedMessage]] = {}
        self._pending_change = False
        self._stats = dict.fromkeys(BFT_STAT_KEYS, 0)
        self._refresh_masks()

    def _refresh_masks(self) -> None:
        """Recompute who is active / whose vote can arrive after a conviction."""
        conv = self.convicted.tolist()
        self._conv = conv
        code = self._code
        self._active = [not conv[i] and code[i] != bz.SILENT for i in range(self.n)]
        self._arrive = [a and code[i] != bz.DELAY for i, a in enumerate(self._active)]
        self._active_bits = _bits(self._active)
        self._n_active = sum(self._active)
        self._eq_backups = [
            i for i in range(self.n) if self._active[i] and code[i] == bz.EQUIVOCATE
        ]

    def _draw(self) -> float:
        """Next uniform in [0, 1) from the episode's buffered stream."""
        if self._ui >= len(self._ubuf):
            self._ubuf = self._rng.random(_BUFFER).tolist()
            self._ui = 0
        u = self._ubuf[self._ui]
        self._ui += 1
        return u

    @property
    def primary(self) -> int:
        """Primary of the current view."""
        return self.view % self.n

    # ------------------------------------------------------------------ one instance
    def decide(self, votes: np.ndarray) -> ConsensusResult:
        """Run one consensus instance on the honest replicas' votes and return its outcome."""
        n = self.n
        vote = self._check_votes(votes)
        seq, code = self.seq, self._code
        for i in self.byzantine:
            vote[i] = bz.scripted_vote(
                code[i], seq, self.config.on_off_period, vote, self.honest, self._draw
            )

        messages = view_changes = views = 0
        newly: list[int] = []
        revealed: list[int] | None = None
        commit: list[int] | None = None
        certs: list[bz.Certificate] = []
        changed = self._pending_change  # the previous instance was undecided (change counted there)
        for k in range(self._deadline):
            v = self.view
            p = v % n
            views += 1
            if not self._conv[p]:
                if self._fast and code[p] in bz.FOLLOWS_PROTOCOL and not self._force_slow:
                    out = self._view_fast(v, p, changed, vote, seq)
                else:
                    out = self._view_slow(v, p, changed, vote, seq)
                commit, certs, msgs, convicts, seen = out
                messages += msgs
                if seen:
                    if revealed is None:
                        revealed = [-1] * n
                    for d in seen:
                        for i, x in zip(*certs[d], strict=True):
                            revealed[i] = x
                if convicts:
                    self._convict(convicts, newly)
                if commit is not None:
                    break
            changed = True
            if k + 1 < self._deadline:
                self.view += 1
                view_changes += 1
        self.seq += 1
        stats = self._stats
        stats["views"] += views
        stats["messages"] += messages
        if commit is None:  # undecided: fail-safe, and the next instance starts in a new view
            self.view += 1
            view_changes += 1
            self._pending_change = True
            stats["view_changes"] += view_changes
            stats["undecided"] += 1
            return ConsensusResult(
                decision=self.config.fail_safe_action,
                committed=False,
                view=v,
                primary=p,
                view_changes=view_changes,
                certificate=np.zeros(n, dtype=bool),
                revealed_votes=np.array(revealed or self._unknown, dtype=np.int8),
                honest_commits=np.full(n, -1, dtype=np.int8),
                messages=messages,
                newly_convicted=tuple(newly),
                agreement_violation=False,
                validity_violation=False,
            )
        self._pending_change = False
        if view_changes:
            stats["view_changes"] += view_changes
        pick, is_honest = self._pick, self._is_honest
        if commit is self._commit_template:  # fast path: every honest replica committed cert 0
            voters, vals = certs[0]
            decision = sorted(vals)[pick]
            honest_votes = [x for i, x in zip(voters, vals, strict=True) if is_honest[i]]
            validity = not honest_votes or not min(honest_votes) <= decision <= max(honest_votes)
            agreement = False
            honest_commits = self._hc_by_decision[decision].copy()
            if views == 1:  # only this certificate was revealed
                revealed_arr = np.fromiter(revealed, np.int8, n)
                cert_mask = revealed_arr >= 0
            else:
                revealed_arr = np.array(revealed, dtype=np.int8)
                cert_mask = np.zeros(n, dtype=bool)
                cert_mask[voters] = True
        else:
            decision, cert_mask, revealed_arr, honest_commits, agreement, validity = self._outcome(
                commit, certs, revealed
            )
        if agreement:
            stats["agreement_violations"] += 1
        if validity:
            stats["validity_violations"] += 1
        return ConsensusResult(
            decision=decision,
            committed=True,
            view=v,
            primary=p,
            view_changes=view_changes,
            certificate=cert_mask,
            revealed_votes=revealed_arr,
            honest_commits=honest_commits,
            messages=messages,
            newly_convicted=tuple(newly),
            agreement_violation=agreement,
            validity_violation=validity,
        )

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

    def _convict(
        self, convicts: list[tuple[int, tuple[SignedMessage, SignedMessage]]], newly: list[int]
    ) -> None:
        """Record convictions (with their proofs) and exclude the convicted from now on."""
        before = len(newly)
        for r, proof in convicts:
            if not self.convicted[r]:
                if self._is_honest[r]:  # cannot happen: honest replicas never sign conflicts
                    raise RuntimeError(f"internal error: honest replica {r} would be convicted")
                self.convicted[r] = True
                self.evidence[r] = proof
                newly.append(r)
        self._stats["convictions"] += len(newly) - before
        self._refresh_masks()

    def _outcome(
        self, commit: list[int], certs: list[bz.Certificate], revealed: list[int] | None
    ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, bool, bool]:
        """Decision, certificate mask, revealed votes, honest commits and violation flags."""
        n, pick = self.n, self._pick
        decisions = [sorted(vals)[pick] for _, vals in certs]
        honest_commits = [-1] * n
        first = -1
        used: set[int] = set()
        for i in self.honest:
            d = commit[i]
            if d >= 0:
                honest_commits[i] = decisions[d]
                used.add(d)
                if first < 0:
                    first = d
        agreement = len({decisions[d] for d in used}) > 1
        validity = False
        for d in used:
            hv = [x for i, x in zip(*certs[d], strict=True) if self._is_honest[i]]
            if not hv or not min(hv) <= decisions[d] <= max(hv):
                validity = True
        revealed = revealed or list(self._unknown)
        for i, x in zip(*certs[first], strict=True):  # the committed certificate's votes win
            revealed[i] = x
        cert_mask = np.zeros(n, dtype=bool)
        cert_mask[certs[first][0]] = True
        return (
            decisions[first],
            cert_mask,
            np.array(revealed, dtype=np.int8),
            np.array(honest_commits, dtype=np.int8),
            agreement,
            validity,
        )

    # ------------------------------------------------------------------ view simulation
    def _view_fast(self, v: int, p: int, changed: bool, vote: list[int], seq: int) -> _ViewOutcome:
        """A lossless view with b <= f and a primary sending one certificate to all."""
        n = self.n
        k = int(self._draw() * (n - 1))
        ring = self._ring[p]
        arrive = self._arrive
        arrivals = [i for i in ring[k:] + ring[:k] if arrive[i]]
        code = self._code[p]
        mode = (
            bz.PRIMARY_HONEST
            if code == bz.HONEST
            else bz.primary_mode(code, seq, self.config.on_off_period)
        )
        certs = bz.build_certificates(mode, p, arrivals, vote, self._m)
        a = self._n_active  # honest + active Byzantine; all of them send in every phase
        msgs = (a * (n - 1) if changed else 0) + (a - 1) + (n - 1) + (2 * a - 1) * (n - 1)
        convicts = []
        for s in self._eq_backups:
            convicts.append((s, self._proof(MsgType.PREPARE, v, seq, s, 0, BOGUS_DIGEST)))
        return self._commit_template, certs, msgs, convicts, (0,)

    def _delivery(self) -> list[list[int]]:
        """This view's delivery: [phase][receiver] -> bitmask of senders whose message is on time."""
        if not self._lossy:
            return self._static_cols
        if self._di >= len(self._dbuf):
            n = self.n
            views = max(8, _DELIVERY_BATCH // (_N_PHASES * n * n))
            ok = self._rng.random((views, _N_PHASES, n, n)) >= self._plost_row
            if n <= 52:  # exact in float64
                masks = (ok @ self._bit_weights).astype(np.int64).tolist()
            else:
                packed = np.packbits(ok, axis=-1, bitorder="little")
                masks = [
                    [[int.from_bytes(row.tobytes(), "little") for row in phase] for phase in view]
                    for view in packed
                ]
            self._dbuf, self._di = masks, 0
        cols = self._dbuf[self._di]
        self._di += 1
        return cols

    def _view_slow(self, v: int, p: int, changed: bool, vote: list[int], seq: int) -> _ViewOutcome:
        """The full simulation of one view, message by message, as sender bitmasks per receiver."""
        n = self.n
        cols = self._delivery()
        bp = 1 << p
        active = self._active_bits
        msgs = 0
        vc_quorum = True
        if changed:
            msgs += self._n_active * (n - 1)
            got = (cols[MsgType.VIEW_CHANGE][p] & active & ~bp).bit_count() + self._active[p]
            vc_quorum = got >= self.quorum
        senders = active & ~bp
        msgs += senders.bit_count()
        arrived = cols[MsgType.VOTE][p] & senders
        k = int(self._draw() * (n - 1))
        ring = self._ring[p]
        arrivals = [i for i in ring[k:] + ring[:k] if arrived >> i & 1]
        pcode = self._code[p]
        mode = (
            bz.PRIMARY_HONEST
            if pcode == bz.HONEST
            else bz.primary_mode(pcode, seq, self.config.on_off_period)
        )
        certs: list[bz.Certificate] = []
        if mode == bz.PRIMARY_DELAY:
            msgs += n - 1
        elif mode != bz.PRIMARY_SILENT and vc_quorum:
            certs = bz.build_certificates(mode, p, arrivals, vote, self._m)
            if certs:
                msgs += n - 1
        if not certs:
            return None, certs, msgs, [], ()

        # PRE-PREPARE: the digest each replica holds (-1: none arrived in time)
        pp = cols[MsgType.PRE_PREPARE]
        digest = self._zero_digest if len(certs) == 1 else self._alt_digest[p]
        holds = [digest[r] if pp[r] >> p & 1 else -1 for r in range(n)]
        holds[p] = 0
        held = [0, 0]  # bitmask of replicas holding digest 0 / 1
        for r in range(n):
            if holds[r] >= 0:
                held[holds[r]] |= 1 << r
        has = held[0] | held[1]
        hb = self._honest_bits
        seen = tuple(d for d in (0, 1) if held[d] & hb)
        convicts = []
        if len(seen) > 1:
            convicts.append((p, self._proof(MsgType.PRE_PREPARE, v, seq, p, 0, 1)))
        split = len(seen) > 1

        # PREPARE: backups holding a pre-prepare broadcast its digest
        psend = active & has & ~bp
        msgs += psend.bit_count() * (n - 1)
        got = self._count(
            MsgType.PREPARE, cols[MsgType.PREPARE], psend, holds, held, split, v, seq, convicts
        )
        prepared = 0
        need = self.quorum - 1
        for r in range(n):
            if holds[r] >= 0 and got[r] + (psend >> r & 1) >= need:
                prepared |= 1 << r

        # COMMIT: prepared replicas (and equivocating / late ones holding a digest) broadcast
        fb = self._follow_bits
        csend = active & ((prepared & fb) | (has & ~fb))
        msgs += csend.bit_count() * (n - 1)
        got = self._count(
            MsgType.COMMIT, cols[MsgType.COMMIT], csend, holds, held, split, v, seq, convicts
        )
        commit = None
        for r in self.honest:
            if prepared >> r & 1 and got[r] + 1 >= self.quorum:
                if commit is None:
                    commit = [-1] * n
                commit[r] = holds[r]
        return commit, certs, msgs, convicts, seen

    def _count(
        self,
        kind: MsgType,
        cols: list[int],
        send: int,
        holds: list[int],
        held: list[int],
        split: bool,
        v: int,
        seq: int,
        convicts: list[tuple[int, tuple[SignedMessage, SignedMessage]]],
    ) -> list[int]:
        """Per receiver, how many on-time messages of one broadcast phase match the digest it holds.

        Convicts each equivocating sender whose conflicting messages reached honest replicas.
        """
        n = self.n
        eq = send & self._eq_bits
        normal = send & ~eq
        same = [normal & held[0], normal & held[1]]
        got = [
            (cols[r] & same[h] & ~(1 << r)).bit_count() if h >= 0 else 0
            for r, h in enumerate(holds)
        ]
        if eq:
            for e in range(n):
                if not eq >> e & 1:
                    continue
                base = holds[e]
                if split:  # collude: confirm to each replica the certificate it holds
                    row = [h if h >= 0 else base for h in holds]
                else:  # conflict: the real digest to every second replica, a bogus one to the rest
                    row = [base if par else BOGUS_DIGEST for par in self._parity_list[e]]
                reached = set()
                for r in range(n):
                    if r != e and cols[r] >> e & 1:
                        if row[r] == holds[r]:
                            got[r] += 1
                        if self._is_honest[r]:
                            reached.add(row[r])
                if len(reached) > 1:
                    d1, d2 = sorted(reached)[:2]
                    convicts.append((e, self._proof(kind, v, seq, e, d1, d2)))
        return got

    @staticmethod
    def _proof(
        kind: MsgType, v: int, seq: int, s: int, d1: int, d2: int
    ) -> tuple[SignedMessage, SignedMessage]:
        """The two conflicting signed messages that convict replica `s`."""
        return SignedMessage(kind, v, seq, s, d1), SignedMessage(kind, v, seq, s, d2)

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, int]:
        """Episode totals keyed by marl_bft_rllib.metrics.BFT_STAT_KEYS."""
        return dict(self._stats)
