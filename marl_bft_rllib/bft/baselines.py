"""Decision rules without BFT consensus, for baselines: a naive majority vote, one random replica.

Both are drop-in replacements of :class:`~marl_bft_rllib.bft.protocol.PBFTConsensus`
(same ``reset`` / ``act_as`` / ``decide`` / ``stats`` and attributes) and script the
Byzantine replicas exactly as it does: the same behaviours, the same learned-attacker
strategies, the same votes signed. Only what is done with the signed votes differs.
Neither has views, view changes or convictions (``view`` stays 0, ``primary`` is
replica 0 and means nothing, ``stats()["views"]`` stays 0), and every honest replica
adopts the one decision, so ``agreement_violation`` is always False.
``validity_violation`` flags a decision outside [min, max] of *all* the honest
replicas' votes of the instance.

- :class:`NaiveMajority`, the lineage's "BFT majority vote": every replica sends its
  signed vote to one tallier, which takes the plurality of the votes that arrive, ties
  broken toward the most severe tied action. A silent replica sends none, a late
  (``delay``) one misses the tally, and the network model of the config applies to each
  vote as it does to a PBFT message (lost with ``p_drop``; an honest one also late with
  ``p_delay``), so the baseline faces the same network as the protocol. No vote at all:
  the fail-safe action, ``committed`` False. ``messages`` counts the votes sent.
- :class:`RandomReplica`: one replica, drawn uniformly per episode at ``reset`` (so it is
  Byzantine with probability b / n), decides alone: the decision is the vote it signs.
  It sends no message (``messages`` is 0), so drops do not apply; a silent or late one
  decides nothing: the fail-safe action, ``committed`` False. ``decider`` is its index.

:data:`DECISION_RULES` maps the names a config uses to the classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from marl_bft_rllib.actions import N_ACTIONS
from marl_bft_rllib.bft.protocol import ConsensusResult, PBFTConsensus

_NOBODY: tuple[int, ...] = ()


class _SignedVotesRule(PBFTConsensus):
    """Shared part of the rules that decide straight from the signed votes, without consensus."""

    def _signed_votes(self, votes: np.ndarray | Sequence[int]) -> list[int]:
        """Every replica's signed vote this instance (-1: none), Byzantine ones scripted."""
        vote = self._check_votes(votes)
        if self._learned:
            self._use_strategies()
        self._script_byzantine_votes(vote)
        return vote

    def _result(
        self, vote: list[int], counted: list[int], decision: int | None, messages: int
    ) -> ConsensusResult:
        """The outcome of an instance decided from the votes of `counted` (None: undecided)."""
        n = self.n
        committed = decision is not None
        certificate = np.zeros(n, dtype=bool)
        revealed = np.full(n, -1, dtype=np.int8)
        validity_violation = False
        if committed:
            certificate[counted] = True
            revealed[counted] = [vote[i] for i in counted]
            honest_commits = self._honest_commits_by_decision[decision].copy()
            honest_votes = [vote[i] for i in self.honest]
            validity_violation = not min(honest_votes) <= decision <= max(honest_votes)
        else:
            decision = self.config.fail_safe_action
            honest_commits = np.full(n, -1, dtype=np.int8)
        self.seq += 1
        stats = self._stats
        stats["messages"] += messages
        stats["undecided"] += not committed
        stats["validity_violations"] += validity_violation
        return ConsensusResult(
            decision=decision,
            committed=committed,
            view=self.view,
            primary=self.primary,
            view_changes=0,
            certificate=certificate,
            revealed_votes=revealed,
            honest_commits=honest_commits,
            messages=messages,
            newly_convicted=_NOBODY,
            agreement_violation=False,
            validity_violation=validity_violation,
            signed_votes=np.array(vote, dtype=np.int8),
        )


class NaiveMajority(_SignedVotesRule):
    """No protocol: the plurality of the signed votes that reach the tallier (ties: most severe)."""

    def decide(self, votes: np.ndarray) -> ConsensusResult:
        """Tally this instance's signed votes that arrive; none: the fail-safe action."""
        vote = self._signed_votes(votes)
        n = self.n
        arrives = self._vote_arrives  # sends a vote, and not past the deadline
        if self._lossy:
            on_time = (self._rng.random(n) >= self._p_lost).tolist()
            counted = [i for i in range(n) if arrives[i] and on_time[i]]
        else:
            counted = [i for i in range(n) if arrives[i]]
        decision = None
        if counted:
            tally = [0] * N_ACTIONS
            for i in counted:
                tally[vote[i]] += 1
            decision = max(range(N_ACTIONS), key=lambda a: (tally[a], a))
        return self._result(vote, counted, decision, self._n_active)


class RandomReplica(_SignedVotesRule):
    """One replica, drawn uniformly per episode, decides alone with the vote it signs."""

    def reset(
        self,
        rng: np.random.Generator,
        byzantine: Sequence[int] | None = None,
        behaviors: str | Sequence[str] | Mapping[int, str] | None = None,
    ) -> None:
        """Start an episode as PBFTConsensus.reset does, then draw the deciding replica."""
        super().reset(rng, byzantine, behaviors)
        # a stream of its own, spawned from the episode's: every draw of the episode's rng
        # and of the engine's stream stays as in PBFTConsensus
        picker = np.random.default_rng(self._rng.bit_generator.seed_seq.spawn(1)[0])
        self.decider: int = int(picker.integers(self.n))

    def decide(self, votes: np.ndarray) -> ConsensusResult:
        """The decider's signed vote; a silent or late decider: the fail-safe action."""
        vote = self._signed_votes(votes)
        d = self.decider
        if vote[d] >= 0 and self._vote_arrives[d]:
            return self._result(vote, [d], vote[d], 0)
        return self._result(vote, [], None, 0)


DECISION_RULES: dict[str, type[PBFTConsensus]] = {
    "pbft": PBFTConsensus,
    "majority": NaiveMajority,
    "random_replica": RandomReplica,
}
