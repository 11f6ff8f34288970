"""Build an event source from a name or a table path plus keyword settings."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from marl_bft_rllib.events.base import EventSource
from marl_bft_rllib.events.synthetic import SyntheticAPTSource, SyntheticConfig
from marl_bft_rllib.events.tabular import TableConfig, TabularSource


def _fields(cls: type) -> set[str]:
    """The init field names of a config dataclass."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def make_source(source: str | os.PathLike = "synthetic", **kwargs: Any) -> EventSource:
    """``"synthetic"`` -> SyntheticAPTSource(SyntheticConfig(**kwargs)); a path -> TabularSource."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source: expected 'synthetic' or a table path, got {source!r}")
    if str(source) == "synthetic":
        unknown = sorted(set(kwargs) - _fields(SyntheticConfig))
        if unknown:
            raise ValueError(
                f"make_source: unknown settings {unknown} for the synthetic source; "
                f"expected some of {sorted(_fields(SyntheticConfig))}"
            )
        return SyntheticAPTSource(SyntheticConfig(**kwargs))
    allowed = _fields(TableConfig) - {"path"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"make_source: unknown settings {unknown} for a table source; "
            f"expected some of {sorted(allowed)}"
        )
    return TabularSource(TableConfig(path=source, **kwargs))
