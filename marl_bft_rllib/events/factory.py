"""Build an event source from a name or a table path plus keyword settings."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from marl_bft_rllib.events.base import EventSource
from marl_bft_rllib.events.synthetic import SyntheticAPTSource, SyntheticConfig
from marl_bft_rllib.events.tabular import TableConfig, TabularSource
from marl_bft_rllib.validation import check_options


def _fields(cls: type) -> set[str]:
    """The init field names of a config dataclass."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def make_source(source: str | os.PathLike = "synthetic", **kwargs: Any) -> EventSource:
    """``"synthetic"`` -> SyntheticAPTSource(SyntheticConfig(**kwargs)); a path -> TabularSource."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source: expected 'synthetic' or a table path, got {source!r}")
    if str(source) == "synthetic":
        check_options("make_source", kwargs, _fields(SyntheticConfig))
        return SyntheticAPTSource(SyntheticConfig(**kwargs))
    check_options("make_source", kwargs, _fields(TableConfig) - {"path"})
    return TabularSource(TableConfig(path=source, **kwargs))
