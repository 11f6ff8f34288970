"""BFTSecurityEnv: PettingZoo API, seeding, episode ends, rewards, infos, config errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from marl_bft_rllib.actions import Action
from marl_bft_rllib.env import BFTSecurityEnv, outcome_reward
from marl_bft_rllib.env_config import DEFAULT_REWARD_TABLE, EnvConfig
from marl_bft_rllib.metrics import BFT_STAT_KEYS, CONFUSION_KEYS
from marl_bft_rllib.scenarios import SCENARIOS, scenario_config


def rollout(env: BFTSecurityEnv, seed: int, policy=None) -> list[tuple]:
    """Run one episode; return (obs, rewards, terms, truncs, infos) per step."""
    rng = np.random.default_rng(seed + 1)
    obs, infos = env.reset(seed=seed)
    steps = [(obs, None, None, None, infos)]
    while env.agents:
        if policy is None:
            actions = {a: int(rng.integers(4)) for a in env.agents}
        else:
            actions = {a: policy(a, obs[a]) for a in env.agents}
        obs, rew, term, trunc, infos = env.step(actions)
        steps.append((obs, rew, term, trunc, infos))
    return steps


def test_parallel_api_test_passes():
    with warnings.catch_warnings():
        # Byzantine replicas are never agents, so PettingZoo warns that not every
        # possible agent finished; that is by design.
        warnings.filterwarnings("ignore", message="No agents present but not all possible_agents")
        parallel_api_test(BFTSecurityEnv({"horizon": 60}), num_cycles=200)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_runs_full_episodes(scenario):
    env = BFTSecurityEnv(scenario_config(scenario, horizon=40))
    for seed in range(3):
        steps = rollout(env, seed)
        obs, _, _, _, infos = steps[-2]
        last_infos = steps[-1][4]
        metrics = next(iter(last_infos.values()))["episode_metrics"]
        for key in (*CONFUSION_KEYS, "precision", "recall", "f1", *BFT_STAT_KEYS):
            assert key in metrics
        assert sum(metrics[k] for k in CONFUSION_KEYS) == metrics["length"] == len(steps) - 1
        for o in obs.values():
            assert env.observation_space("replica_0").contains(o)


def test_same_seed_same_episode_different_seed_different():
    env = BFTSecurityEnv()
    a, b, c = rollout(env, 7), rollout(env, 7), rollout(env, 8)
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        assert sa[0].keys() == sb[0].keys()
        for agent in sa[0]:
            np.testing.assert_array_equal(sa[0][agent], sb[0][agent])
        assert sa[1:4] == sb[1:4]
        assert repr(sa[4]) == repr(sb[4])
    first_a = np.concatenate([a[0][0][k] for k in sorted(a[0][0])])
    first_c = np.concatenate([c[0][0][k] for k in sorted(c[0][0])])
    differs = len(a) != len(c) or not np.array_equal(first_a, first_c)
    assert differs


def test_fresh_env_with_same_seed_reproduces():
    r1 = rollout(BFTSecurityEnv(), 3)
    r2 = rollout(BFTSecurityEnv(), 3)
    assert [s[1] for s in r1] == [s[1] for s in r2]


def test_byzantine_replicas_are_never_agents():
    env = BFTSecurityEnv({"n_replicas": 7, "n_byzantine": 2})
    seen = set()
    for seed in range(20):
        env.reset(seed=seed)
        byz = {f"replica_{i}" for i in env._consensus.byzantine}
        assert len(byz) == 2
        assert not byz & set(env.agents)
        assert set(env.agents) | byz == set(env.possible_agents)
        seen |= byz
    assert len(seen) > 2  # which replicas are Byzantine varies by episode


def test_allow_all_breaches_and_terminates_with_penalty():
    env = BFTSecurityEnv({"shaping": "none", "vote_weight": 0.0, "n_byzantine": 0})
    steps = rollout(env, 0, policy=lambda a, o: int(Action.ALLOW))
    _, rew, term, trunc, infos = steps[-1]
    assert all(term.values()) and not any(trunc.values())
    info = next(iter(infos.values()))
    assert info["episode_metrics"]["breached"] == 1.0
    expected = outcome_reward(DEFAULT_REWARD_TABLE, info["label"], info["decision"]) - 100.0
    assert all(r == pytest.approx(expected) for r in rew.values())
    assert len(steps) - 1 < env.config.horizon


def test_unbounded_horizon_truncates_without_termination():
    env = BFTSecurityEnv({"horizon": 15, "n_byzantine": 0, "time_limit": "unbounded"})
    steps = rollout(env, 1, policy=lambda a, o: int(Action.QUARANTINE))
    _, _, term, trunc, _ = steps[-1]
    assert len(steps) - 1 == 15
    assert all(trunc.values()) and not any(term.values())
    for _, _, t, tr, _ in steps[1:-1]:
        assert not any(t.values()) and not any(tr.values())
    assert env.agents == []


def test_team_and_vote_rewards_follow_the_table():
    env = BFTSecurityEnv({"shaping": "none", "vote_weight": 0.5, "n_byzantine": 0})
    obs, _ = env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = {a: int(rng.integers(4)) for a in env.agents}
        obs, rew, term, trunc, infos = env.step(actions)
        for a, r in rew.items():
            lab, dec = infos[a]["label"], infos[a]["decision"]
            t = DEFAULT_REWARD_TABLE
            want = outcome_reward(t, lab, dec) + 0.5 * outcome_reward(t, lab, actions[a])
            if term[a]:
                want -= env.config.breach_penalty
            assert r == pytest.approx(want)
        if not env.agents:
            break


def test_beyond_f_keeps_running_and_reports_violations():
    env = BFTSecurityEnv(scenario_config("beyond_f", horizon=100))
    total = 0.0
    for seed in range(10):
        steps = rollout(env, seed)
        metrics = next(iter(steps[-1][4].values()))["episode_metrics"]
        total += metrics["agreement_violations"] + metrics["validity_violations"]
    assert total > 0


def test_render_ansi_prints_a_line_per_step():
    env = BFTSecurityEnv({"horizon": 5}, render_mode="ansi")
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 2))
    line = env.render()
    assert "t=" in line and "block" in line


def test_dict_and_dataclass_configs_agree():
    cfg = EnvConfig(horizon=30, vote_weight=0.2)
    a = rollout(BFTSecurityEnv(cfg), 5)
    b = rollout(BFTSecurityEnv(cfg.to_dict()), 5)
    assert [s[1] for s in a] == [s[1] for s in b]


def test_step_rejects_missing_or_bad_actions():
    env = BFTSecurityEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="no action"):
        env.step({})
    with pytest.raises(ValueError, match="expected 0..3"):
        env.step(dict.fromkeys(env.agents, 7))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_replicas": 3, "n_byzantine": 1}, "n_replicas"),
        ({"n_replicas": 4, "n_byzantine": 4}, "n_byzantine"),
        ({"byzantine_behaviors": ("silent", "teleport")}, "byzantine_behaviors"),
        ({"horizon": -5}, "horizon"),
        ({"horizon": 0}, "horizon"),
        ({"reward_table": {"tp": 10, "bonus": 3}}, "reward_table"),
        ({"reward_table": {"tp": float("nan")}}, "reward_table"),
        ({"reward_table": [1, 2]}, "reward_table"),
        ({"stl_specs": {"bad": ("G(threat >", 1.0)}}, "stl_specs"),
        ({"stl_specs": {"bad": ("G(unknown_signal > 0)", 1.0)}}, "stl_specs"),
        ({"shaping": "sometimes"}, "shaping"),
        ({"p_drop": 1.5}, "p_drop"),
        ({"fail_safe_action": "explode"}, "fail_safe_action"),
        ({"certificate": "everyone"}, "certificate"),
        ({"threat_rate": 0.0}, "threat_rate"),
        ({"vote_weight": -1.0}, "vote_weight"),
        ({"byzantine_replicas": (9,)}, "byzantine_replicas"),
        ({"split": "holdout"}, "split"),
        ({"table_options": {"label_column": "y"}}, "table_options"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        BFTSecurityEnv(overrides)


def test_env_runs_on_a_labelled_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 3000
    label = (rng.random(n) < 0.1).astype(int)
    cols = {f"f{i}": rng.normal(size=n) + 2.0 * label * (i < 3) for i in range(6)}
    lines = ["time,host,label," + ",".join(cols)]
    for r in range(n):
        feats = ",".join(f"{cols[c][r]:.5f}" for c in cols)
        lines.append(f"{r},{r % 5},{label[r]},{feats}")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    table = {"host_column": "host", "time_column": "time"}
    env = BFTSecurityEnv(
        {"source": str(path), "horizon": 50, "n_byzantine": 0, "table_options": table}
    )
    assert env.n_features == 6
    steps = rollout(env, 0, policy=lambda a, o: int(Action.ALERT))
    _, _, term, trunc, infos = steps[-1]
    assert len(steps) - 1 == 50
    # The window end is the horizon: terminal under the default time_limit="episodic".
    assert all(term.values()) and not any(trunc.values())
    metrics = next(iter(infos.values()))["episode_metrics"]
    assert metrics["breached"] == 0.0  # tables never breach
    assert metrics["tp"] == metrics["fp"] == 0
    assert metrics["tn"] + metrics["fn"] == 50
