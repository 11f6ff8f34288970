"""Scripted Byzantine behaviours: what a faulty replica votes and how it acts as primary.

Each behaviour is one :class:`ByzantineBehavior` record in :data:`BEHAVIOR_REGISTRY`,
and adding a behaviour is adding a record there: ``config.BEHAVIORS`` (the names, in
registry order), the integer codes and the code sets and rule tables the protocol's hot
path indexes are all derived from the records, and so is this table (from the records'
``*_doc`` cells):

{behavior_table}

An "honest-looking" vote copies the vote of a uniformly drawn honest replica this step.
`on_off` alternates phases of `on_off_period` steps, honest first. An equivocating
backup, when the honest replicas hold different certificates (an equivocating
primary), sends each of them messages supporting the one it holds (collusion);
otherwise it sends the right digest to every second replica in ring order and
a made-up one to the others.

A learned attacker (behaviour name :data:`LEARNED`, never in a configured pool) picks,
every consensus instance, one *message strategy* from :data:`STRATEGY_REGISTRY`: records
of the same kind, with codes continuing after the behaviours', in action-index order
(:data:`ATTACKER_STRATEGIES`). All of them stay inside the authenticated-message model:
a strategy chooses what the attacker itself signs and sends, never an honest replica's
message.

{strategy_table}
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest

from marl_bft_rllib.actions import N_ACTIONS, Action

HONEST = 0  # code of an honest replica; behaviour codes are 1, 2, ..., then strategy codes
LEARNED = "learned"  # behaviour name of a replica driven by a learned attacker (not a record)

# What a primary does with the votes it received.
PRIMARY_HONEST, PRIMARY_SELECTIVE, PRIMARY_EQUIVOCATE, PRIMARY_SILENT, PRIMARY_DELAY = range(5)

# How a replica sends its protocol messages (ByzantineBehavior.messages).
MESSAGE_MODES: tuple[str, ...] = (
    "protocol",  # every message the protocol asks for, on time like an honest replica's
    "none",  # no message at all (no vote either)
    "late",  # every message, each past the view's deadline
    "conflicting",  # as a backup, conflicting PREPARE / COMMIT digests to different replicas
)

Draw = Callable[[], float]  # next uniform in [0, 1) of the episode's stream
# (seq, on_off_period, votes of all replicas, honest ids, draw) -> the vote it signs (-1: none).
# A rule's draws are part of the episode's random stream: changing them changes what follows.
VoteRule = Callable[[int, int, Sequence[int], Sequence[int], Draw], int]
# (seq, on_off_period) -> one of the PRIMARY_* modes
PrimaryRule = Callable[[int, int], int]


@dataclass(frozen=True, slots=True)
class ByzantineBehavior:
    """A scripted Byzantine behaviour or a learned attacker's strategy: name, code, rules, docs."""

    name: str
    code: int  # id the protocol works with: 1, 2, ... behaviours then strategies (0: honest)
    messages: str  # one of MESSAGE_MODES
    vote: VoteRule  # the vote it signs each instance
    primary: PrimaryRule  # how it acts as primary; agree with `messages` ("none" -> silent)
    vote_doc: str  # docs table cells: its vote, as backup, as primary
    backup_doc: str
    primary_doc: str

    def __post_init__(self) -> None:
        if self.messages not in MESSAGE_MODES:
            raise ValueError(
                f"messages: expected one of {MESSAGE_MODES}, got {self.messages!r} ({self.name})"
            )
        if self.code <= HONEST:
            raise ValueError(f"code: must be > {HONEST}, got {self.code} ({self.name})")

    @property
    def follows_protocol(self) -> bool:
        """True when it sends its messages like an honest replica (only their content lies)."""
        return self.messages == "protocol"


