"""Per-step values recorded at sampling time, written into the learner's train batch.

The env-to-module pieces (``critic.AddCriticStateToModuleInput``, ``inert.RecordInert``)
put a value into the module input; the module passes it through to the step's model
outputs (``extra_model_outputs``), which survive RLlib 2.60's ``MultiAgentEpisode.slice``
under several learners, unlike infos. ``add_recorded_column`` is the learner side they
share: one batch row per observation row, the phantom bootstrap row included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.rllib.connectors.connector_v2 import ConnectorV2


def add_recorded_column(
    piece: ConnectorV2,
    batch: dict[str, Any],
    episodes: Any,
    rl_module: Any,
    column: str,
    *,
    wanted: Callable[[Any], bool],
    missing: str,
    finish: Callable[[Any, list], list] | None = None,
) -> dict[str, Any]:
    """Add the stored model outputs ``column`` of every episode whose module is ``wanted``.

    ``wanted(module)`` gets the unwrapped module (DDP included); episodes of other
    modules get no rows. ``finish(sa_episode, rows)`` may replace rows (e.g. the
    bootstrap row's). A wanted module's episode without the outputs raises a ValueError
    ending in ``missing``.
    """
    for sa_episode in piece.single_agent_episode_iterator(episodes, agents_that_stepped_only=False):
        mid = sa_episode.module_id
        if mid is not None and not wanted(rl_module[mid].unwrapped()):
            continue
        n = len(sa_episode)  # real steps + the phantom row
        if n == 0:
            continue
        try:
            rows = list(sa_episode.get_extra_model_outputs(column, slice(0, n)))
        except KeyError:
            raise ValueError(f"episodes: no {column!r} model outputs; {missing}") from None
        if finish is not None:
            rows = finish(sa_episode, rows)
        piece.add_n_batch_items(
            batch, column, items_to_add=rows, num_items=n, single_agent_episode=sa_episode
        )
    return batch


__all__ = ["add_recorded_column"]
