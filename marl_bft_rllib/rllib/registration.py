"""Registers the PettingZoo env with Ray as ``marl_bft`` (RLlib ``ParallelPettingZooEnv``).

``env_config`` is a plain dict of ``EnvConfig`` fields. If it holds a ``seed``, each
env copy gets ``seed + 1000 * worker_index + vector_index`` so parallel env runners
(and evaluation runners, see ``config.evaluation_config_dict``) draw different episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
from ray.tune.registry import register_env

ENV_NAME = "marl_bft"  # the name register() gives the env by default
SEED_STRIDE = 1000


class MarlBftPettingZooEnv(ParallelPettingZooEnv):
    """``ParallelPettingZooEnv`` whose spaces cover every possible replica, not only the first episode's."""

    def __init__(self, env: Any) -> None:
        """Wrap a PettingZoo ParallelEnv; spaces and ids span ``env.possible_agents``."""
        super().__init__(env)
        self.possible_agents = list(env.possible_agents)
        self._agent_ids = set(self.possible_agents)
        self.observation_space = gym.spaces.Dict(
            {aid: env.observation_space(aid) for aid in self.possible_agents}
        )
        self.action_space = gym.spaces.Dict(
            {aid: env.action_space(aid) for aid in self.possible_agents}
        )
        self.agents = list(env.agents)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Reset the wrapped env; ``agents`` follows this episode's honest replicas."""
        obs, infos = super().reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return obs, infos

    def step(self, action_dict: dict) -> tuple[dict, dict, dict, dict, dict]:
        """Step the wrapped env (adds RLlib's ``__all__`` flags)."""
        out = super().step(action_dict)
        self.agents = list(self.par_env.agents)
        return out


def env_creator(env_config: Mapping[str, Any] | None = None) -> MarlBftPettingZooEnv:
    """Build the RLlib env from an ``env_config`` dict (RLlib's ``EnvContext`` works too)."""
    from marl_bft_rllib.env import BFTSecurityEnv

    cfg = dict(env_config or {})
    if cfg.get("seed") is not None:
        worker = int(getattr(env_config, "worker_index", 0) or 0)
        vector = int(getattr(env_config, "vector_index", 0) or 0)
        cfg["seed"] = int(cfg["seed"]) + SEED_STRIDE * worker + vector
    return MarlBftPettingZooEnv(BFTSecurityEnv(cfg))


def register(name: str = ENV_NAME) -> str:
    """Register the env with Ray Tune / RLlib under ``name`` and return the name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: must be a non-empty string, got {name!r}")
    register_env(name, env_creator)
    return name
