"""MonteCarloPPOTorchLearner on RLlib: the value targets the loss receives, and the config."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import ray
import torch
from connector_helpers import ZeroCritic, terminated_chunk
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.env.multi_agent_env import MultiAgentEnv
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.tune.registry import register_env

from marl_bft_rllib.metrics import explained_variance
from marl_bft_rllib.rllib import MonteCarloPPOTorchLearner, build_ppo_config
from marl_bft_rllib.rllib.config import ATTACKER_DEFAULTS
from marl_bft_rllib.rllib.connector import MonteCarloValueTargets
from marl_bft_rllib.rllib.learner import (
    REPLAY_BATCHES_KEY,
    REPLAY_KL_KEY,
    REPLAY_LOSS_KEY,
    REPLAY_ROWS_KEY,
    REPLAY_TARGETS,
    MonteCarloLearnerOptions,
    _is_critic_param,
)

GAMMA = 0.97
TERM_LEN, TRUNC_LEN = 8, 11


class ToyEnv(MultiAgentEnv):
    """Deterministic 2-agent env: episodes alternate between termination at step 8 and
    truncation at step 11 (the kind is observed); reward -(40 + 3 t) * (1 + agent index / 2), so returns < -300."""

    def __init__(self, config=None):
        super().__init__()
        self.possible_agents = ["a0", "a1"]
        self.agents = list(self.possible_agents)
        box = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.observation_spaces = {a: box for a in self.possible_agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.possible_agents}
        self.terminating = False  # flips at the end of every episode

    def _obs(self):
        return {
            a: np.array([self.t / 10.0, i, float(self.terminating)], np.float32)
            for i, a in enumerate(self.possible_agents)
        }

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self._obs(), {}

    def step(self, actions):
        rewards = {a: -(40.0 + 3.0 * self.t) * (1.0 + i / 2) for i, a in enumerate(self.agents)}
        self.t += 1
        term = self.terminating and self.t == TERM_LEN
        trunc = not self.terminating and self.t == TRUNC_LEN
        if term or trunc:
            self.terminating = not self.terminating
        terms = {a: term for a in self.agents} | {"__all__": term}
        truncs = {a: trunc for a in self.agents} | {"__all__": trunc}
        return self._obs(), rewards, terms, truncs, {}


class RecordingMixin:
    """Records what compute_loss_for_module receives, and V of that batch before updating."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        if not hasattr(self, "records"):
            self.records = []
        with torch.no_grad():
            values = self.module[module_id].unwrapped().compute_values(batch)
        self.records.append(
            {
                "module": module_id,
                "values": values.cpu().numpy().astype(np.float64),
                **{
                    k: batch[k].cpu().numpy()
                    for k in (
                        Postprocessing.VALUE_TARGETS,
                        Postprocessing.ADVANTAGES,
                        Columns.LOSS_MASK,
                        Columns.REWARDS,
                        Columns.TERMINATEDS,
                        Columns.TRUNCATEDS,
                    )
                },
            }
        )
        return super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )


class RecordingMCLearner(RecordingMixin, MonteCarloPPOTorchLearner):
    pass


class RecordingStockLearner(RecordingMixin, PPOTorchLearner):
    pass


def hand_targets(rec: dict, gamma: float) -> tuple[np.ndarray, dict[str, int]]:
    """Discounted sums by an explicit loop over each chunk (phantom row = bootstrap)."""
    mask = rec[Columns.LOSS_MASK].astype(bool)
    rewards, values = rec[Columns.REWARDS], rec["values"]
    expected = np.full(mask.shape, np.nan)
    kinds = {"terminated": 0, "truncated": 0}
    start = 0
    for end in np.flatnonzero(~mask):  # phantom rows close the chunks
        # RLlib flags a horizon truncation as terminated too: truncated wins.
        last = end - 1
        terminated = (
            end > start
            and bool(rec[Columns.TERMINATEDS][last])
            and not bool(rec[Columns.TRUNCATEDS][last])
        )
        kinds["terminated" if terminated else "truncated"] += 1
        g = 0.0 if terminated else values[end]
        for t in range(end - 1, start - 1, -1):
            g = rewards[t] + gamma * g
            expected[t] = g
        start = end + 1
    return expected, kinds


