"""The env with learned attackers (adversary="learned") and the non-BFT decision rules."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from marl_bft_rllib.bft import ATTACKER_STRATEGIES, N_STRATEGIES
from marl_bft_rllib.env import BFTSecurityEnv


def _random_episode(env: BFTSecurityEnv, seed: int, rng: np.random.Generator) -> list[tuple]:
    """Play one episode with uniformly random actions; every step's (obs, rewards, infos)."""
    obs, infos = env.reset(seed=seed)
    steps = [(obs, {}, infos)]
    while env.agents:
        actions = {a: int(rng.integers(env.action_space(a).n)) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        steps.append((obs, rewards, infos))
    return steps


@pytest.mark.parametrize("adversary", ["scripted", "learned"])
@pytest.mark.parametrize("decision_rule", ["pbft", "majority", "random_replica"])
def test_parallel_api(adversary: str, decision_rule: str) -> None:
    env = BFTSecurityEnv(
        {"adversary": adversary, "decision_rule": decision_rule, "horizon": 40, "seed": 3}
    )
    parallel_api_test(env, num_cycles=120)


def test_ids_and_roles_match_the_byzantine_replicas() -> None:
    env = BFTSecurityEnv({"adversary": "learned", "n_replicas": 7, "n_byzantine": 2})
    assert env.possible_agents == [f"defender_{k}" for k in range(5)] + ["attacker_0", "attacker_1"]
    held = set()
    for seed in range(30):
        obs, infos = env.reset(seed=seed)
        byz = set(env._consensus.byzantine)
        attackers = {env.agent_index[a] for a in env.agents if a.startswith("attacker_")}
        defenders = {env.agent_index[a] for a in env.agents if a.startswith("defender_")}
        assert attackers == byz
        assert defenders == set(env.honest.tolist())
        assert sorted(env.agent_index.values()) == list(range(7))
        lay = env.state_layout()["byzantine"]
        state = infos["attacker_0"]["state"]
        assert set(np.flatnonzero(state[lay]).tolist()) == byz
        assert not state[env.state_layout()["behavior"]].any()  # learned: no fixed behaviour
        assert obs["attacker_0"].shape == env.observation_space("attacker_0").shape
        assert env.observation_space("attacker_0").shape == (env.obs_dim + 1,)
        assert obs["attacker_0"][-1] == infos["attacker_0"]["label"]  # the insider's label
        assert env.action_space("attacker_0").n == N_STRATEGIES
        assert env.action_space("defender_0").n == 4
        held.add(env.agent_index["defender_0"])
    assert len(held) >= 4  # which replica a role holds is drawn per episode


def test_attacker_sees_its_own_replica_like_a_defender() -> None:
    env = BFTSecurityEnv({"adversary": "learned", "sensor_noise": 0.0})
    obs, _ = env.reset(seed=5)
    lay = env.observation_layout("attacker_0")
    assert lay["label"] == slice(env.obs_dim, env.obs_dim + 1)
    own = env.agent_index["attacker_0"]
    is_primary = obs["attacker_0"][lay["is_primary"]][0]
    assert is_primary == float(env._consensus.primary == own)
    # noiseless sensors: the attacker's features are the defenders' features
    np.testing.assert_array_equal(
        obs["attacker_0"][lay["features"]], obs["defender_0"][lay["features"]]
    )


def test_attacker_votes_enter_its_own_history() -> None:
    env = BFTSecurityEnv({"adversary": "learned", "history": 2})
    env.reset(seed=1)
    quarantine = ATTACKER_STRATEGIES.index("vote_quarantine")
    silent = ATTACKER_STRATEGIES.index("silent")
    lay = env.observation_layout("attacker_0")
    obs, *_ = env.step({a: quarantine if a == "attacker_0" else 0 for a in env.agents})
    assert obs["attacker_0"][lay["own_votes"]][0] == pytest.approx(1.0)  # Quarantine / 3
    obs, *_ = env.step({a: silent if a == "attacker_0" else 0 for a in env.agents})
    assert obs["attacker_0"][lay["own_votes"]].tolist() == pytest.approx([-1.0, 1.0])


def test_actions_outside_the_tables_are_rejected() -> None:
    env = BFTSecurityEnv({"adversary": "learned"})
    env.reset(seed=0)
    ok = dict.fromkeys(env.agents, 0)
    with pytest.raises(ValueError, match=r"attacker_0.*strategy index 0\.\.8.*vote_allow"):
        env.step({**ok, "attacker_0": N_STRATEGIES})
    with pytest.raises(ValueError, match=r"attacker_0.*strategy"):
        env.step({**ok, "attacker_0": -1})
    with pytest.raises(ValueError, match=r"defender_1.*expected 0\.\.3"):
        env.step({**ok, "defender_1": 4})
    with pytest.raises(ValueError, match=r"no action for live agent 'attacker_0'"):
        env.step({a: 0 for a in env.agents if a != "attacker_0"})
    env.step(ok)  # the rejected steps changed nothing
    assert env.t == 1


@pytest.mark.parametrize("attacker_reward", ["negative_mean", "negative_team"])
def test_attacker_reward(attacker_reward: str) -> None:
    env = BFTSecurityEnv(
        {"adversary": "learned", "attacker_reward": attacker_reward, "vote_weight": 0.5}
    )
    rng = np.random.default_rng(0)
    differs = False
    for _, rewards, _ in _random_episode(env, 2, rng)[1:]:
        defenders = [r for a, r in rewards.items() if a.startswith("defender_")]
        mean = float(np.mean(defenders))
        if attacker_reward == "negative_mean":
            assert rewards["attacker_0"] == pytest.approx(-mean)
        else:
            differs |= abs(rewards["attacker_0"] + mean) > 1e-6
    if attacker_reward == "negative_team":
        assert differs  # the vote terms and shaping are left out


@pytest.mark.parametrize(("n", "b"), [(4, 1), (7, 2), (7, 1)])
@pytest.mark.parametrize("p_drop", [0.0, 0.2])
def test_invariants_hold_whatever_the_attackers_do(n: int, b: int, p_drop: float) -> None:
    env = BFTSecurityEnv(
        {"adversary": "learned", "n_replicas": n, "n_byzantine": b, "p_drop": p_drop}
    )
    rng = np.random.default_rng(n * 10 + b)
    convictions = 0
    for seed in range(4):
        steps = _random_episode(env, seed, rng)
        metrics = next(iter(steps[-1][2].values()))["episode_metrics"]
        assert metrics["agreement_violations"] == 0
        assert metrics["validity_violations"] == 0
        honest = env.honest.tolist()
        assert not env._consensus.convicted[honest].any()
        convictions += metrics["convictions"]
    assert convictions > 0  # random strategies include equivocation, which is caught


def test_learned_episodes_are_deterministic_under_the_seed() -> None:
    env = BFTSecurityEnv({"adversary": "learned", "horizon": 50})
    a = _random_episode(env, 9, np.random.default_rng(1))
    b = _random_episode(env, 9, np.random.default_rng(1))
    assert len(a) == len(b)
    for (obs_a, rew_a, _), (obs_b, rew_b, _) in zip(a, b, strict=True):
        assert rew_a == rew_b
        for agent in obs_a:
            np.testing.assert_array_equal(obs_a[agent], obs_b[agent])


@pytest.mark.parametrize(("honest_votes", "decision"), [((0, 0, 3), 3), ((0, 0, 2), 0)])
def test_naive_majority_counts_the_byzantine_vote(honest_votes: tuple, decision: int) -> None:
    """An always_quarantine replica turns Allow, Allow, Quarantine into a tie: most severe wins."""
    env = BFTSecurityEnv(
        {
            "decision_rule": "majority",
            "byzantine_behaviors": ("always_quarantine",),
            "byzantine_replicas": (3,),
        }
    )
    env.reset(seed=0)
    actions = dict(zip(["replica_0", "replica_1", "replica_2"], honest_votes, strict=True))
    _, _, _, _, infos = env.step(actions)
    assert infos["replica_0"]["decision"] == decision


def test_mixed_draws_learned_or_scripted_attackers_per_episode() -> None:
    env = BFTSecurityEnv({"adversary": "mixed", "learned_share": 0.3, "horizon": 30})
    parallel_api_test(env, num_cycles=60)
    learned = 0
    for seed in range(200):
        _, infos = env.reset(seed=seed)
        attacking = "attacker_0" in env.agents
        learned += attacking
        assert [a for a in env.agents if a.startswith("defender_")] == env.possible_agents[:3]
        behavior = infos["defender_0"]["state"][env.state_layout()["behavior"]]
        assert behavior.any() != attacking  # a scripted episode names its behaviour
        assert (env._consensus.behaviors[env.agent_index["attacker_0"]] == "learned") == attacking
        if not attacking:  # the scripted episode steps without attacker actions
            env.step(dict.fromkeys(env.agents, 0))
    assert 40 <= learned <= 80  # about 0.3 of 200


SUBSET = ("silent", "vote_quarantine", "equivocate", "vote_allow")  # any order, any subset


def test_attacker_strategies_subset_is_the_full_table_relabelled() -> None:
    """Action k of a subset env plays what the full table's index of its k-th name plays."""
    cfg = {"adversary": "learned", "p_drop": 0.05, "horizon": 60}
    sub = BFTSecurityEnv({**cfg, "attacker_strategies": list(SUBSET)})  # a list, as from Tune
    full = BFTSecurityEnv(cfg)
    assert sub.action_space("attacker_0").n == len(SUBSET)
    assert sub.action_space("defender_0").n == 4
    ids = [ATTACKER_STRATEGIES.index(name) for name in SUBSET]
    rng = np.random.default_rng(0)
    for seed in (1, 2):
        obs_s, _ = sub.reset(seed=seed)
        obs_f, _ = full.reset(seed=seed)
        played = set()
        while sub.agents:
            acts = {a: int(rng.integers(sub.action_space(a).n)) for a in sub.agents}
            played.add(acts["attacker_0"])
            mapped = {a: ids[k] if a.startswith("attacker_") else k for a, k in acts.items()}
            obs_s, rew_s, _, _, inf_s = sub.step(acts)
            obs_f, rew_f, _, _, inf_f = full.step(mapped)
            assert rew_s == rew_f
            for a in obs_s:
                np.testing.assert_array_equal(obs_s[a], obs_f[a])
            cf_s = inf_s["attacker_0"]["counterfactual_rewards"]
            cf_f = inf_f["attacker_0"]["counterfactual_rewards"]
            assert cf_s.shape == (len(SUBSET),)
            np.testing.assert_array_equal(cf_s, cf_f[ids])  # NaN where the full one is
            assert inf_s["attacker_0"]["inert"] == inf_f["attacker_0"]["inert"]
        assert played == set(range(len(SUBSET)))


def test_attacker_strategies_votes_only_is_never_convicted() -> None:
    votes = ATTACKER_STRATEGIES[:4]
    env = BFTSecurityEnv({"adversary": "learned", "attacker_strategies": votes, "horizon": 80})
    steps = _random_episode(env, 4, np.random.default_rng(1))
    assert not any(infos["attacker_0"]["inert"] for _, _, infos in steps[1:] if infos)
    assert steps[-1][2]["defender_0"]["episode_metrics"]["convictions"] == 0
    parallel_api_test(BFTSecurityEnv({"adversary": "learned", "attacker_strategies": votes}))


def test_attacker_strategies_bad_values_and_actions() -> None:
    for bad, match in (
        (["vote_allow", "forge"], r"attacker_strategies: unknown strategy.*'forge'"),
        ([], r"attacker_strategies: .*at least one"),
        (["silent", "silent"], r"attacker_strategies: expected distinct"),
        (3, r"attacker_strategies: expected a sequence of strategy names"),
    ):
        with pytest.raises(ValueError, match=match):
            BFTSecurityEnv({"adversary": "learned", "attacker_strategies": bad})
    with pytest.raises(ValueError, match=r"attacker_strategies: only apply to learned"):
        BFTSecurityEnv({"attacker_strategies": ["silent"]})  # scripted: nothing would use it
    env = BFTSecurityEnv({"adversary": "learned", "attacker_strategies": "silent, omit"})
    assert env.config.attacker_strategies == ("silent", "omit")  # a flag's comma list
    full = BFTSecurityEnv({"adversary": "learned", "attacker_strategies": "all"})
    assert full.config.attacker_strategies == ATTACKER_STRATEGIES  # "all": the whole table
    env.reset(seed=0)
    ok = dict.fromkeys(env.agents, 0)
    for action in (2, -1, 1.0, True, "silent"):
        with pytest.raises(ValueError, match=r"attacker_0.*0\.\.1 of attacker_strategies"):
            env.step({**ok, "attacker_0": action})
    env.step({**ok, "attacker_0": 1})
    assert env.t == 1
