"""Discounted Monte Carlo returns and GAE(lambda) advantages, vectorised over episode chunks.

Pure numpy (plus ``scipy.signal.lfilter``), no Ray. A batch is a flat array of real
steps made of consecutive episode chunks (``lengths`` steps each). Each chunk has one
bootstrap value: ``V(s_T)`` where the chunk was truncated or cut between rollouts, and
``0.0`` where the episode terminated.

The backward recursion ``y_t = x_t + c * y_{t+1}`` runs for all chunks at once: the
chunks are laid out as the rows of a zero-padded 2-D array (the bootstrap value sits
right after the last step of its row), the rows are reversed in time, and
``lfilter`` runs the first-order recursion along the time axis in C. Zero padding
after the end of a row becomes leading zeros after the reversal, so every row starts
its recursion from a zero state: no step leaks into another chunk.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

__all__ = ["discounted_cumsum", "gae_advantages", "monte_carlo_returns"]


def _check(lengths: np.ndarray, n_steps: int, bootstrap_values: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths.size and lengths.min() < 0):
        raise ValueError(f"lengths: need a 1-D array of non-negative ints, got {lengths!r}")
    if int(lengths.sum()) != n_steps:
        raise ValueError(f"lengths: sum {int(lengths.sum())} != number of steps {n_steps}")
    if np.shape(bootstrap_values) != lengths.shape:
        raise ValueError(
            f"bootstrap_values: shape {np.shape(bootstrap_values)} != lengths shape "
            f"{lengths.shape} (one bootstrap value per chunk)"
        )
    return lengths


def discounted_cumsum(
    x: np.ndarray, lengths: np.ndarray, tail: np.ndarray, discount: float
) -> np.ndarray:
    """y_t = x_t + discount * y_{t+1} inside each chunk, with y after the chunk's end = tail."""
    x = np.asarray(x, dtype=np.float64)
    lengths = _check(lengths, x.shape[0], tail)
    n_chunks = lengths.shape[0]
    if n_chunks == 0:
        return np.zeros(0, dtype=np.float64)
    # Row r holds chunk r's steps in columns 0..len_r-1 and its tail in column len_r.
    rows = np.repeat(np.arange(n_chunks), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(x.shape[0]) - np.repeat(starts, lengths)
    padded = np.zeros((n_chunks, int(lengths.max()) + 1), dtype=np.float64)
    padded[rows, cols] = x
    padded[np.arange(n_chunks), lengths] = tail
    # Backward recursion for all rows at once: reverse time, filter, reverse back.
    y = lfilter([1.0], [1.0, -float(discount)], padded[:, ::-1], axis=1)[:, ::-1]
    return y[rows, cols]


def monte_carlo_returns(
    rewards: np.ndarray, lengths: np.ndarray, bootstrap_values: np.ndarray, gamma: float
) -> np.ndarray:
    """Raw discounted return G_t = r_t + gamma * G_{t+1}, with G_T = each chunk's bootstrap."""
    return discounted_cumsum(rewards, lengths, bootstrap_values, gamma)


def gae_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    lengths: np.ndarray,
    bootstrap_values: np.ndarray,
    gamma: float,
    lambda_: float,
) -> np.ndarray:
    """GAE(lambda) advantages: discounted (gamma * lambda) sums of TD errors per chunk."""
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != rewards.shape:
        raise ValueError(f"values: shape {values.shape} != rewards shape {rewards.shape}")
    lengths = _check(lengths, rewards.shape[0], bootstrap_values)
    # V(s_{t+1}): the next step's value inside a chunk, the bootstrap value at its end.
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    ends = np.cumsum(lengths)[lengths > 0] - 1
    next_values[ends] = np.asarray(bootstrap_values, dtype=np.float64)[lengths > 0]
    deltas = rewards + gamma * next_values - values
    return discounted_cumsum(deltas, lengths, np.zeros(lengths.shape[0]), gamma * lambda_)
