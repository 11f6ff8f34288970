"""A ready multi-agent PPO config for the ``marl_bft`` env with the Monte Carlo learner."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from marl_bft_rllib.env import ATTACKER_PREFIX
from marl_bft_rllib.env_config import ADVERSARIES, HELD_OUT_SEED_OFFSET
from marl_bft_rllib.rllib.callbacks import MarlBftCallbacks
from marl_bft_rllib.rllib.counterfactual import RecordCounterfactualRewards
from marl_bft_rllib.rllib.critic import (
    STATE_DIM_KEY,
    AddCriticStateToModuleInput,
    CentralCriticPPOTorchRLModule,
)
from marl_bft_rllib.rllib.inert import RecordInert
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions, MonteCarloPPOTorchLearner
from marl_bft_rllib.rllib.registration import register
from marl_bft_rllib.validation import check_number, check_schedule

SHARED_POLICY = "shared"
ATTACKER_POLICY = "attacker"  # the learned attackers' module (adversary="learned")
CRITICS = ("central", "local")
EVAL_SEED_OFFSET = HELD_OUT_SEED_OFFSET

TRAINING_DEFAULTS: dict[str, Any] = {
    "gamma": 0.99,
    # Rewards are mostly immediate: a short advantage horizon learns fastest (measured,
    # benchmarks/value_learning.py, 3 seeds: mean F1 over iterations 1-10 0.952 at 0.5
    # against 0.942 at 0.7; stock PPO's best of its grid 0.5 - 0.95 is 0.5 too).
    "lambda_": 0.5,
    # Policy lr, an RLlib schedule over env steps: 1e-3 down to 1e-4 at 20,000 (iteration
    # 10 at this batch size), then to 2e-5 at 40,000, then held (measured,
    # benchmarks/value_learning.py, 3 seeds: mean F1 over iterations 1-10 0.989 against
    # 0.974 at a constant 3e-4, F1 >= 0.9 after one iteration in every seed; held at 1e-4,
    # F1 drifted from 0.989 at iteration 10 to 0.982 at 30; with the tail 0.988 to 0.990).
    "lr": [[0, 1e-3], [20_000, 1e-4], [40_000, 2e-5]],
    "train_batch_size_per_learner": 2000,
    "minibatch_size": 256,
    "num_epochs": 10,
    "entropy_coeff": 0.001,  # 0.01 kept the policy noisy: training returns, and EV, lagged
    "clip_param": 0.2,
    "vf_loss_coeff": 1.0,
    "vf_clip_param": math.inf,
}

# Per-module overrides of the attacker module (adversary "learned" / "mixed"). The
# attacker changes a decision only where the certificate's honest votes disagree, and its
# reward is mostly that step's: lambda 0 keeps the future-return noise out of its
# advantages, and a constant lr keeps it learning (measured, benchmarks/attacker_training.py,
# a fresh attacker 10 iterations against frozen defenders, 2 seeds: it lowered their F1
# by 0.007 at the defenders' lambda 0.5 and lr schedule, 0.019 at lambda 0, 0.034 with
# lr 3e-3 too, 0.023 at lr 1e-2; the scripted insider 0.040).
ATTACKER_DEFAULTS: dict[str, Any] = {"lambda_": 0.0, "lr": 3e-3}
# the options the learner reads per module (the rest of PPOConfig.training is global)
ATTACKER_OPTIONS = frozenset({"lambda_", "lr"})

MODEL_DEFAULTS: dict[str, Any] = {
    "fcnet_hiddens": [128, 128],
    "fcnet_activation": "tanh",
    # Explicit: a DefaultModelConfig object would switch PPO to a shared encoder.
    "vf_share_layers": False,
}


def map_to_shared(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping for parameter sharing: every replica uses the module ``shared``."""
    return SHARED_POLICY


