"""Counterfactual rewards (env) and the counterfactual baseline they feed (learner)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from connector_helpers import run_targets
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from marl_bft_rllib.bft import CERTIFICATES, N_STRATEGIES
from marl_bft_rllib.env import COUNTERFACTUAL_INFO_KEY, BFTSecurityEnv, outcome_reward
from marl_bft_rllib.rllib.connector import MonteCarloValueTargets
from marl_bft_rllib.rllib.counterfactual import (
    COUNTERFACTUAL_ADVANTAGES,
    COUNTERFACTUAL_REWARDS,
    all_actions_surrogate,
    counterfactual_baseline,
    immediate_terms,
)
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions

# No STL shaping and no breach penalty: a step's reward is then its team + vote part only.
PLAIN = {"stl_weight": 0.0, "breach_penalty": 0.0, "horizon": 80}
# Behaviours whose votes do not react to the honest ones: the counterfactual is exact.
VOTE_BLIND = ["silent", "always_allow", "always_quarantine", "delay", "random"]


def _random_steps(env: BFTSecurityEnv, episodes: int, keep_before: bool = False):
    """Yield (env before the step or None, actions, rewards, infos) over random votes."""
    rng = np.random.default_rng(0)
    for ep in range(episodes):
        env.reset(seed=ep)
        while env.agents:
            actions = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
            before = copy.deepcopy(env) if keep_before else None
            _, rewards, _, _, infos = env.step(actions)
            yield before, actions, rewards, infos


def test_counterfactual_reward_of_the_vote_cast_is_the_reward():
    env = BFTSecurityEnv(PLAIN)  # every default behaviour
    steps = 0
    for _, actions, rewards, infos in _random_steps(env, 8):
        for agent, a in actions.items():
            cf = infos[agent][COUNTERFACTUAL_INFO_KEY]
            assert cf.shape == (4,) and cf.dtype == np.float32 and np.isfinite(cf).all()
            assert cf[a] == pytest.approx(rewards[agent], abs=1e-5)
            steps += 1
    assert steps > 1000


@pytest.mark.parametrize("certificate", CERTIFICATES)
def test_counterfactual_rewards_are_what_replaying_the_step_with_each_vote_gives(certificate):
    env = BFTSecurityEnv({**PLAIN, "byzantine_behaviors": VOTE_BLIND, "certificate": certificate})
    differs = 0
    for before, actions, _, infos in _random_steps(env, 3, keep_before=True):
        agent = next(iter(actions))
        cf = infos[agent][COUNTERFACTUAL_INFO_KEY]
        for a in range(4):
            replay = copy.deepcopy(before)
            _, rewards, *_ = replay.step({**actions, agent: a})
            assert rewards[agent] == pytest.approx(cf[a], abs=1e-5), (a, cf)
        label = infos[agent]["label"]
        vote_part = [0.5 * outcome_reward(env.config.reward_table, label, v) for v in range(4)]
        differs += np.ptp(cf - np.array(vote_part)) > 0
    assert differs > 10  # the agent's vote was pivotal at some steps, not only the vote part


def test_counterfactual_rewards_are_nan_without_the_pbft_rule():
    env = BFTSecurityEnv({**PLAIN, "decision_rule": "majority"})
    _, _, _, infos = next(_random_steps(env, 1))
    assert all(np.isnan(i[COUNTERFACTUAL_INFO_KEY]).all() for i in infos.values())


def test_attacker_counterfactuals_are_what_replaying_its_plain_votes_gives():
    """A learned attacker's vector: its 4 plain votes by replay (up to one constant), NaN else."""
    env = BFTSecurityEnv({**PLAIN, "adversary": "learned"})
    voted = pivotal = other = 0
    for before, actions, _, infos in _random_steps(env, 10, keep_before=True):
        cf = infos["attacker_0"][COUNTERFACTUAL_INFO_KEY]
        assert cf.shape == (N_STRATEGIES,) and cf.dtype == np.float32
        assert np.isnan(cf[4:]).all()
        convicted = before._consensus.convicted[before.agent_index["attacker_0"]]
        if actions["attacker_0"] >= 4 or convicted:
            assert np.isnan(cf).all()
            other += 1
            continue
        replayed = []
        for a in range(4):
            replay = copy.deepcopy(before)
            _, rewards, *_ = replay.step({**actions, "attacker_0": a})
            replayed.append(rewards["attacker_0"])
        diff = cf[:4] - np.array(replayed)  # the attacker's reward had it voted a, + const
        np.testing.assert_allclose(diff, diff[0], atol=1e-4)
        voted += 1
        pivotal += np.ptp(cf[:4]) > 0
    assert voted > 10 and other > 20 and pivotal > 0


