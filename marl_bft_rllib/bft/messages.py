"""Signed protocol messages and the equivocation proof they give.

The simulation in :mod:`marl_bft_rllib.bft.protocol` moves messages as small integer
matrices (sender x receiver -> digest) for speed; this module spells out what one
entry of such a matrix stands for, and builds the evidence kept for each conviction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MsgType(IntEnum):
    """Kinds of protocol message, in the order they are sent within one view."""

    VIEW_CHANGE = 0  # replica -> all: "move to view v" (only when a view is entered by a change)
    VOTE = 1  # replica -> primary: its signed action for (view, seq)
    PRE_PREPARE = 2  # primary -> all: the signed vote certificate for (view, seq)
    PREPARE = 3  # replica -> all: "I accept certificate <digest>" (carries the primary's signature)
    COMMIT = 4  # replica -> all: "I prepared certificate <digest>"


BOGUS_DIGEST = 2  # digest of the made-up certificate an equivocating backup signs
# Digests: 0 and 1 name the (at most two) certificates a primary signs in one view,
# BOGUS_DIGEST a conflicting one invented by an equivocating backup, -1 "no message".


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """One authenticated message: only `sender` can produce it."""

    kind: MsgType
    view: int
    seq: int
    sender: int
    digest: int  # which certificate the message is about (vote value for VOTE)


def proves_fault(a: SignedMessage, b: SignedMessage) -> bool:
    """True when two messages signed by one replica conflict: same slot, different content."""
    return (
        a.sender == b.sender
        and a.kind == b.kind
        and a.view == b.view
        and a.seq == b.seq
        and a.digest != b.digest
    )
