"""RLlib with learned attackers: two modules (shared, attacker), both trained or one frozen."""

from __future__ import annotations

import os
import warnings

import pytest
import ray
import torch
from ray.tune.utils import flatten_dict

from marl_bft_rllib.rllib import build_ppo_config
from marl_bft_rllib.rllib.config import ATTACKER_POLICY, SHARED_POLICY, map_by_role
from marl_bft_rllib.rllib.connector import MonteCarloValueTargets
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions
from marl_bft_rllib.tune import PROGRESS_COLUMNS

# progress columns RLlib itself reports (the others are added by the Tune callbacks)
RLLIB_COLUMNS = [k for k in PROGRESS_COLUMNS if "/" in k or k.startswith("num_")]

SMALL = {"train_batch_size_per_learner": 256, "minibatch_size": 64, "num_epochs": 1}
ENV = {"horizon": 60}


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _moved(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_mapping_by_role() -> None:
    assert map_by_role("attacker_0") == ATTACKER_POLICY
    assert map_by_role("defender_2") == SHARED_POLICY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adversary": "self_play"}, r"^adversary: expected one of"),
        ({"adversary": "scripted", "env": {"adversary": "learned"}}, r"^adversary: 'scripted'"),
        ({"adversary": "learned", "shared_policy": False}, r"^shared_policy: "),
        ({"adversary": "learned", "policies_to_train": ["defender"]}, r"^policies_to_train: "),
        ({"adversary": "learned", "policies_to_train": []}, r"^policies_to_train: "),
        ({"policies_to_train": ["attacker"]}, r"^policies_to_train: "),  # scripted: no attacker
    ],
)
def test_bad_options_are_one_value_error(kwargs: dict, message: str) -> None:
    env = {**ENV, **kwargs.pop("env", {})}
    with pytest.raises(ValueError, match=message):
        build_ppo_config(env, **kwargs)


def test_both_sides_train_with_their_own_critic(ray_session) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        algo = build_ppo_config(ENV, adversary="learned", **SMALL).build_algo()
    try:
        shared, attacker = algo.get_module(SHARED_POLICY), algo.get_module(ATTACKER_POLICY)
        assert shared.observation_space.shape[0] + 1 == attacker.observation_space.shape[0]
        assert (shared.action_space.n, attacker.action_space.n) == (4, 9)
        before = {m: _params(algo.get_module(m)) for m in (SHARED_POLICY, ATTACKER_POLICY)}
        result = algo.train()
        for mid in (SHARED_POLICY, ATTACKER_POLICY):
            stats = result["learners"][mid]
            assert "value_loss_unclipped" in stats and "value_explained_var" in stats
            assert _moved(before[mid], _params(algo.get_module(mid)))
        # every column of train_tune.py's progress table is in the result: both sides'
        # returns and the breach rate included
        flat = flatten_dict(result, delimiter="/")
        missing = [k for k in PROGRESS_COLUMNS if k not in flat and k in RLLIB_COLUMNS]
        assert not missing
        assert 0.0 <= flat["env_runners/marl_bft/breached"] <= 1.0
        returns = result["env_runners"]["module_episode_returns_mean"]
        assert returns[ATTACKER_POLICY] > 0 > returns[SHARED_POLICY]  # zero-sum, defenders lose
        # raw targets per side: the attacker's are the negated defenders' scale, not normalised
        targets = {m: result["learners"][m]["value_target_mean"] for m in returns}
        assert targets[ATTACKER_POLICY] > 10 and targets[SHARED_POLICY] < -10
        # a new attacker equivocates about one step in nine and is convicted: most of its
        # steps are void and left out of its policy loss; a defender's never are
        inert = {m: result["learners"][m]["inert_fraction"] for m in returns}
        assert 0.5 < inert[ATTACKER_POLICY] < 1.0 and inert[SHARED_POLICY] == 0.0
    finally:
        algo.stop()


def _learner_params(algo) -> dict[str, dict[str, torch.Tensor]]:
    """Each module's full parameters (critic included) in the learner."""
    (call,) = algo.learner_group.foreach_learner(
        lambda learner: {m: _params(learner.module[m].unwrapped()) for m in learner.module.keys()}
    )
    return call.get()


def test_frozen_defenders_stay_put(ray_session) -> None:
    """A module left out of policies_to_train keeps actor and critic (replay phase on)."""
    options = MonteCarloLearnerOptions(standardize_advantages="module", critic_replay_batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_ppo_config(
            ENV, adversary="learned", policies_to_train=[ATTACKER_POLICY], **SMALL
        ).learners(learner_config_dict=options.to_learner_config_dict())
        algo = config.build_algo()
    try:
        before = {m: _params(algo.get_module(m)) for m in (SHARED_POLICY, ATTACKER_POLICY)}
        learner_before = _learner_params(algo)
        result = algo.train()
        assert not _moved(before[SHARED_POLICY], _params(algo.get_module(SHARED_POLICY)))
        assert _moved(before[ATTACKER_POLICY], _params(algo.get_module(ATTACKER_POLICY)))
        learner_after = _learner_params(algo)
        assert not _moved(learner_before[SHARED_POLICY], learner_after[SHARED_POLICY])
        assert result["learners"][ATTACKER_POLICY]["critic_replay_rows"] > 0
    finally:
        algo.stop()


def test_mixed_adversary_trains_with_episodes_without_attackers(ray_session) -> None:
    """adversary='mixed': some episodes have no attacker agent; both modules still learn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_ppo_config(
            {**ENV, "adversary": "mixed", "learned_share": 0.5, "seed": 0}, **SMALL
        )
        algo = config.build_algo()
    try:
        episodes = algo.env_runner.sample(num_timesteps=600, explore=True)
        with_attacker = [("attacker_0" in ep.agent_episodes) for ep in episodes]
        assert any(with_attacker) and not all(with_attacker)
        result = algo.train()
        assert {SHARED_POLICY, ATTACKER_POLICY} <= set(result["learners"])
    finally:
        algo.stop()


def test_attacker_lambda_reaches_the_learners_connector(ray_session) -> None:
    """attacker_training's lambda_ is the attacker module's GAE lambda in the learner."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_ppo_config(
            ENV, adversary="learned", attacker_training={"lambda_": 0.1}, **SMALL
        )
        algo = config.build_algo()
    try:
        (call,) = algo.learner_group.foreach_learner(
            lambda learner: learner._learner_connector[MonteCarloValueTargets][0].lambda_per_module
        )
        assert call.get() == {ATTACKER_POLICY: 0.1}
    finally:
        algo.stop()