def test_counterfactual_baseline_is_the_policy_weighted_reward():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [np.log(3.0), 0.0, -np.inf, 0.0]])
    rewards = np.array([[4.0, 0.0, 0.0, 0.0], [1.0, 2.0, 50.0, 6.0]])
    np.testing.assert_allclose(counterfactual_baseline(logits, rewards), [1.0, 0.6 + 0.4 + 1.2])
    rewards[0, 1] = np.nan
    assert np.isnan(counterfactual_baseline(logits, rewards)[0])
    with pytest.raises(ValueError, match="one per action"):
        counterfactual_baseline(logits, rewards[:, :3])


def _chunk(rng: np.random.Generator, n: int, nan_rows: tuple[int, ...] = ()) -> dict:
    """One terminated episode chunk of n steps (+ phantom row) whose reward is cf[action]."""
    # a large part shared by every action (the label, the peers' votes), a small own part
    cf = rng.normal(0.0, 10.0, (n + 1, 1)) + rng.normal(0.0, 2.0, (n + 1, 4))
    logits = rng.normal(0.0, 1.0, (n + 1, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(4, p=p) for p in probs])  # sampled from the policy
    rewards = cf[np.arange(n + 1), actions] + rng.normal(0.0, 0.1, n + 1)
    rewards[-1] = 0.0
    cf[list(nan_rows)] = np.nan
    mask = np.ones(n + 1, bool)
    mask[-1] = False
    done = np.zeros(n + 1, bool)
    done[n - 1] = True
    return {
        Columns.REWARDS: rewards,
        Columns.ACTIONS: actions,
        Columns.LOSS_MASK: mask,
        Columns.TERMINATEDS: done,
        Columns.TRUNCATEDS: np.zeros(n + 1, bool),
        Columns.ACTION_DIST_INPUTS: logits,
        COUNTERFACTUAL_REWARDS: cf.astype(np.float32),
    }


def _run(batch: dict, counterfactual: str, lambda_: float = 0.0) -> dict:
    return run_targets(
        batch,
        gamma=0.9,
        lambda_=lambda_,
        value_baseline="critic",
        counterfactual_baseline=counterfactual,
    )


def _advantages(batch: dict, counterfactual: str, lambda_: float = 0.0) -> np.ndarray:
    return np.asarray(_run(batch, counterfactual, lambda_)[Postprocessing.ADVANTAGES], np.float64)


def test_connector_subtracts_the_fitted_counterfactual_baseline():
    rng = np.random.default_rng(3)
    batch = _chunk(rng, 400, nan_rows=(5, 17))
    mask = batch[Columns.LOSS_MASK]
    # With V = 0 and lambda 0 the plain advantage is the reward itself.
    plain = batch[Columns.REWARDS][mask]
    b = counterfactual_baseline(batch[Columns.ACTION_DIST_INPUTS], batch[COUNTERFACTUAL_REWARDS])[
        mask
    ]
    valid = np.isfinite(b)
    d = np.where(valid, b - b[valid].mean(), 0.0)
    beta = np.clip(np.cov(plain, d, bias=True)[0, 1] / d.var(), 0.0, 1.0)
    expected = plain - beta * d
    expected = (expected - expected.mean()) / expected.std()
    got = _advantages(batch, "step")[mask]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert 0.9 < beta <= 1.0
    # It removes most of the variance the label and the peers put into the reward.
    residual = plain - beta * d
    assert residual[valid].var() < 0.5 * plain[valid].var()
    # Without the option the advantages are the standardised rewards.
    off = _advantages(batch, "off")[mask]
    np.testing.assert_allclose(off, (plain - plain.mean()) / plain.std(), atol=1e-4)


