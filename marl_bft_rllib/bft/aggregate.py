"""Byzantine-robust aggregation of a certificate's votes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def robust_aggregate(votes: Sequence[int] | np.ndarray, f: int) -> int:
    """Severity-sorted trimmed pick: drop the f most and f least severe, take the most severe left.

    With at most f Byzantine votes among them, the result lies between the least and
    the most severe honest vote.
    """
    vals = sorted(int(v) for v in np.asarray(votes).ravel())
    if f < 0:
        raise ValueError(f"f: must be >= 0, got {f}")
    if len(vals) <= 2 * f:
        raise ValueError(f"votes: need more than 2f = {2 * f} votes, got {len(vals)}")
    return vals[len(vals) - 1 - f]
