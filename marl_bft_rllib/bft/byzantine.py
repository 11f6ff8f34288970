"""Scripted Byzantine behaviours: what a faulty replica votes and how it acts as primary.

| behaviour          | its vote                         | as backup (PREPARE/COMMIT)    | as primary                         |
|--------------------|----------------------------------|-------------------------------|------------------------------------|
| silent             | none                             | sends nothing                 | sends nothing: the view fails      |
| equivocate         | an honest-looking vote           | conflicting digests to        | two certificates (its own vote     |
|                    |                                  | different replicas            | signed Allow in one, Quarantine in |
|                    |                                  |                               | the other) to alternate replicas   |
| always_allow       | Allow                            | follows the protocol          | builds a certificate like an       |
|                    |                                  |                               | honest primary                     |
| always_quarantine  | Quarantine                       | follows the protocol          | like an honest primary             |
| random             | uniform random action            | follows the protocol          | like an honest primary             |
| delay              | sent, arrives past the deadline  | sent, past the deadline       | pre-prepare past the deadline      |
| on_off             | honest phase: honest-looking;    | follows the protocol          | honest phase: like honest;         |
|                    | malicious phase: Allow           |                               | malicious phase: selective         |
| selective_primary  | an honest-looking vote           | follows the protocol          | keeps the n - f least severe votes |

An "honest-looking" vote copies the vote of a uniformly drawn honest replica this step.
`on_off` alternates phases of `on_off_period` steps, honest first. An equivocating
backup, when the honest replicas hold different certificates (an equivocating
primary), sends each of them messages supporting the one it holds (collusion);
otherwise it sends the right digest to every second replica in ring order and
a made-up one to the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft.config import BEHAVIORS

HONEST = 0
SILENT, EQUIVOCATE, ALWAYS_ALLOW, ALWAYS_QUARANTINE, RANDOM, DELAY, ON_OFF, SELECTIVE = range(
    1, len(BEHAVIORS) + 1
)
CODE: dict[str, int] = {name: i + 1 for i, name in enumerate(BEHAVIORS)}
# Replicas that run PREPARE / COMMIT like an honest replica (only their votes, or their
# certificates as primary, are malicious).
FOLLOWS_PROTOCOL = frozenset({HONEST, ALWAYS_ALLOW, ALWAYS_QUARANTINE, RANDOM, ON_OFF, SELECTIVE})

# What a primary does with the votes it received.
PRIMARY_HONEST, PRIMARY_SELECTIVE, PRIMARY_EQUIVOCATE, PRIMARY_SILENT, PRIMARY_DELAY = range(5)


def on_off_malicious(seq: int, period: int) -> bool:
    """True when an on_off replica is in its malicious phase at instance `seq`."""
    return (seq // period) % 2 == 1


def scripted_vote(
    code: int,
    seq: int,
    period: int,
    votes: Sequence[int],
    honest: Sequence[int],
    draw: Callable[[], float],
) -> int:
    """The vote a Byzantine replica signs for instance `seq` (-1: it sends none)."""
    if code == SILENT:
        return -1
    if code == ALWAYS_ALLOW:
        return int(Action.ALLOW)
    if code == ALWAYS_QUARANTINE:
        return int(Action.QUARANTINE)
    if code == RANDOM:
        return int(draw() * 4)
    if code == DELAY:
        return int(Action.ALLOW)  # never arrives in time, so its value never matters
    if code == ON_OFF and on_off_malicious(seq, period):
        return int(Action.ALLOW)
    # equivocate, selective_primary, on_off honest phase: look honest
    return votes[honest[int(draw() * len(honest))]]


def primary_mode(code: int, seq: int, period: int) -> int:
    """How a replica with behaviour `code` acts as primary at instance `seq`."""
    if code == SILENT:
        return PRIMARY_SILENT
    if code == DELAY:
        return PRIMARY_DELAY
    if code == EQUIVOCATE:
        return PRIMARY_EQUIVOCATE
    if code == SELECTIVE or (code == ON_OFF and on_off_malicious(seq, period)):
        return PRIMARY_SELECTIVE
    return PRIMARY_HONEST


Certificate = tuple[list[int], list[int]]  # (voters, their votes), primary first


def build_certificates(
    mode: int, primary: int, arrivals: Sequence[int], vote: Sequence[int], size: int
) -> list[Certificate]:
    """Certificates a primary signs from its own vote and `arrivals` (backups in arrival order).

    Returns [] when fewer than `size` votes are available, one certificate normally,
    two conflicting ones for an equivocating primary.
    """
    if len(arrivals) + 1 < size:
        return []
    k = size - 1
    if mode == PRIMARY_HONEST:
        voters = [primary, *arrivals[:k]]
        return [(voters, [vote[i] for i in voters])]
    if mode == PRIMARY_SELECTIVE:
        pool = [primary, *arrivals]
        pool.sort(key=lambda i: vote[i])  # stable: ties keep arrival order
        voters = pool[:size]
        return [(voters, [vote[i] for i in voters])]
    # equivocate: own vote signed Allow with the least severe, Quarantine with the most severe
    low = sorted(arrivals, key=lambda i: vote[i])[:k]
    high = sorted(arrivals, key=lambda i: -vote[i])[:k]
    return [
        ([primary, *low], [int(Action.ALLOW), *(vote[i] for i in low)]),
        ([primary, *high], [int(Action.QUARANTINE), *(vote[i] for i in high)]),
    ]
