"""The env's global state() for the centralised critic, and its time-limit semantics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft import BEHAVIORS
from marl_bft_rllib.env import STATE_INFO_KEY, BFTSecurityEnv
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.events.base import CAMPAIGN_STATE_FIELDS, KILL_CHAIN


def states_of_episode(env: BFTSecurityEnv, seed: int) -> list[np.ndarray]:
    """state() at every observation of one episode with seeded random votes."""
    rng = np.random.default_rng(seed)
    _, infos = env.reset(seed=seed)
    states = [env.state()]
    for info in infos.values():
        np.testing.assert_array_equal(info[STATE_INFO_KEY], states[-1])
    while env.agents:
        _, _, _, _, infos = env.step({a: int(rng.integers(4)) for a in env.agents})
        states.append(env.state())
        for info in infos.values():  # infos carry the state of the new observation
            np.testing.assert_array_equal(info[STATE_INFO_KEY], states[-1])
    return states


def test_state_lies_in_state_space_and_is_deterministic():
    env = BFTSecurityEnv({"horizon": 120})
    a = states_of_episode(env, 5)
    b = states_of_episode(BFTSecurityEnv({"horizon": 120}), 5)
    assert len(a) == len(b) > 10
    for s, t in zip(a, b, strict=True):
        assert env.state_space.contains(s)
        np.testing.assert_array_equal(s, t)
    c = states_of_episode(env, 6)
    assert len(c) != len(a) or any(not np.array_equal(s, t) for s, t in zip(a, c, strict=True))


def test_state_slices_name_the_hidden_facts():
    env = BFTSecurityEnv({"horizon": 200, "n_byzantine": 1, "byzantine_behaviors": ("delay",)})
    lay = env.state_layout()
    n = env.n
    assert lay["campaign"].stop == env.state_dim == env.state_space.shape[0]
    rng = np.random.default_rng(0)
    env.reset(seed=11)
    seen_malicious = 0
    while env.agents:
        s = env.state()
        byz = env._consensus.byzantine
        np.testing.assert_array_equal(np.flatnonzero(s[lay["byzantine"]]), byz)
        behavior = s[lay["behavior"]].reshape(n, len(BEHAVIORS))
        assert behavior[byz[0], BEHAVIORS.index("delay")] == 1.0 and behavior.sum() == 1.0
        assert np.flatnonzero(s[lay["primary"]]).tolist() == [env._consensus.primary]
        camp = s[lay["campaign"]]
        k = len(CAMPAIGN_STATE_FIELDS)
        event = env._event
        if event.label:  # the current event is the campaign's next one
            seen_malicious += 1
            assert camp[0] == 1.0 and camp[2] == pytest.approx(1.0)
            assert np.flatnonzero(camp[k : k + len(KILL_CHAIN)]).tolist() == [event.stage]
            assert np.flatnonzero(camp[k + len(KILL_CHAIN) :]).tolist() == [event.host]
        else:
            assert camp[2] < 1.0  # the next campaign event is in the future (or none)
        votes = int(Action.QUARANTINE) if rng.random() < 0.3 else int(Action.ALLOW)
        env.step(dict.fromkeys(env.agents, votes))
    assert seen_malicious > 3


def test_state_of_a_table_source_has_no_campaign(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = 400
    table = pa.table(
        {
            "f0": rng.standard_normal(rows),
            "f1": rng.standard_normal(rows),
            "label": (rng.random(rows) < 0.1).astype(np.int64),
            "host": rng.integers(0, 3, rows),
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    env = BFTSecurityEnv(
        {"source": str(path), "horizon": 50, "table_options": {"host_column": "host"}}
    )
    states = states_of_episode(env, 0)
    lay = env.state_layout()
    assert all(not s[lay["campaign"]].any() for s in states)
    assert all(s[lay["byzantine"]].sum() == 1 for s in states)


def test_unbounded_time_limit_truncates_without_time_in_obs():
    env = BFTSecurityEnv({"horizon": 15, "n_byzantine": 0, "time_limit": "unbounded"})
    layout = env.observation_layout()
    assert layout["progress"].stop == layout["progress"].start  # no time feature
    obs, _ = env.reset(seed=2)
    while env.agents:
        obs, _, term, trunc, _ = env.step(dict.fromkeys(env.agents, int(Action.QUARANTINE)))
    assert all(trunc.values()) and not any(term.values())


def test_default_episodic_time_limit_observes_progress_and_terminates_at_the_horizon():
    assert EnvConfig().time_limit == "episodic"  # the measured choice (README)
    env = BFTSecurityEnv({"horizon": 15, "n_byzantine": 0})
    progress = env.observation_layout()["progress"]
    assert progress.stop - progress.start == 1
    obs, _ = env.reset(seed=2)
    seen = [next(iter(obs.values()))[progress][0]]
    while env.agents:
        obs, _, term, trunc, _ = env.step(dict.fromkeys(env.agents, int(Action.QUARANTINE)))
        seen.append(next(iter(obs.values()))[progress][0])
    np.testing.assert_allclose(seen, np.arange(16) / 15, atol=1e-6)
    assert all(term.values()) and not any(trunc.values())
    assert env.episode_metrics()["breached"] == 0.0  # terminal, but not a breach


@pytest.mark.parametrize("time_limit", ["unbounded", "episodic"])
def test_parallel_api_test_passes_in_both_time_limit_modes(time_limit):
    with warnings.catch_warnings():
        # Byzantine replicas never act, so not every possible agent finishes: by design.
        warnings.filterwarnings("ignore", message="No agents present but not all possible_agents")
        parallel_api_test(BFTSecurityEnv({"horizon": 40, "time_limit": time_limit}), 100)


def test_bad_time_limit_names_the_field():
    with pytest.raises(ValueError, match="time_limit"):
        EnvConfig(time_limit="forever")
