"""Greedy inference with trained RLModules: action logits and held-out evaluation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from marl_bft_rllib.evaluation import EvalResult, greedy_policy, run_episodes


def logits_fn(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Action logits of a torch RLModule for a batch of observations (inference pass)."""
    # One small batch per env step: extra threads only add overhead (30x slower on 2 cores).
    torch.set_num_threads(1)

    def logits(batch: np.ndarray) -> np.ndarray:
        """Action logits, shape (B, n_actions), for a (B, obs_dim) observation batch."""
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.from_numpy(batch)})
        return out[Columns.ACTION_DIST_INPUTS].numpy()

    return logits


def greedy_evaluation(
    modules: Mapping[str, Any],
    module_for_agent: Callable[[str], str],
    env_config: Mapping[str, Any] | None,
    seeds: Sequence[int],
) -> EvalResult:
    """Play the modules' argmax actions on fixed seeds; the same episodes on every call."""
    was_training = {mid: m.training for mid, m in modules.items()}
    for m in modules.values():
        m.eval()
    try:
        policy = greedy_policy({mid: logits_fn(m) for mid, m in modules.items()}, module_for_agent)
        return run_episodes(policy, env_config, seeds)
    finally:
        for mid, m in modules.items():
            m.train(was_training[mid])