def check_raw_mc_targets(records: list[dict], gamma: float) -> None:
    """The check the issue asks for: raw MC targets at loss time, standardised advantages."""
    advantages = []
    for rec in records:
        mask = rec[Columns.LOSS_MASK].astype(bool)
        expected, kinds = hand_targets(rec, gamma)
        # Terminated episodes, horizon truncations and a cut at the end of the rollout.
        assert kinds["terminated"] >= 1 and kinds["truncated"] >= 2, kinds
        got = rec[Postprocessing.VALUE_TARGETS][mask]
        np.testing.assert_allclose(got, expected[mask], rtol=1e-4, atol=1e-2)
        assert got.min() < -300  # raw scale, not standardised
        advantages.append(rec[Postprocessing.ADVANTAGES][mask])
    adv = np.concatenate(advantages)
    assert abs(adv.mean()) < 1e-3 and abs(adv.std() - 1.0) < 1e-3


@pytest.fixture(scope="module")
def ray_session():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: extra intra-op threads only contend
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    register_env("toy_mc_env", lambda cfg: ToyEnv(cfg))
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def toy_config(learner_class, *, lambda_=0.95, per_agent=True, **learner_opts) -> PPOConfig:
    policies = {"a0", "a1"} if per_agent else {"shared"}
    mapping = (lambda aid, *a, **k: aid) if per_agent else (lambda aid, *a, **k: "shared")
    return (
        PPOConfig()
        .environment("toy_mc_env")
        .env_runners(num_env_runners=0, rollout_fragment_length=60)
        .multi_agent(policies=policies, policy_mapping_fn=mapping)
        .rl_module(model_config={"fcnet_hiddens": [16], "vf_share_layers": False})
        .learners(
            num_learners=0,
            learner_class=learner_class,
            learner_config_dict=MonteCarloLearnerOptions(
                **{"counterfactual_baseline": "off", **learner_opts}  # a toy env: no such rewards
            ).to_learner_config_dict(),
        )
        .training(
            gamma=GAMMA,
            lambda_=lambda_,
            train_batch_size_per_learner=60,
            minibatch_size=None,  # the whole batch at once, in episode order
            num_epochs=1,
            vf_clip_param=math.inf,
        )
        .debugging(seed=0)
    )


def train_and_record(config: PPOConfig, iterations: int = 2) -> tuple[list[dict], dict]:
    algo = config.build_algo()
    try:
        for _ in range(iterations):
            result = algo.train()
        return algo.learner_group._learner.records, result
    finally:
        algo.stop()


def test_loss_receives_raw_monte_carlo_targets(ray_session):
    records, result = train_and_record(toy_config(RecordingMCLearner))
    assert {r["module"] for r in records} == {"a0", "a1"}
    check_raw_mc_targets(records, GAMMA)
    for mid in ("a0", "a1"):
        metrics = result["learners"][mid]
        for key in (
            "value_loss_unclipped",
            "value_explained_var",
            "value_target_mean",
            "value_target_std",
            "value_pred_mean",
            "value_pred_std",
            "value_health",
        ):
            assert key in metrics, key
        assert metrics["value_target_std"] > 10  # raw scale, not standardised


def test_check_bites_on_stock_ppo_learner(ray_session):
    records, _ = train_and_record(toy_config(RecordingStockLearner, lambda_=0.9), iterations=1)
    with pytest.raises(AssertionError):
        check_raw_mc_targets(records, GAMMA)


def test_value_head_init_once_and_per_module_standardisation(ray_session):
    config = toy_config(RecordingMCLearner, standardize_advantages="module")
    algo = config.build_algo()
    try:
        r1 = algo.train()
        learner = algo.learner_group._learner
        r2 = algo.train()
        # A fresh learner restored from a checkpoint: the guard is the optimiser state.
        state = algo.learner_group.get_state()
        learner._value_head_checked.clear()
        algo.learner_group.set_state(state)
        r3 = algo.train()
    finally:
        algo.stop()
    for mid in ("a0", "a1"):
        assert r1["learners"][mid]["value_head_initialised"] == 1.0
        assert r2["learners"][mid]["value_head_initialised"] == 0.0
        assert r3["learners"][mid]["value_head_initialised"] == 0.0
    # Least-squares init on batch 1: the loss sees a head that already fits batch 1,
    # unlike a head left as built.
    no_init, _ = train_and_record(
        toy_config(RecordingMCLearner, value_head_init="none"), iterations=1
    )
    for rec, rec_none in zip(learner.records[:2], no_init[:2], strict=True):
        assert rec["module"] == rec_none["module"]
        ev, ev_none = (
            explained_variance(r[Postprocessing.VALUE_TARGETS][m], r["values"][m])
            for r in (rec, rec_none)
            for m in [r[Columns.LOSS_MASK].astype(bool)]
        )
        assert ev > 0.5 and ev > ev_none + 0.3, (ev, ev_none)
    for rec in learner.records:  # standardised per module
        adv = rec[Postprocessing.ADVANTAGES][rec[Columns.LOSS_MASK].astype(bool)]
        assert abs(adv.mean()) < 1e-3 and abs(adv.std() - 1.0) < 1e-3


