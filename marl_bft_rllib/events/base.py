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


class EpisodeEvents(Protocol):
    """The event stream of one episode; it reacts to the committed decisions."""

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
