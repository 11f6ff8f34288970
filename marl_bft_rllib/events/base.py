"""The contract between event sources and the env: events, outcomes, episodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

KILL_CHAIN: tuple[str, ...] = (
    "reconnaissance",
    "initial_access",
    "execution",
    "persistence",
    "privilege_escalation",
    "lateral_movement",
    "exfiltration",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One security event as the env sees it before sensor noise."""

    features: np.ndarray  # (n_features,) float32, clean current-event features, ~unit scale
    context: np.ndarray  # (n_context,) float32, host-history features, ~unit scale
    label: int  # 1 malicious, 0 benign
    host: int  # host index in [0, n_hosts)
    campaign: int  # campaign id, -1 for benign events
    stage: int  # index into KILL_CHAIN, -1 for benign events


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the committed decision on the current event did to the episode."""

    contained: bool  # the decision contained the event's campaign
    breached: bool  # a campaign reached exfiltration uncontained: the episode terminates
    exhausted: bool  # the source has no further event (end of a table window)


CAMPAIGN_STATE_FIELDS: tuple[str, ...] = ("active", "progress", "next_event_recency")
NEXT_EVENT_TAU = 10.0  # slots: next_event_recency = exp(-(slots to next event) / tau)


def campaign_state_dim(n_hosts: int) -> int:
    """Length of ``EpisodeEvents.campaign_state()``: 3 scalars, the stage and the host."""
    return len(CAMPAIGN_STATE_FIELDS) + len(KILL_CHAIN) + n_hosts


def campaign_state_vector(
    n_hosts: int, *, progress: float, slots_to_next: int, stage: int, host: int
) -> np.ndarray:
    """The hidden state of an active campaign in the ``campaign_state()`` layout."""
    out = np.zeros(campaign_state_dim(n_hosts), np.float32)
    k = len(CAMPAIGN_STATE_FIELDS)
    out[:k] = (1.0, progress, np.exp(-slots_to_next / NEXT_EVENT_TAU))
    out[k + stage] = 1.0
    out[k + len(KILL_CHAIN) + host] = 1.0
    return out


class EpisodeEvents(Protocol):
    """The event stream of one episode; it reacts to the committed decisions."""

    def campaign_state(self) -> np.ndarray:
        """Hidden attack state, ``campaign_state_dim(n_hosts)`` float32 (zeros: none known).

        Layout: ``active`` (an uncontained campaign has events to come), ``progress``
        (fraction of its events already past), ``next_event_recency`` (exp(-slots until
        its next event / 10)), the kill-chain stage of that next event (one-hot, 7), and
        its host (one-hot, n_hosts). Privileged: only a centralised critic may read it.
        """
        ...

    def current(self) -> Event:
        """The event awaiting a decision."""
        ...

    def respond(self, decision: int) -> Outcome:
        """Apply the committed decision (an ``Action``) to the current event and advance."""
        ...


class EventSource(Protocol):
    """A factory of episodes with fixed feature layout."""

    feature_names: tuple[str, ...]
    context_names: tuple[str, ...]
    n_hosts: int

    def episode(self, rng: np.random.Generator, horizon: int) -> EpisodeEvents:
        """Start an episode of at most ``horizon`` events, fully determined by ``rng``."""
        ...
