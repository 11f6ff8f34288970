"""The centralised critic: state() reaches the loss, targets stay raw, the policy needs obs only."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.evaluation.postprocessing import Postprocessing
from test_learner import RecordingMixin, hand_targets

from marl_bft_rllib.env import BFTSecurityEnv
from marl_bft_rllib.rllib import MODEL_DEFAULTS, MonteCarloPPOTorchLearner, build_ppo_config
from marl_bft_rllib.rllib.connector import variance_optimal_coef
from marl_bft_rllib.rllib.counterfactual import COUNTERFACTUAL_REWARDS
from marl_bft_rllib.rllib.critic import (
    CRITIC_STATE,
    STATE_DIM_KEY,
    CentralCriticPPOTorchRLModule,
)
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions

ENV = {"horizon": 100, "seed": 4, "n_byzantine": 1, "threat_rate": 0.2}


class RecordingStateLearner(RecordingMixin, MonteCarloPPOTorchLearner):
    """Also records the critic-state column of the loss batch."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        out = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        self.records[-1][CRITIC_STATE] = batch[CRITIC_STATE].cpu().numpy()
        self.records[-1][Columns.OBS] = batch[Columns.OBS].cpu().numpy()
        self.records[-1][COUNTERFACTUAL_REWARDS] = batch[COUNTERFACTUAL_REWARDS].cpu().numpy()
        return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two small iterations of the default (central critic) config; a saved checkpoint."""
    torch.set_num_threads(1)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    config = build_ppo_config(
        # 330 steps: not a multiple of the horizon, so a rollout ends inside an episode (a
        # cut, bootstrapped) even when no episode ends early
        ENV,
        train_batch_size_per_learner=330,
        minibatch_size=None,
        num_epochs=1,
    ).learners(learner_class=RecordingStateLearner)
    algo = config.build_algo()
    path = tmp_path_factory.mktemp("ckpt")
    try:
        for _ in range(2):
            result = algo.train()
        records = algo.learner_group._learner.records
        algo.save_to_path(str(path))
        module = algo.learner_group._learner.module["shared"]  # the full module, with critic
        yield records, result, module, path
    finally:
        algo.stop()
        ray.shutdown()


def test_default_config_uses_the_central_critic(trained):
    _, result, module, _ = trained
    assert isinstance(module, CentralCriticPPOTorchRLModule)
    assert "value_baseline_coef" in result["learners"]["shared"]


def test_loss_batch_carries_the_env_state_row_by_row(trained):
    records, _, _, _ = trained
    env = BFTSecurityEnv(ENV)
    lay = env.state_layout()
    for rec in records:
        state = rec[CRITIC_STATE]
        assert state.shape == (rec[Columns.OBS].shape[0], env.state_dim)
        assert env.state_space.contains(state[0].astype(np.float32))
        # One Byzantine replica per episode: exactly one flag in every row, phantom rows too.
        np.testing.assert_array_equal(state[:, lay["byzantine"]].sum(axis=1), 1.0)
        assert state[:, lay["campaign"]].any()  # real campaign state, not zeros


def test_targets_stay_raw_discounted_returns_with_the_central_critic(trained):
    records, _, _, _ = trained
    gamma = build_ppo_config(ENV).gamma
    ends = {"terminated": 0, "truncated": 0}
    for rec in records:
        mask = rec[Columns.LOSS_MASK].astype(bool)
        expected, kinds = hand_targets(rec, gamma)
        ends = {k: ends[k] + kinds[k] for k in ends}
        np.testing.assert_allclose(
            rec[Postprocessing.VALUE_TARGETS][mask], expected[mask], rtol=1e-4, atol=1e-2
        )
        assert np.abs(rec[Postprocessing.VALUE_TARGETS][mask]).max() > 20  # not standardised
    # Over both iterations: horizon ends (terminal, time_limit "episodic") and rollout cuts.
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1, ends


def test_sampled_states_align_with_each_steps_observation(trained):
    """The state stored with step t's model outputs is infos[t]["state"], for every t."""
    config = build_ppo_config(ENV, train_batch_size_per_learner=300)
    algo = config.build_algo()
    try:
        episodes = algo.env_runner.sample(num_timesteps=200)
    finally:
        algo.stop()
    checked = sliced = 0
    for episode in episodes:
        for sa in episode.agent_episodes.values():
            n = len(sa)
            stored = sa.get_extra_model_outputs(CRITIC_STATE, slice(0, n))
            infos = sa.get_infos(slice(0, n))
            np.testing.assert_array_equal(np.stack(stored), np.stack([i["state"] for i in infos]))
            checked += n
            # A slice keeps the stored states (RLlib's MultiAgentEpisode.slice drops infos).
            if n < 9:  # a chunk the sampler cut short: its slice would be empty
                continue
            part = episode.slice(slice(2, 9)).agent_episodes[sa.agent_id]
            np.testing.assert_array_equal(
                np.stack(part.get_extra_model_outputs(CRITIC_STATE, slice(0, len(part)))),
                np.stack(stored[2:9]),
            )
            sliced += 1
    assert checked > 100 and sliced > 0


