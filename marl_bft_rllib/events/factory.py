"""Build an event source from a name or a table path plus keyword settings.

Each kind of source is one :class:`SourceKind` record in :data:`SOURCE_REGISTRY`;
adding a source is adding a record there. A kind is selected by its name
(``"synthetic"``) or, for sources read from a file, by the file's suffix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marl_bft_rllib.events.base import EventSource
from marl_bft_rllib.events.synthetic import SyntheticAPTSource, SyntheticConfig
from marl_bft_rllib.events.tabular import (
    CSV_EXTS,
    PARQUET_EXTS,
    TableConfig,
    TabularSource,
)
from marl_bft_rllib.validation import check_options


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One kind of event source: its settings dataclass, how to build it, how it is selected."""

    name: str
    config: type  # settings dataclass; make_source's keywords are its init fields
    build: Callable[[Any], EventSource]  # config instance -> source
    suffixes: tuple[str, ...] = ()  # lower-case file suffixes selecting it; () : by name
    path_field: str | None = None  # config field the path goes to (file sources only)
    doc: str = ""

    def __post_init__(self) -> None:
        if bool(self.suffixes) != (self.path_field is not None):
            raise ValueError(
                f"{self.name}: a file source needs both suffixes and path_field, "
                f"got {self.suffixes!r} and {self.path_field!r}"
            )

    def options(self) -> set[str]:
        """The keyword settings make_source accepts for this kind."""
        names = {f.name for f in dataclasses.fields(self.config) if f.init}
        return names - {self.path_field}


SOURCE_REGISTRY: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind(
            "synthetic",
            SyntheticConfig,
            SyntheticAPTSource,
            doc="synthetic APT campaigns walking the kill chain over benign background traffic",
        ),
        SourceKind(
            "table",
            TableConfig,
            TabularSource,
            suffixes=PARQUET_EXTS + CSV_EXTS,
            path_field="path",
            doc="a labelled Parquet or CSV event table",
        ),
    )
}
# Reads a path no kind claims by its suffix (and says what is wrong with it).
_DEFAULT_FILE_KIND = "table"


def source_kind(source: str | os.PathLike) -> SourceKind:
    """The registered kind that builds `source`: by name, else by file suffix."""
    text = str(source)
    kind = SOURCE_REGISTRY.get(text)
    if kind is not None and kind.path_field is None:
        return kind
    suffix = Path(text).suffix.lower()
    for kind in SOURCE_REGISTRY.values():
        if suffix in kind.suffixes:
            return kind
    return SOURCE_REGISTRY[_DEFAULT_FILE_KIND]


def _expected_sources() -> str:
    """What `source` may be, for error messages: "'synthetic' or a table path"."""
    kinds = SOURCE_REGISTRY.values()
    named = [repr(k.name) for k in kinds if k.path_field is None]
    files = [f"a {k.name} path" for k in kinds if k.path_field is not None]
    return " or ".join(named + files)


def make_source(source: str | os.PathLike = "synthetic", **kwargs: Any) -> EventSource:
    """``"synthetic"`` -> SyntheticAPTSource(SyntheticConfig(**kwargs)); a path -> TabularSource."""
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise ValueError(f"source: expected {_expected_sources()}, got {source!r}")
    kind = source_kind(source)
    check_options("make_source", kwargs, kind.options())
    if kind.path_field is not None:
        kwargs = {kind.path_field: source, **kwargs}
    return kind.build(kind.config(**kwargs))
