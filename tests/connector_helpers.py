"""Shared by the tests that run MonteCarloValueTargets on a hand-made batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI

from marl_bft_rllib.rllib.connector import MonteCarloValueTargets


class ZeroCritic(ValueFunctionAPI):
    """Stands in for a module: V = 0 everywhere (the connector only reads values)."""

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        """Zeros, one per row."""
        return torch.zeros(len(batch[Columns.REWARDS]))

    def is_stateful(self) -> bool:
        """Not recurrent."""
        return False

    def unwrapped(self) -> ZeroCritic:
        """Itself (no DDP wrapper)."""
        return self


def run_targets(batch: dict[str, Any], **options: Any) -> dict[str, Any]:
    """The connector's output for one module ``m`` whose critic is ``ZeroCritic``."""
    piece = MonteCarloValueTargets(**options)
    return piece(rl_module={"m": ZeroCritic()}, batch={"m": dict(batch)}, episodes=[])["m"]


def terminated_chunk(n: int, *, seed: int, mean: float = 5.0) -> dict[str, Any]:
    """One terminated chunk of n steps plus its phantom row, rewards N(mean, 3)."""
    rng = np.random.default_rng(seed)
    mask = np.ones(n + 1, bool)
    mask[-1] = False
    done = np.zeros(n + 1, bool)
    done[n - 1] = True
    return {
        Columns.REWARDS: rng.normal(mean, 3.0, n + 1),
        Columns.LOSS_MASK: mask,
        Columns.TERMINATEDS: done,
        Columns.TRUNCATEDS: np.zeros(n + 1, bool),
    }
