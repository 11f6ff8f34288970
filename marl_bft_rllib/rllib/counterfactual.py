"""Counterfactual baseline (COMA-style): the expected immediate reward under the policy.

The env gives each defender, every step, ``infos[agent]["counterfactual_rewards"]``:
the team + vote part of its reward had it voted each action, with the other votes of
the committed certificate, the label and the protocol run held fixed. The baseline
of a step is ``b = sum_a pi(a | o) r_cf(a)``, with ``pi`` the policy that sampled it.
It does not depend on the agent's own action, so subtracting it from the advantage
keeps the policy gradient unbiased (as COMA's counterfactual baseline does; exact
unless a Byzantine behaviour reacts to the honest votes: ``on_off`` while it copies
them, ``selective_primary`` choosing whom to leave out). It removes what a critic
cannot: the event's label and the peers' votes, which decide most of a step's reward.
With ``counterfactual_baseline="all_actions"`` the sampled immediate term
``r_cf(a_t) - b`` also leaves the advantage and the loss takes its expectation over
actions instead, ``sum_a pi(a | o) (r_cf(a) - b)`` (``all_actions_surrogate``), as in
all-action / mean actor-critic policy gradients: unclipped by default, since for a
fixed step it is the exact expected immediate reward under the new policy, or clipped
per action like PPO's surrogate (``all_actions_clip=True``). Value targets are
untouched (raw Monte Carlo returns).

How the vectors reach the learner: the env returns step t's vector with the
observation of step t + 1, after step t's action was sampled. So
``RecordCounterfactualRewards``, an env-to-module piece, gives every acting agent a
NaN placeholder as module input; the module passes it through to its outputs, so
RLlib stores it with step t's other model outputs (``extra_model_outputs``, which
survive ``MultiAgentEpisode.slice`` under several learners, unlike infos). On the next
env-to-module call (RLlib also makes one on a finished episode) it overwrites step t's
placeholder with the vector from the newest infos, as RLlib's own ``MeanStdFilter``
rewrites episode data. RLlib then adds the column to the train batch with the other
model outputs. A step without a vector (one whose decision the env could not rebuild,
as under the non-PBFT decision rules) stays NaN and gets no baseline. A learned
attacker's vector has entries for its four plain votes only (NaN for its other
strategies): it gets no baseline, and with "all_actions" the term over those four
(``immediate_terms``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.utils.annotations import override

from marl_bft_rllib.env import COUNTERFACTUAL_INFO_KEY

COUNTERFACTUAL_REWARDS = "counterfactual_rewards"  # model-output / train-batch column
# train-batch column of counterfactual_baseline="all_actions": per row and action,
# (r_cf(a) - b) on the advantages' scale, weighed by the policy in the loss
COUNTERFACTUAL_ADVANTAGES = "counterfactual_advantages"


def _policy_and_rewards(logits: np.ndarray, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """softmax(logits) per row and the rewards, as float64, after checking their shapes."""
    z = np.asarray(logits, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    if z.shape != r.shape or z.ndim != 2:
        raise ValueError(
            f"counterfactual rewards: expected one per action, shape {z.shape}, got {r.shape}"
        )
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), r


def counterfactual_baseline(logits: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per row, sum_a softmax(logits)_a * rewards_a (NaN where any reward is NaN)."""
    p, r = _policy_and_rewards(logits, rewards)
    return (p * r).sum(axis=1)