def test_vf_clip_warning(ray_session):
    config = toy_config(MonteCarloPPOTorchLearner).training(vf_clip_param=10.0)
    algo = config.build_algo()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            algo.train()
    finally:
        algo.stop()
    assert any("vf_clip_param" in str(w.message) for w in caught)


def test_options_validation():
    with pytest.raises(ValueError, match="critic_lr"):
        MonteCarloLearnerOptions(critic_lr=-1.0)
    with pytest.raises(ValueError, match="value_head_init"):
        MonteCarloLearnerOptions(value_head_init="magic")
    with pytest.raises(ValueError, match="unknown option"):
        MonteCarloLearnerOptions.from_learner_config_dict({"monte_carlo": {"nope": 1}})
    with pytest.raises(ValueError, match="critic_replay_batches"):
        MonteCarloLearnerOptions(critic_replay_batches=-1)
    with pytest.raises(ValueError, match="critic_replay_batches"):
        MonteCarloLearnerOptions(critic_replay_batches=1.5)
    with pytest.raises(ValueError, match="critic_replay_epochs"):
        MonteCarloLearnerOptions(critic_replay_epochs=0)
    with pytest.raises(ValueError, match="critic_replay_max_kl"):
        MonteCarloLearnerOptions(critic_replay_max_kl=-0.1)
    with pytest.raises(ValueError, match="critic_replay_batches.*separate_critic_optimizer"):
        MonteCarloLearnerOptions(critic_replay_batches=2, separate_critic_optimizer=False)


def test_critic_replay_refits_the_critic_alone_on_recent_batches(ray_session):
    """The replay phase keeps the current batch and K earlier ones, fits their raw targets
    (its loss falls when repeated) and moves critic parameters only."""
    config = toy_config(
        MonteCarloPPOTorchLearner,
        critic_replay_batches=2,
        critic_replay_epochs=2,
        critic_replay_max_kl=None,
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(4)]
        learner = algo.learner_group._learner
        buffer = learner._critic_replay["a0"]
        module = learner.module["a0"].unwrapped()
        before = {k: v.detach().clone() for k, v in module.state_dict().items()}
        losses = []
        for _ in range(6):
            learner._replay_critic("a0")
            losses.append(float(learner.metrics.peek(("a0", REPLAY_LOSS_KEY))))
        after = module.state_dict()
    finally:
        algo.stop()
    rows = [r["learners"]["a0"][REPLAY_ROWS_KEY] for r in results]
    assert len(buffer) == 3  # the current batch + 2 earlier ones, the oldest dropped
    assert rows[0] < rows[1] < rows[2] and rows[3] == sum(len(b[REPLAY_TARGETS]) for b in buffer)
    assert float(buffer[-1][REPLAY_TARGETS].abs().max()) > 10  # raw targets, not standardised
    assert losses[-1] < losses[0], losses
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(_is_critic_param(k) for k in moved), moved


def test_critic_replay_drops_batches_of_a_policy_that_moved_on(ray_session):
    """critic_replay_max_kl: earlier batches whose sampling policy is farther than that
    from the current one are left out; the newest batch is always replayed."""
    config = toy_config(
        MonteCarloPPOTorchLearner, critic_replay_batches=2, critic_replay_max_kl=0.0
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(3)]
    finally:
        algo.stop()
    last = results[-1]["learners"]["a0"]
    assert last[REPLAY_KL_KEY] > 0.0  # the policy moved since the earlier batches
    assert last[REPLAY_BATCHES_KEY] == 1.0
    assert last[REPLAY_ROWS_KEY] == results[0]["learners"]["a0"][REPLAY_ROWS_KEY] > 0


def test_counterfactual_baseline_without_the_central_critic_fails_at_build(ray_session):
    config = toy_config(RecordingMCLearner, counterfactual_baseline="step")
    with pytest.raises(ValueError, match="counterfactual_baseline"):
        config.build_algo()


def test_build_ppo_config_rejects_bad_training_keys():
    with pytest.raises(ValueError, match="not_an_option"):
        build_ppo_config(not_an_option=3)


