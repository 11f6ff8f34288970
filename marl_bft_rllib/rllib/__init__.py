"""RLlib layer: env registration, the Monte Carlo value-target PPO learner, configs, callbacks.

Importing this package imports Ray and torch; the env and lower layers do not.
"""

from marl_bft_rllib.rllib.callbacks import ENV_METRICS_KEY, MarlBftCallbacks, env_metric
from marl_bft_rllib.rllib.config import (
    EVAL_SEED_OFFSET,
    MODEL_DEFAULTS,
    TRAINING_DEFAULTS,
    add_evaluation,
    build_ppo_config,
)
from marl_bft_rllib.rllib.connector import MonteCarloValueTargets
from marl_bft_rllib.rllib.critic import (
    CRITIC_STATE,
    AddCriticStateToBatch,
    CentralCriticPPOTorchRLModule,
)
from marl_bft_rllib.rllib.health import (
    HealthConfig,
    ValueHealthMonitor,
    ValueHealthStopper,
    health_status_name,
)
from marl_bft_rllib.rllib.learner import MonteCarloLearnerOptions, MonteCarloPPOTorchLearner
from marl_bft_rllib.rllib.registration import ENV_NAME, env_creator, register
from marl_bft_rllib.rllib.returns import discounted_cumsum, gae_advantages, monte_carlo_returns

__all__ = [
    "CRITIC_STATE",
    "AddCriticStateToBatch",
    "CentralCriticPPOTorchRLModule",
    "ENV_METRICS_KEY",
    "ENV_NAME",
    "EVAL_SEED_OFFSET",
    "MODEL_DEFAULTS",
    "TRAINING_DEFAULTS",
    "HealthConfig",
    "MarlBftCallbacks",
    "MonteCarloLearnerOptions",
    "MonteCarloPPOTorchLearner",
    "MonteCarloValueTargets",
    "ValueHealthMonitor",
    "ValueHealthStopper",
    "add_evaluation",
    "build_ppo_config",
    "discounted_cumsum",
    "env_creator",
    "env_metric",
    "gae_advantages",
    "health_status_name",
    "monte_carlo_returns",
    "register",
]
