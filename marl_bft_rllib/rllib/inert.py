"""Steps whose action can change nothing, left out of the policy loss.

A learned attacker whose replica is convicted is ignored by the protocol: its messages
never enter a certificate again and a view it would lead is skipped. Its later actions
change no decision, reward or observation of anyone else, so their policy gradient is
zero in expectation and pure noise in a sample. Under a new attacker's near-uniform
policy (it equivocates, and is convicted, about one step in nine) that is about 95% of
its steps. The env flags them (``infos[attacker]["inert"]``, with the observation the
action answers). ``RecordInert`` (env-to-module) hands the flag to the module, which
passes it through to the step's model outputs (they survive ``MultiAgentEpisode.slice``
under several learners, unlike infos), as the central critic does with the state;
``AddInertToBatch`` (learner) turns it into the ``INERT`` column, and
``MonteCarloValueTargets`` gives those rows a zero advantage and leaves them out of the
standardisation. A module that does not pass it through (``critic="local"``) gets no
column, and all its steps count. Their value targets stay:
the critic still learns what a conviction costs, which the advantage of the step that
caused it needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.utils.annotations import override

from marl_bft_rllib.env import INERT_INFO_KEY
from marl_bft_rllib.rllib.columns import add_recorded_column

INERT = "inert"  # train-batch column: True where the agent's action was void


class RecordInert(ConnectorV2):
    """Env-to-module piece: the current observation's ``inert`` flag as a module input."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        """Add 1.0 (void action) or 0.0 per agent that acts now, as its observation."""
        for sa_episode in self.single_agent_episode_iterator(
            episodes, agents_that_stepped_only=True
        ):
            info = sa_episode.get_infos(-1)
            flag = bool(info.get(INERT_INFO_KEY, False)) if isinstance(info, dict) else False
            self.add_batch_item(
                batch, INERT, item_to_add=np.float32(flag), single_agent_episode=sa_episode
            )
        return batch


class AddInertToBatch(ConnectorV2):
    """Learner piece: the flags stored at sampling time as the ``INERT`` column."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        """Add one flag per observation row (phantom bootstrap row included)."""
        return add_recorded_column(
            self,
            batch,
            episodes,
            rl_module,
            INERT,
            wanted=lambda module: INERT in getattr(module, "passed_through", ()),
            missing="the env runners need RecordInert (config.critic_state_connector)",
            finish=lambda _, flags: list(np.asarray(flags, np.float32)),
        )


__all__ = ["INERT", "AddInertToBatch", "RecordInert"]