def test_sampled_counterfactual_rewards_align_with_each_steps_reward(trained):
    """Step t's stored counterfactual rewards give step t's reward for the vote it cast,
    across rollout cuts and several envs per runner (no shaping or breach penalty)."""
    env = {**ENV, "stl_weight": 0.0, "breach_penalty": 0.0}
    config = build_ppo_config(env).env_runners(
        num_envs_per_env_runner=2, rollout_fragment_length=70
    )
    algo = config.build_algo()
    try:
        chunks = [e for _ in range(2) for e in algo.env_runner.sample(num_timesteps=280)]
    finally:
        algo.stop()
    checked = cut = 0
    for episode in chunks:
        cut += not episode.is_done
        for sa in episode.agent_episodes.values():
            n = len(sa)
            cf = np.stack(sa.get_extra_model_outputs(COUNTERFACTUAL_REWARDS, slice(0, n)))
            taken = cf[np.arange(n), np.asarray(sa.get_actions(slice(0, n)))]
            np.testing.assert_allclose(taken, np.asarray(sa.get_rewards(slice(0, n))), atol=1e-4)
            checked += n
    assert checked > 500 and cut >= 2


def test_loss_uses_the_counterfactual_baseline(trained):
    records, result, _, _ = trained
    assert result["learners"]["shared"]["counterfactual_baseline_coef"] > 0.5
    for rec in records:
        cf = rec[COUNTERFACTUAL_REWARDS][rec[Columns.LOSS_MASK].astype(bool)]
        assert np.isfinite(cf).all() and cf.shape[1] == 4


def test_all_actions_mode_trains_with_its_loss_term(trained):
    options = MonteCarloLearnerOptions(counterfactual_baseline="all_actions")
    config = build_ppo_config(
        ENV, train_batch_size_per_learner=200, minibatch_size=100, num_epochs=3
    ).learners(learner_config_dict=options.to_learner_config_dict())
    algo = config.build_algo()
    try:
        stats = algo.train()["learners"]["shared"]
    finally:
        algo.stop()
    # At the sampling policy the term is 0 by construction (sum_a pi_old(a) (r_cf(a) - b)
    # = 0); the last of six minibatches sees a moved policy, which has climbed the
    # surrogate, so its loss term is negative. (A single minibatch would log ~0.)
    assert np.isfinite(stats["all_actions_policy_loss"])
    assert stats["all_actions_policy_loss"] < 0.0


def test_inference_only_module_has_no_critic():
    env = BFTSecurityEnv(ENV)
    runner = RLModuleSpec(
        module_class=CentralCriticPPOTorchRLModule,
        observation_space=env.observation_space("replica_0"),
        action_space=env.action_space("replica_0"),
        model_config={**MODEL_DEFAULTS, STATE_DIM_KEY: env.state_dim},
        inference_only=True,
    ).build()
    assert not any(n.startswith("encoder.critic_encoder") for n, _ in runner.named_parameters())
    obs = torch.zeros(2, env.obs_dim)
    assert runner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].shape == (2, 4)
    with pytest.raises(ValueError, match="inference-only"):
        runner.compute_values({Columns.OBS: obs})