def test_trace_mode_takes_the_baseline_off_every_reward_of_the_window():
    rng = np.random.default_rng(5)
    batch = _chunk(rng, 300)
    mask = batch[Columns.LOSS_MASK]
    r = batch[Columns.REWARDS][mask]
    b = counterfactual_baseline(batch[Columns.ACTION_DIST_INPUTS], batch[COUNTERFACTUAL_REWARDS])[
        mask
    ]
    d = b - b.mean()

    def window(x: np.ndarray) -> np.ndarray:  # GAE with V = 0: sum_k (0.9 * 0.5)^k x_{t+k}
        out, acc = np.empty_like(x), 0.0
        for t in range(len(x) - 1, -1, -1):
            acc = x[t] + 0.45 * acc
            out[t] = acc
        return out

    plain, shift = window(r), -window(d)
    beta = np.clip(-np.cov(plain, shift, bias=True)[0, 1] / shift.var(), 0.0, 1.0)
    expected = plain + beta * shift
    expected = (expected - expected.mean()) / expected.std()
    got = _advantages(batch, "trace", lambda_=0.5)[mask]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert beta > 0.9
    step = _advantages(batch, "step", lambda_=0.5)[mask]
    assert np.abs(step - got).max() > 0.05  # the two modes differ


def test_all_actions_mode_moves_the_sampled_immediate_term_into_the_loss():
    rng = np.random.default_rng(7)
    batch = _chunk(rng, 300, nan_rows=(4,))
    mask = batch[Columns.LOSS_MASK]
    out = _run(batch, "all_actions")
    step = _run(batch, "step")
    b = counterfactual_baseline(batch[Columns.ACTION_DIST_INPUTS], batch[COUNTERFACTUAL_REWARDS])
    valid = mask & np.isfinite(b)
    # Same scale as "step"; the per-action column holds r_cf(a) - b on that scale.
    scale = (
        batch[Columns.REWARDS][valid] - b[valid]
    ).std()  # beta = 1 here: the step-mode advantage before standardisation
    expected = np.where(valid[:, None], batch[COUNTERFACTUAL_REWARDS] - b[:, None], 0.0)
    got = out[COUNTERFACTUAL_ADVANTAGES]
    np.testing.assert_allclose(got[valid], (expected / scale)[valid], rtol=0.05, atol=1e-3)
    assert not got[~valid].any()
    # The advantages lost exactly the taken action's entry (before centring).
    taken = got[np.arange(len(got)), batch[Columns.ACTIONS]]
    shifted = step[Postprocessing.ADVANTAGES] - taken
    moved = out[Postprocessing.ADVANTAGES]
    diff = (shifted - moved)[mask]
    np.testing.assert_allclose(diff, diff.mean(), atol=1e-4)  # equal up to the centring
    assert COUNTERFACTUAL_ADVANTAGES not in step