def test_build_ppo_config_checks_the_lr_schedule():
    assert build_ppo_config().lr == [[0, 1e-3], [20_000, 1e-4], [40_000, 2e-5]]  # default
    assert build_ppo_config(lr=5e-4).lr == 5e-4
    with pytest.raises(ValueError, match=r"^lr: a schedule needs two or more"):
        build_ppo_config(lr=[[100, 1e-3], [200, 1e-4]])
    with pytest.raises(ValueError, match=r"^lr: must be > 0"):
        build_ppo_config(lr=-1e-3)


def test_build_ppo_config_trains_on_real_env(ray_session):
    config = build_ppo_config(
        {"horizon": 40, "seed": 3},
        train_batch_size_per_learner=160,
        minibatch_size=64,
        num_epochs=1,
    )
    assert config.vf_clip_param == math.inf
    assert config.model_config["vf_share_layers"] is False
    assert config.learner_class is MonteCarloPPOTorchLearner
    algo = config.build_algo()
    try:
        for _ in range(2):
            result = algo.train()
    finally:
        algo.stop()
    assert result["training_iteration"] == 2
    shared = result["learners"]["shared"]
    assert math.isfinite(shared["value_loss_unclipped"]) and "value_health" in shared
    env_metrics = result["env_runners"]["marl_bft"]
    for key in ("tp", "fp", "f1", "pooled_f1", "views"):
        assert key in env_metrics, key


def test_build_ppo_config_one_policy_per_replica():
    config = build_ppo_config({"n_replicas": 5}, shared_policy=False)
    assert set(config.policies) == {f"replica_{i}" for i in range(5)}
    assert config.policy_mapping_fn("replica_3", None) == "replica_3"


def test_lambda_per_module_sets_each_modules_gae() -> None:
    """lambda_per_module overrides lambda_ for its modules only; the targets stay MC returns."""
    n = 40
    rows = terminated_chunk(n, seed=3, mean=2.0)
    r = rows[Columns.REWARDS][:n]
    piece = MonteCarloValueTargets(
        gamma=0.9, lambda_=1.0, lambda_per_module={"a": 0.0}, standardize_advantages="module"
    )
    out = piece(
        rl_module={"a": ZeroCritic(), "b": ZeroCritic()},
        batch={"a": dict(rows), "b": dict(rows)},
        episodes=[],
    )
    returns = np.zeros(n)
    for t in reversed(range(n)):  # hand-computed: terminated, no bootstrap
        returns[t] = r[t] + 0.9 * (returns[t + 1] if t + 1 < n else 0.0)
    for mid, raw in (("a", r), ("b", returns)):  # V = 0: GAE(0) = r, GAE(1) = G
        np.testing.assert_allclose(out[mid][Postprocessing.VALUE_TARGETS][:n], returns, rtol=1e-5)
        adv = np.asarray(out[mid][Postprocessing.ADVANTAGES][:n], np.float64)
        np.testing.assert_allclose(adv, (raw - raw.mean()) / raw.std(), atol=1e-4)
    with pytest.raises(ValueError, match=r"^lambda_ of module 'a'"):
        MonteCarloValueTargets(gamma=0.9, lambda_=0.5, lambda_per_module={"a": 1.5})


def test_build_ppo_config_attacker_training() -> None:
    """Per-module overrides reach RLlib's config for the attacker only; bad ones fail early."""
    config = build_ppo_config(
        {"horizon": 60}, adversary="learned", attacker_training={"lambda_": 0.2, "lr": 2e-3}
    )
    attacker = config.get_config_for_module("attacker")
    assert (attacker.lambda_, attacker.lr) == (0.2, 2e-3)
    assert config.get_config_for_module("shared").lambda_ == config.lambda_ == 0.5
    default = build_ppo_config({"horizon": 60}, adversary="learned")
    assert default.get_config_for_module("attacker").lambda_ == ATTACKER_DEFAULTS["lambda_"]
    assert default.get_config_for_module("attacker").lr == ATTACKER_DEFAULTS["lr"]
    assert not build_ppo_config({"horizon": 60}).algorithm_config_overrides_per_module
    for kwargs, message in (
        ({"attacker_training": {"gamma": 0.5}}, r"^attacker_training: unsupported"),
        ({"attacker_training": {"lambda_": 1.5}}, r"^attacker_training\['lambda_'\]: "),
        ({"attacker_training": {"lr": -1.0}}, r"^attacker_training\['lr'\]: "),
        ({"attacker_training": [0.1]}, r"^attacker_training: expected a dict"),
    ):
        with pytest.raises(ValueError, match=message):
            build_ppo_config({"horizon": 60}, adversary="learned", **kwargs)
    with pytest.raises(ValueError, match=r"^attacker_training: only with learned"):
        build_ppo_config({"horizon": 60}, attacker_training={"lambda_": 0.0})