def test_critic_reads_the_state(trained):
    records, _, module, _ = trained
    rec = records[-1]
    batch = {
        Columns.OBS: torch.from_numpy(rec[Columns.OBS][:50]),
        CRITIC_STATE: torch.from_numpy(rec[CRITIC_STATE][:50]),
    }
    with torch.no_grad():
        v = module.compute_values(batch)
        batch[CRITIC_STATE] = torch.zeros_like(batch[CRITIC_STATE])
        v0 = module.compute_values(batch)
        del batch[CRITIC_STATE]
        with pytest.raises(ValueError, match=CRITIC_STATE):
            module.compute_values(batch)
    assert not torch.allclose(v, v0)


def test_restored_policy_acts_from_the_observation_alone(trained):
    records, _, module, path = trained
    restored = MultiRLModule.from_checkpoint(str(path / "learner_group" / "learner" / "rl_module"))
    obs = torch.from_numpy(records[-1][Columns.OBS][:20])
    with torch.no_grad():
        got = restored["shared"].forward_inference({Columns.OBS: obs})
        want = module.forward_inference({Columns.OBS: obs})
    torch.testing.assert_close(got[Columns.ACTION_DIST_INPUTS], want[Columns.ACTION_DIST_INPUTS])


def test_variance_optimal_coef_falls_back_to_a_constant_baseline():
    rng = np.random.default_rng(0)
    adv_c = rng.standard_normal(5000) * 10
    useless = adv_c + rng.standard_normal(5000) * 10  # critic adds independent noise
    assert variance_optimal_coef(adv_c, useless) == 0.0
    helpful = adv_c - 0.8 * adv_c  # critic removes 80% of the variation
    assert variance_optimal_coef(adv_c, helpful) == pytest.approx(1.0)
    # A critic whose error is as large as what it explains: beta = 1/2.
    noisy = adv_c + (-adv_c + rng.standard_normal(5000) * 10)
    assert variance_optimal_coef(adv_c, noisy) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"value_baseline": "magic"}, "value_baseline"),
        ({"value_head_refit": "yes"}, "value_head_refit"),
    ],
)
def test_lever_options_are_validated(options, field):
    with pytest.raises(ValueError, match=field):
        MonteCarloLearnerOptions(**options)


def test_bad_critic_choice_names_the_field():
    with pytest.raises(ValueError, match="critic"):
        build_ppo_config(critic="telepathic")


@pytest.mark.parametrize("time_limit", ["episodic", "unbounded"])
def test_horizon_rule_of_each_time_limit_reaches_the_targets(trained, time_limit):
    """episodic: the horizon is terminal (plain sums); unbounded: it bootstraps V(s_T)."""
    env = {**ENV, "time_limit": time_limit, "horizon": 40}
    config = build_ppo_config(
        env, train_batch_size_per_learner=200, minibatch_size=None, num_epochs=1
    ).learners(learner_class=RecordingStateLearner)
    algo = config.build_algo()
    try:
        algo.train()
        records = algo.learner_group._learner.records
    finally:
        algo.stop()
    gamma = config.gamma
    for rec in records:
        mask = rec[Columns.LOSS_MASK].astype(bool)
        expected, kinds = hand_targets(rec, gamma)
        if time_limit == "episodic":
            assert kinds["terminated"] >= 3  # every horizon end, no bootstrap
        else:
            # Horizon ends bootstrap; a terminal chunk can only be a rare breach here.
            assert kinds["terminated"] < 3 and kinds["truncated"] >= 4, kinds
        np.testing.assert_allclose(
            rec[Postprocessing.VALUE_TARGETS][mask], expected[mask], rtol=1e-4, atol=1e-2
        )
