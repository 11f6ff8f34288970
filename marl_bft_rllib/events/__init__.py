"""Event sources: synthetic APT campaigns or labelled tables, host context and replica sensors."""

from marl_bft_rllib.events.base import KILL_CHAIN, EpisodeEvents, Event, EventSource, Outcome
from marl_bft_rllib.events.context import CONTEXT_NAMES, ContextConfig, HostContextTracker
from marl_bft_rllib.events.factory import SOURCE_REGISTRY, SourceKind, make_source, source_kind
from marl_bft_rllib.events.sensors import ReplicaSensors
from marl_bft_rllib.events.synthetic import (
    BENIGN_KINDS,
    FEATURE_NAMES,
    SyntheticAPTSource,
    SyntheticConfig,
    SyntheticEpisode,
)
from marl_bft_rllib.events.tabular import TableConfig, TabularEpisode, TabularSource, split_windows

__all__ = [
    "BENIGN_KINDS",
    "CONTEXT_NAMES",
    "ContextConfig",
    "Event",
    "EpisodeEvents",
    "EventSource",
    "FEATURE_NAMES",
    "HostContextTracker",
    "KILL_CHAIN",
    "Outcome",
    "ReplicaSensors",
    "SOURCE_REGISTRY",
    "SourceKind",
    "SyntheticAPTSource",
    "SyntheticConfig",
    "SyntheticEpisode",
    "TableConfig",
    "TabularEpisode",
    "TabularSource",
    "make_source",
    "source_kind",
    "split_windows",
]
