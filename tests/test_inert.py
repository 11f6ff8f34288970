"""A convicted attacker's void steps: flagged by the env, left out of the policy loss."""

from __future__ import annotations

import numpy as np
import pytest
from connector_helpers import run_targets, terminated_chunk
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from marl_bft_rllib.bft import ATTACKER_STRATEGIES, N_STRATEGIES
from marl_bft_rllib.env import INERT_INFO_KEY, BFTSecurityEnv
from marl_bft_rllib.rllib.inert import INERT
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions

EQUIVOCATE = ATTACKER_STRATEGIES.index("equivocate")
LEARNED = {"adversary": "learned", "horizon": 60}


def _play(env: BFTSecurityEnv, seed: int, attacker_actions) -> tuple[list, list, list]:
    """Defenders vote Block on every step; returns (inert flags, defender obs, rewards)."""
    obs, infos = env.reset(seed=seed)
    flags, seen, rewards = [infos["attacker_0"][INERT_INFO_KEY]], [], []
    for t in range(env.config.horizon):
        acts = {a: 2 for a in obs if not env.is_attacker(a)}
        acts["attacker_0"] = int(attacker_actions(t))
        obs, rew, _, _, infos = env.step(acts)
        seen.append(np.concatenate([o for a, o in sorted(obs.items()) if a != "attacker_0"]))
        rewards.append([r for a, r in sorted(rew.items()) if a != "attacker_0"])
        if not env.agents:
            break
        flags.append(infos["attacker_0"][INERT_INFO_KEY])
        assert all(INERT_INFO_KEY not in infos[a] for a in infos if not env.is_attacker(a))
    return flags, seen, rewards


def test_env_flags_the_attacker_inert_once_convicted() -> None:
    env = BFTSecurityEnv(LEARNED)
    flags, _, _ = _play(env, 3, lambda t: EQUIVOCATE if t == 5 else 0)
    assert flags[:6] == [False] * 6  # observations 0..5: not yet convicted
    assert all(flags[6:]) and len(flags) > 10  # from the observation after the conviction
    assert env._consensus.convicted[env.agent_index["attacker_0"]]
    never, _, _ = _play(env, 3, lambda t: 0)  # a protocol follower is never convicted
    assert not any(never)


@pytest.mark.parametrize(("seed", "p_drop"), [(0, 0.0), (1, 0.0), (2, 0.1), (3, 0.3)])
def test_an_inert_attackers_actions_change_nothing(seed: int, p_drop: float) -> None:
    """The flag's premise: after the conviction any actions give the same episode."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(N_STRATEGIES, size=(2, 60))
    a[0] = b[0] = EQUIVOCATE  # convicted at step 0
    env = BFTSecurityEnv({**LEARNED, "p_drop": p_drop})
    flags_a, obs_a, rew_a = _play(env, seed, lambda t: a[t])
    flags_b, obs_b, rew_b = _play(env, seed, lambda t: b[t])
    assert all(flags_a[1:]) and flags_a == flags_b
    assert (a != b).sum() > 40
    np.testing.assert_array_equal(np.array(obs_a), np.array(obs_b))
    np.testing.assert_array_equal(np.array(rew_a), np.array(rew_b))


def _chunk(n: int, inert_from: int | None) -> dict:
    """One terminated chunk of n steps (+ phantom row); rows from inert_from on are void."""
    batch = terminated_chunk(n, seed=11)
    if inert_from is not None:
        inert = np.zeros(n + 1, bool)
        inert[inert_from:] = True
        batch[INERT] = inert
    return batch


def _run(batch: dict) -> dict:
    return run_targets(batch, gamma=0.9, lambda_=0.0, value_baseline="critic")


def test_connector_zeroes_inert_advantages_and_keeps_their_targets() -> None:
    n, start = 200, 50
    flagged, plain = _run(_chunk(n, start)), _run(_chunk(n, None))
    np.testing.assert_array_equal(
        flagged[Postprocessing.VALUE_TARGETS], plain[Postprocessing.VALUE_TARGETS]
    )
    adv = np.asarray(flagged[Postprocessing.ADVANTAGES], np.float64)
    assert not adv[start:].any()
    # With V = 0 and lambda 0 the advantage is the reward, standardised over acting rows only.
    r = _chunk(n, None)[Columns.REWARDS][:start]
    np.testing.assert_allclose(adv[:start], (r - r.mean()) / r.std(), atol=1e-4)
    # ... which differs from standardising over every real step
    everything = np.asarray(plain[Postprocessing.ADVANTAGES], np.float64)[:start]
    assert np.abs(everything - adv[:start]).max() > 1e-2


def test_skip_inert_steps_option_is_validated() -> None:
    assert MonteCarloLearnerOptions().skip_inert_steps is True
    with pytest.raises(ValueError, match="skip_inert_steps"):
        MonteCarloLearnerOptions(skip_inert_steps="yes")
