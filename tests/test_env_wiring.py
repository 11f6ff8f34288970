"""The env's wiring, checked against independent hand computations on scripted episodes:
reward table numbers, STL signals and shaping weight, and the observation's content."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft import CERTIFICATES
from marl_bft_rllib.env import BFTSecurityEnv
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.scenarios import scenario_config

SEVERITY = 1.0 / 3.0


def scripted(config: dict, seed: int, vote, spy_signals: bool = False):
    """Play one episode with ``vote(t, agent, obs) -> action``; record every step."""
    env = BFTSecurityEnv(config)
    seen: list[dict] = []
    if spy_signals:
        step = env._shaper.step

        def spy(signals, last=False):
            seen.append(dict(signals))
            return step(signals, last=last)

        env._shaper.step = spy
    obs, _ = env.reset(seed=seed)
    steps = []
    t = 0
    while env.agents:
        host = env._event.host
        actions = {a: vote(t, a, obs[a]) for a in env.agents}
        obs_next, rewards, _, _, infos = env.step(actions)
        steps.append(
            {"obs": obs, "actions": actions, "rewards": rewards, "host": host, "obs_next": obs_next,
             "info": next(iter(infos.values())) if infos else {}}
        )  # fmt: skip
        obs, t = obs_next, t + 1
    return env, steps, seen


@pytest.mark.parametrize(
    ("label", "action", "expected"),
    [
        (1, Action.QUARANTINE, (10.0 - 1.5) * 1.5),  # TP 10, restrictive cost -1.5
        (1, Action.BLOCK, (10.0 - 1.5) * 1.5),
        (1, Action.ALLOW, -10.0 * 1.5),  # FN
        (1, Action.ALERT, -10.0 * 1.5),
        (0, Action.ALLOW, 1.0 * 1.5),  # TN
        (0, Action.QUARANTINE, (-8.0 - 1.5) * 1.5),  # FP
    ],
)
def test_reward_table_gives_the_documented_numbers(label, action, expected):
    # Unanimous honest votes: decision = vote, so reward = team + 0.5 x own = 1.5 x table.
    cfg = {"n_byzantine": 0, "shaping": "none", "horizon": 200}
    _, steps, _ = scripted(cfg, 3, lambda t, a, o: int(action))
    rewards = [
        next(iter(s["rewards"].values()))
        for s in steps
        if s["info"]["label"] == label and not s["info"].get("episode_metrics")
    ]
    assert rewards, "the episode had no event with this label"
    np.testing.assert_allclose(rewards, expected)


def test_stl_weight_scales_the_shaping_that_reaches_the_rewards():
    def returns(weight):
        cfg = {"n_byzantine": 0, "shaping": "incremental", "stl_weight": weight, "horizon": 80}
        _, steps, _ = scripted(cfg, 5, lambda t, a, o: int(Action.QUARANTINE if t % 3 else 0))
        return np.array([next(iter(s["rewards"].values())) for s in steps])

    r0, r1, r2 = returns(0.0), returns(1.0), returns(2.0)
    assert not np.allclose(r1, r0)  # shaping is not zero on this episode
    np.testing.assert_allclose(r2 - r0, 2.0 * (r1 - r0), atol=1e-9)


def test_stl_signals_match_their_definitions():
    cfg = {"n_byzantine": 0, "horizon": 120, "fp_window": 7, "quarantine_steps": 4}
    vote = lambda t, a, o: int(Action.QUARANTINE if t % 4 == 0 else Action.ALLOW)  # noqa: E731
    env, steps, signals = scripted(cfg, 9, vote, spy_signals=True)
    assert len(signals) == len(steps)
    until = np.zeros(env.n_hosts, np.int64)
    fp, benign = [], []
    for t, (step, sig) in enumerate(zip(steps, signals, strict=True)):
        label, decision = step["info"]["label"], step["info"]["decision"]
        restrictive = decision >= Action.BLOCK
        fp.append(int(restrictive and not label))
        benign.append(int(not label))
        window_fp, window_benign = sum(fp[-7:]), sum(benign[-7:])
        assert sig["threat"] == float(label)
        assert sig["restrictive"] == float(restrictive)
        assert sig["decided"] == 1.0 and sig["agreement"] == 1.0  # all honest, no drops
        assert sig["fp_window"] == pytest.approx(
            window_fp / window_benign if window_benign else 0.0
        )
        if decision == Action.QUARANTINE:
            until[step["host"]] = t + 1 + 4
        assert sig["quarantined"] == pytest.approx(np.mean(until > t + 1))


def test_agreement_drops_when_honest_replicas_commit_differently():
    cfg = {**scenario_config("beyond_f"), "horizon": 150, "p_drop": 0.2}
    _, _, signals = scripted(cfg, 2, lambda t, a, o: int(t % 2) * 3, spy_signals=True)
    assert min(s["agreement"] for s in signals) < 1.0


def test_observation_history_protocol_and_peer_slices():
    cfg = {"n_byzantine": 0, "horizon": 30, "history": 3}
    pattern = [Action.ALLOW, Action.ALERT, Action.BLOCK, Action.QUARANTINE]
    vote = lambda t, a, o: int(pattern[(t + int(a[-1])) % 4])  # noqa: E731
    env, steps, _ = scripted(cfg, 1, vote)
    lay = env.observation_layout()
    for t, step in enumerate(steps[:-1]):
        for agent, obs in step["obs_next"].items():
            i = int(agent[-1])
            own = [int(pattern[(k + i) % 4]) * SEVERITY for k in range(t, t - 3, -1) if k >= 0]
            np.testing.assert_allclose(obs[lay["own_votes"]][: len(own)], own, atol=1e-6)
            np.testing.assert_allclose(obs[lay["own_votes"]][len(own) :], -1.0)
            decisions = [s["info"]["decision"] * SEVERITY for s in steps[max(0, t - 2) : t + 1]]
            np.testing.assert_allclose(
                obs[lay["decisions"]][: len(decisions)], decisions[::-1], atol=1e-6
            )
            assert obs[lay["is_primary"]][0] == float(env._consensus.primary == i) or t == 29
            # Revealed votes: the certificate's n - f votes, as cast this step; -1 otherwise.
            cast = np.array([int(pattern[(t + j) % 4]) * SEVERITY for j in range(env.n)])
            peers = obs[lay["peer_votes"]]
            shown = peers >= 0
            assert shown.sum() == env.n - 1  # n = 4, f = 1
            np.testing.assert_allclose(peers[shown], cast[shown], atol=1e-6)
            np.testing.assert_array_equal(obs[lay["convicted"]], 0.0)


@pytest.mark.parametrize("certificate", CERTIFICATES)
def test_certificate_rule_sets_how_many_votes_are_revealed(certificate):
    cfg = {"byzantine_behaviors": ["always_allow"], "byzantine_replicas": (2,), "horizon": 40}
    env, steps, _ = scripted({**cfg, "certificate": certificate}, 0, lambda t, a, o: 3)
    lay = env.observation_layout()
    for step in steps[:-1]:
        for obs in step["obs_next"].values():
            peers = obs[lay["peer_votes"]]
            # all_timely: all four votes, the insider's Allow too; quorum: n - f = 3 of them
            assert (peers >= 0).sum() == (4 if certificate == "all_timely" else 3)
            assert peers[2] in ((0.0,) if certificate == "all_timely" else (-1.0, 0.0))
            if certificate == "all_timely":  # Quarantine from 3 honest, Allow: Quarantine
                assert step["info"]["decision"] == Action.QUARANTINE


def test_peer_dissent_is_the_running_mean_over_the_last_revealed_votes():
    cfg = {"n_byzantine": 0, "horizon": 60, "peer_stats_window": 4}
    pattern = [Action.ALLOW, Action.ALERT, Action.BLOCK, Action.QUARANTINE]
    vote = lambda t, a, o: int(pattern[(t * (int(a[-1]) + 1)) % 4])  # noqa: E731
    env, steps, _ = scripted(cfg, 5, vote)
    lay = env.observation_layout()
    gaps: list[list[list[float]]] = [[[] for _ in range(env.n)] for _ in range(2)]
    for step in steps[:-1]:
        obs = next(iter(step["obs_next"].values()))
        if step["info"]["committed"]:
            decision = step["info"]["decision"]
            for j, seen in enumerate(obs[lay["peer_votes"]]):
                if seen < 0:
                    continue
                v = round(seen * 3)
                if decision >= Action.BLOCK:
                    gaps[0][j].append(max(decision - v, 0) / 3)
                else:
                    gaps[1][j].append(max(v - decision, 0) / 3)
        for row, name in enumerate(("peer_lenient", "peer_severe")):
            # the first 4 gaps averaged, then each new one weighs 1/4 (a capped running mean)
            want = np.zeros(env.n)
            for j, xs in enumerate(gaps[row]):
                for k, x in enumerate(xs):
                    want[j] += (x - want[j]) / min(k + 1, 4)
            np.testing.assert_allclose(obs[lay[name]], want, atol=1e-6)
    assert all(gaps[0]) and all(gaps[1])  # both rows were exercised for every peer


@pytest.mark.parametrize(
    ("behavior", "slot"), [("always_allow", "peer_lenient"), ("always_quarantine", "peer_severe")]
)
def test_peer_dissent_singles_out_the_byzantine_replica(behavior, slot):
    cfg = {"byzantine_behaviors": (behavior,), "byzantine_replicas": (2,), "peer_stats_window": 50}
    env = BFTSecurityEnv(cfg)
    obs, _ = env.reset(seed=0)
    lay = env.observation_layout()
    while env.agents:  # perfect honest detectors: restrictive exactly on malicious events
        label = int(env._event.label)
        obs, *_ = env.step(dict.fromkeys(env.agents, int(Action.BLOCK) if label else 0))
    dissent = next(iter(obs.values()))[lay[slot]]
    assert dissent[2] > 0.5 and np.all(np.delete(dissent, 2) < 0.05), dissent


def test_peer_stats_window_zero_leaves_the_slices_out():
    assert EnvConfig().peer_stats_window == 0  # off by default (measured, README)
    with_stats, without = BFTSecurityEnv({"peer_stats_window": 50}), BFTSecurityEnv({})
    assert without.obs_dim == with_stats.obs_dim - 2 * with_stats.n
    for name in ("peer_lenient", "peer_severe"):
        assert without.observation_layout()[name].stop == without.observation_layout()[name].start
    parallel_api_test(with_stats, num_cycles=60)  # the option passes PettingZoo's API test


def test_convicted_peer_appears_in_every_observation():
    cfg = {**scenario_config("equivocating_primary"), "horizon": 40}
    env, steps, _ = scripted(cfg, 0, lambda t, a, o: int(Action.ALLOW))
    lay = env.observation_layout()
    convicted = [next(iter(s["obs_next"].values()))[lay["convicted"]] for s in steps[:-1]]
    assert convicted[-1].tolist() == [1.0, 0.0, 0.0, 0.0]  # replica 0 equivocated
    first = next(k for k, c in enumerate(convicted) if c[0] == 1.0)
    assert all(c[0] == 1.0 for c in convicted[first:])  # once convicted, always convicted