def on_off_malicious(seq: int, period: int) -> bool:
    """True when an on_off replica is in its malicious phase at instance `seq`."""
    return (seq // period) % 2 == 1


# ---------------------------------------------------------------- vote and primary rules
def _no_vote(seq: int, period: int, votes: Sequence[int], honest: Sequence[int], draw: Draw) -> int:
    """Sends no vote."""
    return -1


def _fixed_vote(action: Action) -> VoteRule:
    """A rule that always votes `action`."""
    value = int(action)

    def rule(seq: int, period: int, votes: Sequence[int], honest: Sequence[int], draw: Draw) -> int:
        return value

    return rule


def _uniform_vote(
    seq: int, period: int, votes: Sequence[int], honest: Sequence[int], draw: Draw
) -> int:
    """A uniformly random action."""
    return int(draw() * N_ACTIONS)


def _honest_looking_vote(
    seq: int, period: int, votes: Sequence[int], honest: Sequence[int], draw: Draw
) -> int:
    """The vote of a uniformly drawn honest replica."""
    return votes[honest[int(draw() * len(honest))]]


def _on_off_vote(
    seq: int, period: int, votes: Sequence[int], honest: Sequence[int], draw: Draw
) -> int:
    """Allow in the malicious phase, honest-looking in the honest one."""
    if on_off_malicious(seq, period):
        return int(Action.ALLOW)
    return _honest_looking_vote(seq, period, votes, honest, draw)


def _fixed_primary(mode: int) -> PrimaryRule:
    """A rule that always acts as primary in `mode`."""

    def rule(seq: int, period: int) -> int:
        return mode

    return rule


def _on_off_primary(seq: int, period: int) -> int:
    """Selective in the malicious phase, honest in the honest one."""
    return PRIMARY_SELECTIVE if on_off_malicious(seq, period) else PRIMARY_HONEST


# ---------------------------------------------------------------- the registry
_BEHAVIORS: tuple[ByzantineBehavior, ...] = (
    ByzantineBehavior(
        "silent",
        1,
        messages="none",
        vote=_no_vote,
        primary=_fixed_primary(PRIMARY_SILENT),
        vote_doc="none",
        backup_doc="sends nothing",
        primary_doc="sends nothing: the view fails",
    ),
    ByzantineBehavior(
        "equivocate",
        2,
        messages="conflicting",
        vote=_honest_looking_vote,
        primary=_fixed_primary(PRIMARY_EQUIVOCATE),
        vote_doc="an honest-looking vote",
        backup_doc="conflicting digests to different replicas",
        primary_doc="two certificates (its own vote signed Allow in one, Quarantine in the "
        "other) to alternate replicas",
    ),
    ByzantineBehavior(
        "always_allow",
        3,
        messages="protocol",
        vote=_fixed_vote(Action.ALLOW),
        primary=_fixed_primary(PRIMARY_HONEST),
        vote_doc="Allow",
        backup_doc="follows the protocol",
        primary_doc="builds a certificate like an honest primary",
    ),
    ByzantineBehavior(
        "always_quarantine",
        4,
        messages="protocol",
        vote=_fixed_vote(Action.QUARANTINE),
        primary=_fixed_primary(PRIMARY_HONEST),
        vote_doc="Quarantine",
        backup_doc="follows the protocol",
        primary_doc="like an honest primary",
    ),
    ByzantineBehavior(
        "random",
        5,
        messages="protocol",
        vote=_uniform_vote,
        primary=_fixed_primary(PRIMARY_HONEST),
        vote_doc="uniform random action",
        backup_doc="follows the protocol",
        primary_doc="like an honest primary",
    ),
    ByzantineBehavior(
        "delay",
        6,
        messages="late",
        vote=_fixed_vote(Action.ALLOW),  # never arrives in time, so its value never matters
        primary=_fixed_primary(PRIMARY_DELAY),
        vote_doc="sent, arrives past the deadline",
        backup_doc="sent, past the deadline",
        primary_doc="pre-prepare past the deadline",
    ),
    ByzantineBehavior(
        "on_off",
        7,
        messages="protocol",
        vote=_on_off_vote,
        primary=_on_off_primary,
        vote_doc="honest phase: honest-looking; malicious phase: Allow",
        backup_doc="follows the protocol",
        primary_doc="honest phase: like honest; malicious phase: selective",
    ),
    ByzantineBehavior(
        "selective_primary",
        8,
        messages="protocol",
        vote=_honest_looking_vote,
        primary=_fixed_primary(PRIMARY_SELECTIVE),
        vote_doc="an honest-looking vote",
        backup_doc="follows the protocol",
        primary_doc="keeps the n - f least severe votes",
    ),
)
BEHAVIOR_REGISTRY: dict[str, ByzantineBehavior] = {b.name: b for b in _BEHAVIORS}


# ---------------------------------------------------------------- learned attackers' strategies
# Codes continue after the behaviours'; the order is the attacker's action index.
def _vote_strategy(action: Action, code: int) -> ByzantineBehavior:
    """The strategy that signs ``action`` and otherwise acts like an honest replica."""
    name = action.name.lower()
    return ByzantineBehavior(
        f"vote_{name}",
        code,
        messages="protocol",
        vote=_fixed_vote(action),
        primary=_fixed_primary(PRIMARY_HONEST),
        vote_doc=name.title(),
        backup_doc="follows the protocol",
        primary_doc="builds a certificate like an honest primary",
    )


_FIRST_STRATEGY_CODE = len(_BEHAVIORS) + 1
_STRATEGIES: tuple[ByzantineBehavior, ...] = (
    *(_vote_strategy(a, _FIRST_STRATEGY_CODE + int(a)) for a in Action),
    # the scripted behaviours that are one-step strategies already, under their own code
    *(
        replace(BEHAVIOR_REGISTRY[name], code=_FIRST_STRATEGY_CODE + N_ACTIONS + k)
        for k, name in enumerate(("equivocate", "silent", "delay"))
    ),
    ByzantineBehavior(
        "omit",
        _FIRST_STRATEGY_CODE + N_ACTIONS + 3,
        messages="protocol",
        vote=_fixed_vote(Action.ALLOW),
        primary=_fixed_primary(PRIMARY_SELECTIVE),
        vote_doc="Allow",
        backup_doc="follows the protocol",
        primary_doc="keeps the n - f least severe votes",
    ),
    ByzantineBehavior(
        "stall",
        _FIRST_STRATEGY_CODE + N_ACTIONS + 4,
        messages="protocol",
        vote=_fixed_vote(Action.ALLOW),
        primary=_fixed_primary(PRIMARY_SILENT),
        vote_doc="Allow",
        backup_doc="follows the protocol",
        primary_doc="sends nothing: the view fails",
    ),
)
STRATEGY_REGISTRY: dict[str, ByzantineBehavior] = {s.name: s for s in _STRATEGIES}
ATTACKER_STRATEGIES: tuple[str, ...] = tuple(STRATEGY_REGISTRY)  # names by action index
N_STRATEGIES = len(ATTACKER_STRATEGIES)
# the plain votes, vote_allow .. vote_quarantine (actions 0-3): an attacker never convicted
VOTE_STRATEGIES: tuple[str, ...] = ATTACKER_STRATEGIES[:N_ACTIONS]
STRATEGY_CODES: tuple[int, ...] = tuple(s.code for s in _STRATEGIES)  # code by action index


def _check_registries() -> None:
    """Raise RuntimeError when the records' names, codes or message modes are inconsistent."""
    if len(BEHAVIOR_REGISTRY) != len(_BEHAVIORS):
        raise RuntimeError("ByzantineBehavior names must be distinct")
    if len(STRATEGY_REGISTRY) != len(_STRATEGIES):
        raise RuntimeError("strategy names must be distinct")
    if LEARNED in BEHAVIOR_REGISTRY:
        raise RuntimeError(f"{LEARNED!r} is reserved for learned attackers, not a behaviour")
    if VOTE_STRATEGIES != tuple(f"vote_{a.name.lower()}" for a in Action):
        raise RuntimeError("the first strategies must be the plain votes, in severity order")
    records = (*_BEHAVIORS, *_STRATEGIES)
    if [r.code for r in records] != list(range(1, len(records) + 1)):
        raise RuntimeError(
            "ByzantineBehavior codes must be 1, 2, ... in registry order, behaviours first, "
            "then strategies in action-index order"
        )
    forced = {"none": PRIMARY_SILENT, "late": PRIMARY_DELAY}  # modes whose primary is fixed
    for r in records:
        mode = forced.get(r.messages)
        if mode is not None and any(r.primary(seq, 1) != mode for seq in range(4)):
            raise RuntimeError(f"{r.name}: messages={r.messages!r} needs primary mode {mode}")


_check_registries()

# Derived tables for the protocol's hot path, all keyed by integer code (behaviours, then
# strategies).
CODE: dict[str, int] = {b.name: b.code for b in _BEHAVIORS}  # behaviour name -> code
_RECORDS: tuple[ByzantineBehavior, ...] = (*_BEHAVIORS, *_STRATEGIES)
# Index by code (0: honest, None): each record's vote and primary rules.
VOTE_RULES: tuple[VoteRule | None, ...] = (None, *(b.vote for b in _RECORDS))
PRIMARY_RULES: tuple[PrimaryRule | None, ...] = (None, *(b.primary for b in _RECORDS))
# Replicas that run PREPARE / COMMIT like an honest replica (only their votes, or their
# certificates as primary, are malicious).
FOLLOWS_PROTOCOL = frozenset({HONEST} | {b.code for b in _RECORDS if b.follows_protocol})
SENDS_NOTHING = frozenset(b.code for b in _RECORDS if b.messages == "none")
ALWAYS_LATE = frozenset(b.code for b in _RECORDS if b.messages == "late")
EQUIVOCATES = frozenset(b.code for b in _RECORDS if b.messages == "conflicting")
# Primary modes that send one certificate to every backup (the protocol's fast path).
SINGLE_CERTIFICATE_MODES = frozenset({PRIMARY_HONEST, PRIMARY_SELECTIVE})


_TABLE_COLUMNS = (
    ("behaviour", 18),
    ("its vote", 32),
    ("as backup (PREPARE/COMMIT)", 29),
    ("as primary", 34),
)


def _markdown_table(columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of `rows` with cells wrapped in place to the columns' widths."""
    widths = [max(width, len(title)) for title, width in columns]

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [row([title for title, _ in columns]), row(["-" * w for w in widths])]
    lines[1] = lines[1].replace(" ", "-")
    for cells in rows:
        wrapped = [textwrap.wrap(c, w) for c, w in zip(cells, widths, strict=True)]
        lines.extend(row(part) for part in zip_longest(*wrapped, fillvalue=""))
    return "\n".join(lines)


def behavior_table() -> str:
    """The Markdown table documenting every registered behaviour (cells wrapped in place)."""
    rows = [(b.name, b.vote_doc, b.backup_doc, b.primary_doc) for b in _BEHAVIORS]
    return _markdown_table(_TABLE_COLUMNS, rows)


def strategy_table() -> str:
    """The Markdown table documenting every learned attacker's strategy, by action index."""
    columns = (("action", 6), ("strategy", 15), *_TABLE_COLUMNS[1:])
    rows = [
        (str(k), s.name, s.vote_doc, s.backup_doc, s.primary_doc) for k, s in enumerate(_STRATEGIES)
    ]
    return _markdown_table(columns, rows)


if __doc__:  # None under python -OO
    __doc__ = __doc__.replace("{behavior_table}", behavior_table()).replace(
        "{strategy_table}", strategy_table()
    )


Certificate = tuple[list[int], list[int]]  # (voters, their votes), primary first


def build_certificates(
    mode: int,
    primary: int,
    arrivals: Sequence[int],
    vote: Sequence[int],
    size: int,
    take_all: bool = False,
) -> list[Certificate]:
    """Certificates a primary signs from its own vote and `arrivals` (backups in arrival order).

    Returns [] when fewer than `size` votes are available, one certificate normally,
    two conflicting ones for an equivocating primary. A protocol-following primary puts
    the first ``size - 1`` arrivals next to its own vote, or with `take_all` every one
    (``certificate="all_timely"``); the malicious modes always sign `size` votes.
    """
    if len(arrivals) + 1 < size:
        return []
    k = size - 1
    if mode == PRIMARY_HONEST:
        voters = [primary, *(arrivals if take_all else arrivals[:k])]
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
