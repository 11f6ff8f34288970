"""Per-replica sensors: every replica sees the same event through its own noisy sensor."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SCALE_SPREAD = 0.2  # a float noise_scale s gives replica i the scale s * (1 + SCALE_SPREAD * i)


class ReplicaSensors:
    """Independent additive Gaussian sensor noise per replica, with a per-replica scale.

    Only the current event's features are noised; the host context is shared host
    telemetry (computed from the committed event log), so every replica sees it exactly.
    """

    def __init__(
        self,
        n_replicas: int,
        noise_scale: float | Sequence[float],
        rng: np.random.Generator,
    ) -> None:
        if isinstance(n_replicas, bool) or not isinstance(n_replicas, (int, np.integer)):
            raise ValueError(f"n_replicas: expected a positive integer, got {n_replicas!r}")
        if n_replicas < 1:
            raise ValueError(f"n_replicas: expected a positive integer, got {n_replicas!r}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
        self.n_replicas = int(n_replicas)
        if isinstance(noise_scale, (int, float, np.integer, np.floating)) and not isinstance(
            noise_scale, bool
        ):
            base = float(noise_scale)
            if not (math.isfinite(base) and base >= 0.0):
                raise ValueError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
            scales = base * (1.0 + SCALE_SPREAD * np.arange(self.n_replicas))
        else:
            try:
                scales = np.asarray(list(noise_scale), dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"noise_scale: expected a number or a sequence of numbers, got {noise_scale!r}"
                ) from None
            if scales.shape != (self.n_replicas,):
                raise ValueError(
                    f"noise_scale: expected {self.n_replicas} per-replica scales, got {scales.size}"
                )
            if not (np.all(np.isfinite(scales)) and np.all(scales >= 0.0)):
                raise ValueError(f"noise_scale: every scale must be finite and >= 0, got {scales}")
        self.scales = scales.astype(np.float32)
        self._col = self.scales[:, None]
        self._rng = rng

    def observe(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Every replica's noisy view of ``features``: (n_replicas, n_features) float32."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 1:
            raise ValueError(f"features: expected a 1-D feature vector, got shape {f.shape}")
        if out is None:
            out = np.empty((self.n_replicas, f.shape[0]), np.float32)
        self._rng.standard_normal(out=out, dtype=np.float32)
        out *= self._col
        out += f
        return out
