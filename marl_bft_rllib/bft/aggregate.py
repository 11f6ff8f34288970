"""Byzantine-robust aggregation of a certificate's votes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INT_ONLY = {int}


def robust_aggregate(votes: Sequence[int] | np.ndarray, f: int) -> int:
    """Severity-sorted trimmed pick: drop the f most and f least severe, take the most severe left.

    With at most f Byzantine votes among them, the result lies between the least and
    the most severe honest vote.
    """
    if type(votes) is list and 0 <= f and 2 * f < len(votes) and {*map(type, votes)} == _INT_ONLY:
        return sorted(votes)[len(votes) - 1 - f]  # the protocol's certificates: plain ints
    vals = sorted(int(v) for v in np.asarray(votes).ravel())
    if f < 0:
        raise ValueError(f"f: must be >= 0, got {f}")
    if len(vals) <= 2 * f:
        raise ValueError(f"votes: need more than 2f = {2 * f} votes, got {len(vals)}")
    return vals[len(vals) - 1 - f]