def test_all_actions_surrogate_has_the_expected_gradient_of_the_sampled_one():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    adv = torch.randn(5, 4)
    surrogate = all_actions_surrogate(logits, logits.detach(), adv, clip=0.2).sum()
    (grad,) = torch.autograd.grad(surrogate, logits)
    expected = torch.autograd.grad((torch.softmax(logits, -1) * adv).sum(), logits)[0]
    torch.testing.assert_close(grad, expected)
    # With advantages centred under pi_old (as the connector builds them) its value at
    # pi = pi_old is 0: only its gradient moves the policy.
    centred = adv - (torch.softmax(logits, -1) * adv).sum(-1, keepdim=True)
    value = all_actions_surrogate(logits.detach(), logits.detach(), centred.detach(), 0.2)
    torch.testing.assert_close(value, torch.zeros(5), atol=1e-6, rtol=0)
    # Outside the clip range an action's term stops pulling, as in PPO.
    moved = (logits.detach() + torch.tensor([5.0, 0, 0, 0])).requires_grad_(True)
    up = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(5, 4)
    (g,) = torch.autograd.grad(all_actions_surrogate(moved, logits.detach(), up, 0.2).sum(), moved)
    assert torch.all(g == 0)
    # Unclipped (clip=None) it is sum_a pi(a) A_a at any policy, and keeps pulling.
    value = all_actions_surrogate(moved, logits.detach(), adv, None)
    torch.testing.assert_close(value, (torch.softmax(moved, -1) * adv).sum(-1))
    (g,) = torch.autograd.grad(all_actions_surrogate(moved, logits.detach(), up, None).sum(), moved)
    assert torch.all(g[:, 0] > 0)


def test_connector_without_the_column_names_the_option():
    batch = _chunk(np.random.default_rng(0), 20)
    del batch[COUNTERFACTUAL_REWARDS]
    with pytest.raises(ValueError, match="counterfactual_baseline"):
        _advantages(batch, "step")


def test_counterfactual_option_is_validated():
    with pytest.raises(ValueError, match="counterfactual_baseline"):
        MonteCarloLearnerOptions(counterfactual_baseline=True)
    with pytest.raises(ValueError, match="all_actions_clip"):
        MonteCarloLearnerOptions(all_actions_clip="no")
    with pytest.raises(ValueError, match="counterfactual_baseline"):
        MonteCarloValueTargets(gamma=0.9, lambda_=0.5, counterfactual_baseline="all")


@pytest.mark.parametrize("known", [(0, 1, 2, 3), (0, 1, 2, 3, 4, 5, 6, 7, 8), (1, 4)])
def test_immediate_terms_give_the_exact_expected_gradient(known) -> None:
    """Over a_t ~ pi: grad of sum_a pi(a) w(a) + log pi(a_t) (r(a_t) - taken) = grad E_pi[r].

    ``known``: the actions with a counterfactual reward (an attacker's plain votes, all,
    or a few); the others' rewards are only sampled.
    """
    rng = np.random.default_rng(len(known))
    n = 9
    z = rng.normal(0.0, 1.0, n)
    r = rng.normal(0.0, 5.0, n)
    cf = np.full(n, np.nan)
    cf[list(known)] = r[list(known)]
    theta = torch.tensor(z, requires_grad=True)
    pi_old = torch.softmax(torch.tensor(z), 0).numpy()
    total = torch.zeros((), dtype=torch.float64)
    for a_t in range(n):
        w, taken = immediate_terms(z[None], cf[None], np.array([a_t]), np.array([True]))
        pi = torch.softmax(theta, 0)
        row = (pi * torch.tensor(w[0])).sum() + torch.log(pi[a_t]) * (r[a_t] - taken[0])
        total = total + pi_old[a_t] * row
    (got,) = torch.autograd.grad(total, theta)
    theta2 = torch.tensor(z, requires_grad=True)
    (want,) = torch.autograd.grad((torch.softmax(theta2, 0) * torch.tensor(r)).sum(), theta2)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9)
    # with every reward known the weights are r - counterfactual_baseline, pi(V) = 1
    if len(known) == n:
        w, _ = immediate_terms(z[None], cf[None], np.array([0]), np.array([True]))
        np.testing.assert_allclose(w[0], r - counterfactual_baseline(z[None], r[None])[0])