def map_by_role(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping with learned attackers: ``attacker_j`` -> ``attacker``, others -> ``shared``."""
    return ATTACKER_POLICY if str(agent_id).startswith(ATTACKER_PREFIX) else SHARED_POLICY


def map_to_own(agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
    """Policy mapping for independent PPO: replica ``replica_i`` uses module ``replica_i``."""
    return str(agent_id)


def critic_state_connector(
    env: Any = None, spaces: Any = None, device: Any = None
) -> list[ConnectorV2]:
    """Env-to-module pieces of the central critic (``config.env_runners(...)``).

    They record the env's ``state()``, the counterfactual rewards and the ``inert`` flags
    for the learner.
    """
    return [AddCriticStateToModuleInput(), RecordCounterfactualRewards(), RecordInert()]


def training_option_names() -> set[str]:
    """Every keyword ``PPOConfig.training()`` accepts (its own and its parents')."""
    keys: set[str] = set()
    for cls in PPOConfig.__mro__:  # PPOConfig.training passes **kwargs to its parents
        if "training" in vars(cls):
            params = inspect.signature(vars(cls)["training"]).parameters
            keys |= {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    return keys


def _attacker_overrides(attacker_training: dict[str, Any] | None, learned: bool) -> dict:
    """The attacker module's validated training overrides (none without learned attackers)."""
    if attacker_training is not None and not isinstance(attacker_training, dict):
        raise ValueError(f"attacker_training: expected a dict, got {attacker_training!r}")
    if attacker_training and not learned:
        raise ValueError(
            "attacker_training: only with learned attackers (adversary 'learned' or 'mixed')"
        )
    if not learned:
        return {}
    overrides = {**ATTACKER_DEFAULTS, **(attacker_training or {})}
    bad = sorted(set(overrides) - ATTACKER_OPTIONS)
    if bad:
        raise ValueError(
            f"attacker_training: unsupported option(s) {bad}; expected some of "
            f"{sorted(ATTACKER_OPTIONS)}"
        )
    if "lambda_" in overrides:
        overrides["lambda_"] = check_number(
            "attacker_training['lambda_']", overrides["lambda_"], lo=0.0, hi=1.0
        )
    if "lr" in overrides:
        overrides["lr"] = check_schedule("attacker_training['lr']", overrides["lr"])
    return PPOConfig.overrides(**overrides)


def build_ppo_config(
    env_config: dict | None = None,
    *,
    shared_policy: bool = True,
    critic: str = "central",
    adversary: str | None = None,
    policies_to_train: Sequence[str] | None = None,
    attacker_training: dict[str, Any] | None = None,
    **training: Any,
) -> PPOConfig:
    """Multi-agent PPO on ``marl_bft`` with raw Monte Carlo value targets and env metrics.

    ``critic``: "central" (the value function reads obs + the env's ``state()``, CTDE;
    the advantages also use the counterfactual baseline) or "local" (RLlib's default
    module: the value function reads the observation only; no counterfactual baseline).
    ``adversary``: "scripted" or "learned" (sets the env's ``adversary``; default: the
    env_config's). Learned: two modules, ``shared`` for the defenders and ``attacker``,
    mapped by agent id prefix, each with its own raw Monte Carlo critic and advantages
    standardised per module. ``policies_to_train``: the modules that learn (default:
    all), e.g. ``["attacker"]`` to train an attacker against frozen defenders.
    ``attacker_training``: ``PPOConfig.training()`` options for the ``attacker`` module
    only, over ``ATTACKER_DEFAULTS`` (RLlib's per-module overrides; the learner reads
    ``lambda_`` and ``lr`` per module).
    """
    from marl_bft_rllib.env import BFTSecurityEnv

    if critic not in CRITICS:
        raise ValueError(f"critic: must be one of {CRITICS}, got {critic!r}")
    env_config = dict(env_config or {})
    if adversary is not None:
        if adversary not in ADVERSARIES:
            raise ValueError(f"adversary: expected one of {ADVERSARIES}, got {adversary!r}")
        if env_config.get("adversary", adversary) != adversary:
            raise ValueError(
                f"adversary: {adversary!r} contradicts env_config['adversary'] = "
                f"{env_config['adversary']!r}"
            )
        env_config["adversary"] = adversary
    env = BFTSecurityEnv(env_config)  # validates env_config early
    learned = env.learned
    n_replicas, state_dim = env.n, env.state_dim
    env.close()
    bad = sorted(set(training) - training_option_names())
    if bad:
        raise ValueError(
            f"training: unknown PPOConfig.training() option(s) {bad}; "
            f"see PPOConfig.training for the valid names"
        )
    if "lr" in training:
        training["lr"] = check_schedule("lr", training["lr"])
    attacker = _attacker_overrides(attacker_training, learned)
    # the counterfactual rewards reach the learner through the central critic's module
    counterfactual = (
        MonteCarloLearnerOptions().counterfactual_baseline if critic == "central" else "off"
    )
    options = MonteCarloLearnerOptions(counterfactual_baseline=counterfactual)
    if learned:
        if not shared_policy:
            raise ValueError(
                "shared_policy: adversary='learned' uses one module per side (shared, "
                "attacker); per-replica policies are not supported with it"
            )
        policies, mapping = {SHARED_POLICY, ATTACKER_POLICY}, map_by_role
        # opposite rewards: each side's advantages standardised over its own rows
        options = MonteCarloLearnerOptions(
            standardize_advantages="module", counterfactual_baseline=counterfactual
        )
    elif shared_policy:
        policies, mapping = {SHARED_POLICY}, map_to_shared
    else:
        policies, mapping = {f"replica_{i}" for i in range(n_replicas)}, map_to_own
    if policies_to_train is not None:
        if isinstance(policies_to_train, str):
            policies_to_train = [policies_to_train]
        to_train = list(policies_to_train)
        unknown = sorted(set(to_train) - policies)
        if unknown or not to_train:
            raise ValueError(
                f"policies_to_train: expected a non-empty subset of {sorted(policies)}, "
                f"got {policies_to_train!r}"
            )
    else:
        to_train = None

    config = (
        PPOConfig()
        .environment(register(), env_config=env_config)
        .framework("torch")
        .env_runners(num_env_runners=0)
        .multi_agent(policies=policies, policy_mapping_fn=mapping, policies_to_train=to_train)
        .rl_module(model_config=dict(MODEL_DEFAULTS))
        .learners(
            num_learners=0,
            learner_class=MonteCarloPPOTorchLearner,
            learner_config_dict=options.to_learner_config_dict(),
        )
        .callbacks(MarlBftCallbacks)
        # A dead env runner is replaced, not fatal (RLlib's default waits 60 s to do so).
        .fault_tolerance(restart_failed_env_runners=True, delay_between_env_runner_restarts_s=5.0)
        .training(**{**TRAINING_DEFAULTS, **training})
    )
    if attacker:
        config = config.rl_module(algorithm_config_overrides_per_module={ATTACKER_POLICY: attacker})
    if critic == "central":
        config = config.rl_module(
            rl_module_spec=RLModuleSpec(module_class=CentralCriticPPOTorchRLModule),
            model_config={**MODEL_DEFAULTS, STATE_DIM_KEY: state_dim},
        ).env_runners(env_to_module_connector=critic_state_connector)
    return config


def add_evaluation(
    config: PPOConfig,
    *,
    interval: int = 1,
    duration: int = 10,
    duration_unit: str = "episodes",
    num_env_runners: int = 0,
    seed_offset: int = EVAL_SEED_OFFSET,
) -> PPOConfig:
    """Greedy evaluation (explore=False) every ``interval`` iterations on held-out env seeds."""
    if interval < 1 or duration < 1:
        raise ValueError(f"interval / duration: must be >= 1, got {interval} / {duration}")
    if seed_offset <= 0:
        raise ValueError(f"seed_offset: must be > 0, got {seed_offset}")
    base_seed = config.env_config.get("seed")
    eval_env_config = {**config.env_config, "seed": (base_seed or 0) + seed_offset}
    return config.evaluation(
        evaluation_interval=interval,
        evaluation_duration=duration,
        evaluation_duration_unit=duration_unit,
        evaluation_num_env_runners=num_env_runners,
        evaluation_config={"explore": False, "env_config": eval_env_config},
    )
