"""Centralised critic (CTDE, as in MAPPO): the value function reads obs + the env's state().

``CentralCriticPPOTorchRLModule`` is RLlib's ``DefaultPPOTorchRLModule`` whose critic
encoder takes ``[observation | state]``, where the state is the env's PettingZoo
``state()`` vector (Byzantine replicas and behaviours, primary, campaign stage / host /
progress), which the defenders cannot see. The actor is unchanged and reads only the
agent's own observation, so sampling, evaluation and a restored policy need nothing
else; the critic runs only in the learner.

How the state reaches the loss (the env puts ``state()`` into every step's infos,
aligned with the observation):
1. ``AddCriticStateToModuleInput``, an env-to-module piece on the env runners, copies
   ``infos[agent]["state"]`` of the current step into the module input's column
   ``CRITIC_STATE``; the module passes it through to its outputs, so RLlib stores it
   with the step's other model outputs (``extra_model_outputs``, like the action
   log-probabilities). Those survive RLlib 2.60's ``MultiAgentEpisode.slice``, which
   the learner group uses to shard episodes across several learners and which drops
   infos.
2. ``AddCriticStateToBatch``, a learner piece inserted by ``MonteCarloPPOTorchLearner``
   when a module declares ``uses_critic_state``, writes those states into the train
   batch's ``CRITIC_STATE`` column. The phantom bootstrap row (``V(s_T)``) gets the
   state of the final observation from the last infos where the episode still has them
   (unsliced), else the last step's state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from torch import nn

from marl_bft_rllib.env import STATE_INFO_KEY
from marl_bft_rllib.rllib.columns import add_recorded_column
from marl_bft_rllib.rllib.counterfactual import COUNTERFACTUAL_REWARDS
from marl_bft_rllib.rllib.inert import INERT

CRITIC_STATE = "critic_state"  # train-batch column with the env's state() per row
STATE_DIM_KEY = "critic_state_dim"  # model_config key: length of the env's state()
# module inputs at sampling time that _forward hands on to the step's model outputs, for
# the learner: the state, and the counterfactual-reward placeholder (counterfactual.py)
PASSED_THROUGH = (CRITIC_STATE, COUNTERFACTUAL_REWARDS, INERT)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "swish": nn.SiLU, "silu": nn.SiLU}


class CentralCriticEncoder(nn.Module):
    """MLP on ``[obs | state]``: the critic's encoder (its output feeds the value head)."""

    def __init__(self, in_dim: int, hiddens: list[int], activation: str) -> None:
        """Layers ``in_dim -> hiddens[0] -> ... -> hiddens[-1]``, each with ``activation``."""
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"fcnet_activation: the central critic supports {sorted(_ACTIVATIONS)}, "
                f"got {activation!r}"
            )
        layers: list[nn.Module] = []
        for width in hiddens:
            layers += [nn.Linear(in_dim, width), _ACTIVATIONS[activation]()]
            in_dim = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Critic features of a batch of ``[obs | state]`` rows."""
        return self.net(x)


class CentralCriticPPOTorchRLModule(DefaultPPOTorchRLModule):
    """PPO module with a decentralised actor (obs) and a centralised critic (obs + state)."""

    uses_critic_state = True
    passed_through = PASSED_THROUGH  # sampling-time inputs handed on to the model outputs

    @override(DefaultPPOTorchRLModule)
    def setup(self) -> None:
        """Build PPO's actor and value head, then a critic encoder over obs + state."""
        super().setup()
        state_dim = self.model_config.get(STATE_DIM_KEY)
        if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(
                f"model_config[{STATE_DIM_KEY!r}]: the env's state() length (a positive int) "
                f"is needed by the central critic, got {state_dim!r}"
            )
        if self.model_config.get("vf_share_layers"):
            raise ValueError("vf_share_layers: must be False with the central critic")
        if self.inference_only:
            return  # env runners and restored policies: actor only
        obs_dim = int(np.prod(self.observation_space.shape))
        self.encoder.critic_encoder = CentralCriticEncoder(
            obs_dim + state_dim,
            list(self.model_config.get("fcnet_hiddens", [256, 256])),
            str(self.model_config.get("fcnet_activation", "tanh")),
        )

    def _actor_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.pi(self.encoder.actor_encoder(batch)[ENCODER_OUT])

    @override(RLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Action logits from the agent's own observation only (learner columns pass through)."""
        out = {Columns.ACTION_DIST_INPUTS: self._actor_logits(batch)}
        for column in PASSED_THROUGH:  # sampling: stored with the step's model outputs
            if column in batch:
                out[column] = batch[column]
        return out

    @override(RLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Action logits; no embeddings, so the loss calls ``compute_values`` with the state."""
        return {Columns.ACTION_DIST_INPUTS: self._actor_logits(batch)}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """V(obs, state) per row; the batch needs the ``CRITIC_STATE`` column."""
        if embeddings is None:
            if self.encoder.critic_encoder is None:
                raise ValueError(
                    "compute_values: this is an inference-only module (env runner or "
                    "restored policy); the critic lives in the learner's module"
                )
            if CRITIC_STATE not in batch:
                raise ValueError(
                    f"batch: no {CRITIC_STATE!r} column; the central critic needs the env's "
                    "state() (MonteCarloPPOTorchLearner adds AddCriticStateToBatch)"
                )
            obs = batch[Columns.OBS].float()
            state = batch[CRITIC_STATE].to(obs.dtype)
            embeddings = self.encoder.critic_encoder(torch.cat([obs, state], dim=-1))
        return self.vf(embeddings).squeeze(-1)


def _info_state(info: Any) -> Any:
    """``info["state"]``, or a clear error naming what is missing."""
    if not isinstance(info, dict) or STATE_INFO_KEY not in info:
        raise ValueError(
            f"infos: the central critic needs infos[agent][{STATE_INFO_KEY!r}] at every step "
            "(BFTSecurityEnv provides it); use critic='local' for other envs"
        )
    return info[STATE_INFO_KEY]


class AddCriticStateToModuleInput(ConnectorV2):
    """Env-to-module piece: the current step's ``infos[agent]["state"]`` as a module input."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        """Add one state per agent that acts now, in the same order as its observation."""
        for sa_episode in self.single_agent_episode_iterator(
            episodes, agents_that_stepped_only=True
        ):
            self.add_batch_item(
                batch,
                CRITIC_STATE,
                item_to_add=_info_state(sa_episode.get_infos(-1)),
                single_agent_episode=sa_episode,
            )
        return batch


class AddCriticStateToBatch(ConnectorV2):
    """Learner piece: the states stored at sampling time as the ``CRITIC_STATE`` column."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        """Add one state row per observation row (phantom bootstrap row included)."""
        return add_recorded_column(
            self,
            batch,
            episodes,
            rl_module,
            CRITIC_STATE,
            wanted=lambda module: getattr(module, "uses_critic_state", False),
            missing="the env runners need AddCriticStateToModuleInput "
            "(build_ppo_config(critic='central') adds it)",
            finish=_final_state,
        )


def _final_state(sa_episode: Any, states: list) -> list:
    """The bootstrap row's own state, from the last infos where the episode still has them."""
    final = sa_episode.get_infos(-1)
    if isinstance(final, dict) and STATE_INFO_KEY in final:
        states[-1] = final[STATE_INFO_KEY]
    return states


__all__ = [
    "CRITIC_STATE",
    "STATE_DIM_KEY",
    "AddCriticStateToBatch",
    "AddCriticStateToModuleInput",
    "CentralCriticEncoder",
    "CentralCriticPPOTorchRLModule",
]