def immediate_terms(
    logits: np.ndarray, rewards: np.ndarray, actions: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the all-actions term's per-action weights and the sampled term they replace.

    V is the set of actions with a finite counterfactual reward. On ``rows`` whose taken
    action is in V: ``b = sum_{a in V} pi(a) r(a) / pi(V)``; the weights are
    ``(r(a) - b) / pi(V)`` for a in V and 0 otherwise; the sampled term is
    ``r(a_t) - b``. Zeros elsewhere. With every reward finite (a defender's) pi(V) = 1
    and this is ``r(a) - counterfactual_baseline``. With some (a learned attacker's: its
    plain votes have one, its other strategies not) only rows whose action is in V carry
    the term, with probability pi(V), so the division keeps its expected gradient
    ``sum_{a in V} grad pi(a) (r(a) - b)``; rows with the action outside V keep their
    sampled reward, and the two parts add up to an unbiased policy gradient.
    """
    p, r = _policy_and_rewards(logits, rewards)
    finite = np.isfinite(r)
    idx = np.arange(len(r))
    carry = np.asarray(rows, bool) & finite[idx, actions]
    r0 = np.where(finite, r, 0.0)
    pv = np.where(carry, (p * finite).sum(axis=1), 1.0)
    b = (p * r0).sum(axis=1) / pv
    weights = np.where(carry[:, None] & finite, (r0 - b[:, None]) / pv[:, None], 0.0)
    taken = np.where(carry, r0[idx, actions] - b, 0.0)
    return weights, taken


@functools.cache
def _placeholder(n_actions: int) -> np.ndarray:
    """The NaN vector a step carries until its counterfactual rewards arrive (read-only)."""
    out = np.full(n_actions, np.nan, np.float32)
    out.flags.writeable = False
    return out


class RecordCounterfactualRewards(ConnectorV2):
    """Env-to-module piece: store each step's counterfactual rewards with its model outputs."""

    @override(ConnectorV2)
    def __call__(
        self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs: Any
    ) -> Any:
        """Fill the last step's placeholder from the newest infos; add the next placeholder."""
        for sa_episode in self.single_agent_episode_iterator(
            episodes, agents_that_stepped_only=True
        ):
            n_actions = int(rl_module[sa_episode.module_id].action_space.n)
            if len(sa_episode) > 0:
                info = sa_episode.get_infos(-1)
                cf = info.get(COUNTERFACTUAL_INFO_KEY) if isinstance(info, dict) else None
                if cf is not None:
                    cf = np.asarray(cf, dtype=np.float32)
                    if cf.shape != (n_actions,):
                        raise ValueError(
                            f"infos[{sa_episode.agent_id!r}][{COUNTERFACTUAL_INFO_KEY!r}]: "
                            f"expected one reward per action, shape ({n_actions},), "
                            f"got {cf.shape}"
                        )
                    sa_episode.set_extra_model_outputs(
                        key=COUNTERFACTUAL_REWARDS, new_data=cf, at_indices=-1
                    )
            self.add_batch_item(
                batch,
                COUNTERFACTUAL_REWARDS,
                item_to_add=_placeholder(n_actions),  # shared: batching copies it
                single_agent_episode=sa_episode,
            )
        return batch


def all_actions_surrogate(
    logits: torch.Tensor,
    old_logits: torch.Tensor,
    advantages: torch.Tensor,
    clip: float | None,
) -> torch.Tensor:
    """Per row, sum_a pi_old(a) min(ratio_a A_a, clip(ratio_a) A_a): PPO's surrogate over all actions.

    ``ratio_a = pi(a) / pi_old(a)``; its gradient at pi = pi_old is that of
    sum_a pi(a) A_a, the expectation of the sampled surrogate's over actions. With
    ``clip=None`` it is sum_a pi(a) A_a itself.
    """
    logp = torch.log_softmax(logits, dim=-1)
    if clip is None:
        return (torch.exp(logp) * advantages).sum(dim=-1)
    old_logp = torch.log_softmax(old_logits, dim=-1).detach()
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    return (torch.exp(old_logp) * surrogate).sum(dim=-1)


__all__ = [
    "COUNTERFACTUAL_ADVANTAGES",
    "COUNTERFACTUAL_REWARDS",
    "RecordCounterfactualRewards",
    "all_actions_surrogate",
    "counterfactual_baseline",
    "immediate_terms",
]
