"""RLlib callbacks: episode-end env metrics (detection, STL, BFT) into the env-runner metrics.

At the last step the env puts ``infos[agent]["episode_metrics"]`` (computed by
``marl_bft_rllib.metrics``) into every agent's info. ``MarlBftCallbacks.on_episode_end``
logs each of them, averaged over the last ``metrics_num_episodes_for_smoothing``
episodes, under ``result["env_runners"]["marl_bft"][name]`` (and under
``result["evaluation"]["env_runners"]["marl_bft"]`` for evaluation runs).
``on_train_result`` adds the pooled scores ``pooled_precision`` / ``pooled_recall`` /
``pooled_f1`` / ``pooled_accuracy``: ``metrics.detection_scores`` of the mean TP / TN /
FP / FN counts, which equals the scores of the summed counts of those episodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.annotations import override

from marl_bft_rllib.metrics import CONFUSION_KEYS, detection_scores

ENV_METRICS_KEY = "marl_bft"
EPISODE_METRICS_INFO = "episode_metrics"


def final_episode_metrics(episode: Any) -> dict[str, float] | None:
    """The ``episode_metrics`` dict of an episode's last infos (None if absent)."""
    agent_episodes = getattr(episode, "agent_episodes", None)
    candidates = agent_episodes.values() if agent_episodes is not None else [episode]
    for sa_episode in candidates:
        if len(sa_episode) == 0 and not sa_episode.infos:
            continue
        info = sa_episode.get_infos(-1)
        if isinstance(info, Mapping) and EPISODE_METRICS_INFO in info:
            return dict(info[EPISODE_METRICS_INFO])
    return None


def add_pooled_scores(env_metrics: dict[str, Any]) -> dict[str, Any]:
    """Add pooled precision / recall / F1 / accuracy computed from the mean confusion counts.

    Skipped when a count is missing or NaN (an iteration that finished no episode, e.g.
    right after a restore).
    """
    counts = {k: float(env_metrics.get(k, math.nan)) for k in CONFUSION_KEYS}
    if not any(math.isnan(v) for v in counts.values()):
        scores = detection_scores(counts)
        env_metrics.update({f"pooled_{k}": v for k, v in scores.items()})
    return env_metrics


def env_metric(result: Mapping[str, Any], name: str, *, evaluation: bool = False) -> float | None:
    """Read one env metric (e.g. "f1", "pooled_f1") from an RLlib result dict."""
    scope = result.get("evaluation", {}) if evaluation else result
    value = scope.get("env_runners", {}).get(ENV_METRICS_KEY, {}).get(name)
    return None if value is None else float(value)


class MarlBftCallbacks(RLlibCallback):
    """Logs the env's episode-end metrics on the env runners and pooled scores per result."""

    @override(RLlibCallback)
    def on_episode_end(
        self,
        *,
        episode: Any,
        env_runner: Any = None,
        metrics_logger: Any = None,
        **kwargs: Any,
    ) -> None:
        """Log each numeric episode metric (mean over the smoothing window)."""
        if metrics_logger is None:
            return
        metrics = final_episode_metrics(episode)
        if not metrics:
            return
        window = getattr(
            getattr(env_runner, "config", None), "metrics_num_episodes_for_smoothing", 100
        )
        for name, value in metrics.items():
            if isinstance(value, Real) and not isinstance(value, bool):
                metrics_logger.log_value(
                    (ENV_METRICS_KEY, name), float(value), reduce="mean", window=window
                )

    @override(RLlibCallback)
    def on_train_result(self, *, algorithm: Any, result: dict, **kwargs: Any) -> None:
        """Add pooled detection scores to the training and evaluation env metrics."""
        for scope in (result, result.get("evaluation") or {}):
            env_metrics = (scope.get("env_runners") or {}).get(ENV_METRICS_KEY)
            if isinstance(env_metrics, dict):
                add_pooled_scores(env_metrics)
