"""The pure return / GAE recursion on hand-made arrays (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.rllib.returns import discounted_cumsum, gae_advantages, monte_carlo_returns


def loop_returns(rewards, lengths, bootstrap, gamma):
    """Reference: the textbook backward loop, chunk by chunk."""
    out, start = [], 0
    for n, b in zip(lengths, bootstrap, strict=True):
        g, chunk = b, []
        for r in reversed(rewards[start : start + n]):
            g = r + gamma * g
            chunk.append(g)
        out.extend(reversed(chunk))
        start += n
    return np.array(out)


def test_terminated_chunk_has_no_bootstrap():
    g = monte_carlo_returns(np.array([1.0, 2.0, 3.0]), np.array([3]), np.array([0.0]), 0.5)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])


def test_truncated_chunk_bootstraps_from_value_of_last_state():
    g = monte_carlo_returns(np.array([1.0, 2.0]), np.array([2]), np.array([10.0]), 0.9)
    np.testing.assert_allclose(g, [1 + 0.9 * 2 + 0.81 * 10, 2 + 0.9 * 10])


def test_cut_between_rollouts_does_not_leak_into_next_chunk():
    # Chunk A was cut mid-episode (bootstrap 100), chunk B terminated (bootstrap 0),
    # chunk C is the rest of another episode, cut again (bootstrap -7).
    rewards = np.array([-1.0, -1.0, 5.0, 5.0, 5.0, 2.0])
    lengths = np.array([2, 3, 1])
    boot = np.array([100.0, 0.0, -7.0])
    g = monte_carlo_returns(rewards, lengths, boot, 0.9)
    expected = [-1 + 0.9 * (-1) + 0.81 * 100, -1 + 0.9 * 100, 5 + 4.5 + 4.05, 5 + 4.5, 5, 2 - 6.3]
    np.testing.assert_allclose(g, expected)


def test_gamma_zero_returns_rewards():
    rewards = np.array([3.0, -4.0, 7.0, 1.0])
    g = monte_carlo_returns(rewards, np.array([2, 2]), np.array([50.0, -50.0]), 0.0)
    np.testing.assert_allclose(g, rewards)


def test_gamma_one_is_undiscounted_reverse_cumsum_plus_bootstrap():
    rewards = np.array([-100.0, -200.0, -300.0, 1.0, 2.0])
    g = monte_carlo_returns(rewards, np.array([3, 2]), np.array([0.0, 4.0]), 1.0)
    np.testing.assert_allclose(g, [-600, -500, -300, 7, 6])


def test_targets_stay_raw_scale():
    rewards = np.full(50, -10.0)
    g = monte_carlo_returns(rewards, np.array([50]), np.array([0.0]), 0.99)
    assert g[0] < -300  # never standardised
    np.testing.assert_allclose(g[0], -10 * (1 - 0.99**50) / (1 - 0.99))


def test_empty_chunks_and_batch():
    assert monte_carlo_returns(np.zeros(0), np.zeros(0, int), np.zeros(0), 0.9).shape == (0,)
    g = monte_carlo_returns(np.array([1.0]), np.array([0, 1]), np.array([9.0, 2.0]), 0.5)
    np.testing.assert_allclose(g, [2.0])


def test_gae_lambda_one_equals_return_minus_value():
    rewards = np.array([1.0, -2.0, 3.0, 4.0, -5.0])
    values = np.array([0.5, -1.0, 2.0, 0.0, 3.0])
    lengths, boot = np.array([3, 2]), np.array([0.0, 6.0])
    adv = gae_advantages(rewards, values, lengths, boot, 0.9, 1.0)
    np.testing.assert_allclose(adv, monte_carlo_returns(rewards, lengths, boot, 0.9) - values)


def test_gae_lambda_zero_is_one_step_td_error():
    rewards = np.array([1.0, -2.0, 3.0])
    values = np.array([0.5, -1.0, 2.0])
    adv = gae_advantages(rewards, values, np.array([3]), np.array([10.0]), 0.9, 0.0)
    np.testing.assert_allclose(adv, [1 + 0.9 * -1 - 0.5, -2 + 0.9 * 2 + 1, 3 + 0.9 * 10 - 2])


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match="lengths"):
        monte_carlo_returns(np.zeros(3), np.array([2]), np.array([0.0]), 0.9)
    with pytest.raises(ValueError, match="bootstrap_values"):
        monte_carlo_returns(np.zeros(3), np.array([3]), np.array([0.0, 1.0]), 0.9)


chunks = st.lists(
    st.tuples(st.lists(st.floats(-100, 100), min_size=0, max_size=12), st.floats(-1000, 1000)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(chunks=chunks, gamma=st.floats(0.0, 1.0), lam=st.floats(0.0, 1.0))
def test_matches_textbook_loop(chunks, gamma, lam):
    rewards = np.array([r for rs, _ in chunks for r in rs], dtype=np.float64)
    lengths = np.array([len(rs) for rs, _ in chunks])
    boot = np.array([b for _, b in chunks])
    g = monte_carlo_returns(rewards, lengths, boot, gamma)
    np.testing.assert_allclose(g, loop_returns(rewards, lengths, boot, gamma), atol=1e-6)
    # GAE equals the lambda-return minus the value: with values 0 and lam 1 it is G.
    adv = gae_advantages(rewards, np.zeros_like(rewards), lengths, boot, gamma, 1.0)
    np.testing.assert_allclose(adv, g, atol=1e-6)
    # discounted_cumsum with discount gamma*lam of zero tails is the GAE recursion.
    deltas = rewards.copy()
    np.testing.assert_allclose(
        discounted_cumsum(deltas, lengths, np.zeros(len(lengths)), gamma * lam),
        loop_returns(deltas, lengths, np.zeros(len(lengths)), gamma * lam),
        atol=1e-6,
    )
