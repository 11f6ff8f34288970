"""Tabular event source: episodes are windows of consecutive rows of a labelled event table.

The table (Parquet or CSV, chosen by extension) is read with pyarrow in batches of
``batch_rows`` rows; only a compact float32 feature matrix, the labels, host ids, the
row score and the time column survive the read, never a whole pyarrow Table or a
pandas frame. Rows are put in time order (stable sort on the time column, else file
order), cut into windows of ``episode_length`` consecutive rows (a trailing partial
window is dropped), and the windows are split into train / val / test by the
time-blocked stratified rule of ``split_windows``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from marl_bft_rllib.events.base import Event, Outcome, campaign_state_dim
from marl_bft_rllib.events.context import CONTEXT_NAMES, ContextConfig, HostContextTracker
from marl_bft_rllib.validation import check_bool, check_choice, check_int, check_number, check_str

SPLITS: tuple[str, ...] = ("train", "val", "test")
PARQUET_EXTS = (".parquet", ".pq")
CSV_EXTS = (".csv",)
_GOING = Outcome(contained=False, breached=False, exhausted=False)
_END = Outcome(contained=False, breached=False, exhausted=True)
PROBE_BYTES = 1 << 16  # a CSV's column types are inferred from its first 64 KiB


@dataclass(frozen=True)
class TableConfig:
    """Where the table is and how to read, window and split it."""

    path: str | os.PathLike
    label_column: str = "label"
    feature_columns: tuple[str, ...] | None = None  # None: every numeric non-label/host/time column
    host_column: str | None = None  # None: every row is on host 0
    time_column: str | None = None  # None: file order is time order
    episode_length: int = 200
    split: str = "train"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    batch_rows: int = 65536
    n_blocks: int = 20  # contiguous time blocks of windows the split assigns whole
    standardize: bool = True  # z-score features with the train split's mean / std
    score_column: str | None = None  # feature the host context averages; None: row outlyingness
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        """Validate every field; the first bad one raises a ValueError naming it."""
        set_ = object.__setattr__
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise ValueError(f"path: expected a file path, got {self.path!r}")
        check_str("label_column", self.label_column)
        for name in ("host_column", "time_column", "score_column"):
            check_str(name, getattr(self, name), none_ok=True)
        if self.feature_columns is not None:
            cols = self.feature_columns
            if isinstance(cols, (str, Mapping)) or not isinstance(cols, Iterable):
                raise ValueError(
                    f"feature_columns: expected a sequence of column names or None, got {cols!r}"
                )
            cols = tuple(cols)
            for i, c in enumerate(cols):
                check_str(f"feature_columns[{i}]", c)
            if not cols:
                raise ValueError("feature_columns: must name at least one column, got ()")
            if len(set(cols)) != len(cols):
                raise ValueError(f"feature_columns: duplicate names, got {cols!r}")
            special = {self.label_column, self.host_column, self.time_column} & set(cols)
            if special:
                raise ValueError(
                    f"feature_columns: must not include {sorted(special)}, got {cols!r}"
                )
            set_(self, "feature_columns", cols)
        for name in ("episode_length", "batch_rows", "n_blocks"):
            set_(self, name, check_int(name, getattr(self, name), lo=1))
        set_(self, "split", check_choice("split", self.split, SPLITS))
        fr = self.split_fractions
        if isinstance(fr, (str, Mapping)) or not isinstance(fr, Iterable):
            raise ValueError(f"split_fractions: expected three numbers, got {fr!r}")
        fr = tuple(fr)
        if len(fr) != 3:
            raise ValueError(f"split_fractions: expected three numbers, got {fr!r}")
        fr = tuple(check_number(f"split_fractions[{i}]", x, lo=0.0) for i, x in enumerate(fr))
        if sum(fr) <= 0:
            raise ValueError(f"split_fractions: expected a positive sum, got {fr!r}")
        set_(self, "split_fractions", tuple(x / sum(fr) for x in fr))
        set_(self, "standardize", check_bool("standardize", self.standardize))
        set_(self, "context", ContextConfig.coerce(self.context, "context"))


def split_windows(
    positive: np.ndarray, fractions: tuple[float, float, float], n_blocks: int
) -> np.ndarray:
    """Assign windows to splits (0 train, 1 val, 2 test) in whole contiguous time blocks.

    The windows are cut into ``min(n_blocks, n_windows)`` contiguous blocks of (near)
    equal size. Blocks are then handed out greedily, those with most positive windows
    first (ties: earlier block first), each to the split furthest below its target
    share, measured relative to its target: (target - got) / target of the positive
    windows plus the same of all windows. So every split holds whole blocks of
    consecutive windows and about its fraction of both windows and positive windows.
    """
    positive = np.asarray(positive, dtype=bool)
    n = positive.size
    nb = max(1, min(int(n_blocks), n))
    edges = (np.arange(nb + 1) * n) // nb
    pos_b = np.add.reduceat(positive.astype(np.int64), edges[:-1]) if n else np.zeros(0)
    size_b = np.diff(edges)
    frac = np.asarray(fractions, dtype=np.float64)
    total_pos = max(int(positive.sum()), 1)
    got_pos = np.zeros(3)
    got_win = np.zeros(3)
    assign_b = np.zeros(nb, np.int64)
    for b in sorted(range(nb), key=lambda i: (-int(pos_b[i]), i)):
        with np.errstate(divide="ignore", invalid="ignore"):
            deficit = (frac - got_pos / total_pos) / frac + (frac - got_win / n) / frac
        deficit[frac == 0] = -np.inf
        s = int(np.argmax(deficit))
        assign_b[b] = s
        got_pos[s] += pos_b[b]
        got_win[s] += size_b[b]
    return np.repeat(assign_b, size_b)


def _is_numeric(t: pa.DataType) -> bool:
    """Integer, floating, boolean or decimal (all-null columns count: they fail as NaN)."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_null(t)
    )


def _is_time(t: pa.DataType) -> bool:
    """Numeric or a timestamp / date / duration type."""
    return (
        _is_numeric(t) or pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t)
    )


def _as_float(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric pyarrow column as float64 numpy (nulls become NaN)."""
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


class TabularEpisode:
    """One window of consecutive rows; never breaches, exhausted at the window end."""

    __slots__ = (
        "_feat",
        "_ctx",
        "_label",
        "_host",
        "_camp",
        "_n",
        "_t",
        "_event",
        "window",
        "_no_campaign",
    )

    def __init__(
        self,
        feat: np.ndarray,
        ctx: np.ndarray,
        label: np.ndarray,
        host: np.ndarray,
        window: int,
        n_hosts: int = 1,
    ) -> None:
        self._feat = feat
        self._ctx = ctx
        self._label = label.tolist()
        self._host = host.tolist()
        self._camp = [0 if y else -1 for y in self._label]  # campaign unknown: 0 for malicious
        self._n = len(self._label)
        self.window = window
        self._t = 0
        self._event = self._build(0)
        self._no_campaign = np.zeros(campaign_state_dim(n_hosts), np.float32)

    def campaign_state(self) -> np.ndarray:
        """Zeros: a labelled table carries no campaign state."""
        return self._no_campaign

    def _build(self, t: int) -> Event:
        """Wrap row t of the window as an Event."""
        return Event(self._feat[t], self._ctx[t], self._label[t], self._host[t], self._camp[t], -1)

    def current(self) -> Event:
        """The event awaiting a decision."""
        if self._event is None:
            raise RuntimeError("episode is over: no current event")
        return self._event

    def respond(self, decision: int) -> Outcome:
        """Record the decision (tables do not react) and advance one row."""
        if self._event is None:
            raise RuntimeError("episode is over: respond() after the window end")
        if not 0 <= decision <= 3:
            raise ValueError(f"decision: expected an action in 0..3, got {decision!r}")
        t = self._t + 1
        self._t = t
        if t >= self._n:
            self._event = None
            return _END
        self._event = self._build(t)
        return _GOING

    @property
    def t(self) -> int:
        """Index of the current row within the window."""
        return self._t


class TabularSource:
    """Event source (``EventSource``) over a labelled Parquet or CSV table."""

    context_names: tuple[str, ...] = CONTEXT_NAMES

    def __init__(self, config: TableConfig) -> None:
        if not isinstance(config, TableConfig):
            raise ValueError(f"config: expected a TableConfig, got {config!r}")
        self.config = config
        path = Path(config.path)
        if not path.is_file():
            raise ValueError(f"path: no such file {str(path)!r}")
        ext = path.suffix.lower()
        if ext not in PARQUET_EXTS + CSV_EXTS:
            raise ValueError(f"path: unsupported extension {ext!r}; expected .parquet, .pq or .csv")
        self.path = path
        self.n_batches_read = 0
        self._read(path, ext in PARQUET_EXTS)
        self._prepare()

    # -- reading ---------------------------------------------------------------------
    def _columns(self, schema: pa.Schema) -> None:
        """Resolve and type-check the label, feature, host, time and score columns."""
        cfg = self.config
        names = schema.names
        if cfg.label_column not in names:
            raise ValueError(f"label_column: column {cfg.label_column!r} not in the table {names}")
        if not _is_numeric(schema.field(cfg.label_column).type):
            raise ValueError(
                f"label_column: column {cfg.label_column!r} must be binary 0/1, "
                f"got type {schema.field(cfg.label_column).type}"
            )
        for name in ("host_column", "time_column"):
            col = getattr(cfg, name)
            if col is not None and col not in names:
                raise ValueError(f"{name}: column {col!r} not in the table {names}")
        if cfg.time_column is not None and not _is_time(schema.field(cfg.time_column).type):
            raise ValueError(
                f"time_column: column {cfg.time_column!r} must be numeric or a timestamp, "
                f"got type {schema.field(cfg.time_column).type}"
            )
        special = {cfg.label_column, cfg.host_column, cfg.time_column}
        if cfg.feature_columns is None:
            feats = tuple(
                n for n in names if n not in special and _is_numeric(schema.field(n).type)
            )
            if not feats:
                raise ValueError("feature_columns: the table has no numeric feature column")
        else:
            feats = cfg.feature_columns
            for c in feats:
                if c not in names:
                    raise ValueError(f"feature_columns: column {c!r} not in the table {names}")
                if not _is_numeric(schema.field(c).type):
                    raise ValueError(
                        f"feature_columns: column {c!r} is not numeric "
                        f"(type {schema.field(c).type})"
                    )
        if cfg.score_column is not None and cfg.score_column not in feats:
            raise ValueError(
                f"score_column: {cfg.score_column!r} is not one of the feature columns"
            )
        self.feature_names = tuple(feats)

    def _csv_batches(self, path: Path):
        """Yield record batches of the CSV, about ``batch_rows`` rows each, with fixed types."""
        try:
            probe = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=PROBE_BYTES))
        except pa.ArrowInvalid as e:
            if "empty" in str(e).lower():
                raise ValueError(f"path: {str(path)!r} is an empty file") from None
            raise ValueError(f"path: cannot read {str(path)!r} as CSV: {e}") from None
        schema = probe.schema
        probe.close()
        self._columns(schema)
        cfg = self.config
        types: dict[str, pa.DataType] = {c: pa.float64() for c in self.feature_names}
        types[cfg.label_column] = pa.float64()
        if cfg.host_column is not None:
            types[cfg.host_column] = pa.string()
        if cfg.time_column is not None:
            t = schema.field(cfg.time_column).type
            types[cfg.time_column] = pa.float64() if _is_numeric(t) else t
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        row_bytes = max(1.0, len(head) / max(head.count(b"\n"), 1))
        block = max(1024, int(cfg.batch_rows * row_bytes))
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=list(types), strings_can_be_null=True
            ),
        )
        cols = list(types)
        try:
            yield from reader
        except pa.ArrowInvalid as e:
            m = re.search(r"column #(\d+)", str(e))
            col = schema.names[int(m.group(1))] if m else "?"
            field_name = "label_column" if col == cfg.label_column else "feature_columns"
            if col not in cols:
                field_name = "path"
            raise ValueError(f"{field_name}: column {col!r} has a non-numeric value: {e}") from None

    def _parquet_batches(self, path: Path):
        """Yield record batches of the Parquet file, ``batch_rows`` rows each."""
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            if path.stat().st_size == 0:
                raise ValueError(f"path: {str(path)!r} is an empty file") from None
            raise ValueError(f"path: cannot read {str(path)!r} as Parquet: {e}") from None
        self._columns(pf.schema_arrow)
        cfg = self.config
        cols = list(self.feature_names) + [cfg.label_column]
        cols += [c for c in (cfg.host_column, cfg.time_column) if c is not None]
        yield from pf.iter_batches(batch_size=cfg.batch_rows, columns=cols)

    def _read(self, path: Path, parquet: bool) -> None:
        """Stream the table into compact numpy arrays, checking every value."""
        cfg = self.config
        batches = self._parquet_batches(path) if parquet else self._csv_batches(path)
        feats: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        hosts: list[np.ndarray] = []
        times: list[np.ndarray] = []
        host_ids: dict[object, int] = {}
        row0 = 0
        for batch in batches:
            self.n_batches_read += 1
            n = batch.num_rows
            if n == 0:
                continue
            f = np.empty((n, len(self.feature_names)), np.float32)
            for j, name in enumerate(self.feature_names):
                col = _as_float(batch.column(name))
                bad = np.flatnonzero(~np.isfinite(col))
                if bad.size:
                    raise ValueError(
                        f"feature_columns: column {name!r} has NaN / missing / infinite value "
                        f"at row {row0 + int(bad[0])}"
                    )
                f[:, j] = col
            y = _as_float(batch.column(cfg.label_column))
            bad = np.flatnonzero(np.isnan(y))
            if bad.size:
                raise ValueError(
                    f"label_column: column {cfg.label_column!r} has NaN / missing value "
                    f"at row {row0 + int(bad[0])}"
                )
            bad = np.flatnonzero((y != 0.0) & (y != 1.0))
            if bad.size:
                raise ValueError(
                    f"label_column: column {cfg.label_column!r} must be binary 0/1, "
                    f"got {y[bad[0]]!r} at row {row0 + int(bad[0])}"
                )
            feats.append(f)
            labels.append(y.astype(np.int8))
            if cfg.host_column is not None:
                hosts.append(self._host_ids(batch.column(cfg.host_column), host_ids, row0))
            if cfg.time_column is not None:
                times.append(self._times(batch.column(cfg.time_column), row0))
            row0 += n
        if row0 == 0:
            raise ValueError(f"path: {str(path)!r} is an empty table (no rows)")
        if row0 < cfg.episode_length:
            raise ValueError(
                f"episode_length: the table has {row0} rows, fewer than one episode "
                f"({cfg.episode_length})"
            )
        self.features = np.concatenate(feats) if len(feats) > 1 else feats[0]
        self.labels = np.concatenate(labels)
        self.hosts = np.concatenate(hosts).astype(np.int32) if hosts else np.zeros(row0, np.int32)
        self.host_names = tuple(host_ids) if host_ids else (None,)
        self.n_hosts = max(1, len(host_ids))
        if times:
            order = np.argsort(np.concatenate(times), kind="stable")
            self.features = self.features[order]
            self.labels = self.labels[order]
            self.hosts = self.hosts[order]
            self.row_order = order
        else:
            self.row_order = np.arange(row0)

    def _host_ids(self, arr: pa.Array, ids: dict[object, int], row0: int) -> np.ndarray:
        """Map a batch's host values to dense integer ids shared across batches."""
        if arr.null_count:
            bad = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise ValueError(
                f"host_column: column {self.config.host_column!r} is missing at row {row0 + bad}"
            )
        enc = pc.dictionary_encode(arr)
        local = np.array(
            [ids.setdefault(v, len(ids)) for v in enc.dictionary.to_pylist()], np.int32
        )
        return local[np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)]

    def _times(self, arr: pa.Array, row0: int) -> np.ndarray:
        """A batch's time column as numpy (float64 or int64), rejecting missing values."""
        if arr.null_count:
            bad = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise ValueError(
                f"time_column: column {self.config.time_column!r} is missing at row {row0 + bad}"
            )
        if _is_numeric(arr.type):
            t = _as_float(arr)
            if np.isnan(t).any():
                bad = int(np.flatnonzero(np.isnan(t))[0])
                raise ValueError(
                    f"time_column: column {self.config.time_column!r} is NaN at row {row0 + bad}"
                )
            return t
        return np.asarray(pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False), np.int64)

    # -- windows, split, scaling -----------------------------------------------------
    def _prepare(self) -> None:
        """Cut windows, split them, standardise features and compute the row score."""
        cfg = self.config
        L = cfg.episode_length
        n_win = self.labels.size // L
        lab = self.labels[: n_win * L].reshape(n_win, L)
        self.window_positive = lab.any(axis=1)
        self.window_split = split_windows(self.window_positive, cfg.split_fractions, cfg.n_blocks)
        split_id = SPLITS.index(cfg.split)
        self.windows = np.flatnonzero(self.window_split == split_id)
        if self.windows.size == 0:
            raise ValueError(
                f"split: no windows in split {cfg.split!r} ({n_win} windows of {L} rows in all); "
                f"add rows, shorten episode_length or change split_fractions"
            )
        train = np.flatnonzero(self.window_split == 0)
        rows = (train[:, None] * L + np.arange(L)).ravel() if train.size else np.arange(n_win * L)
        x = self.features
        if cfg.standardize:
            mu = x[rows].mean(axis=0, dtype=np.float64)
            sd = x[rows].std(axis=0, dtype=np.float64)
            sd[sd <= 0] = 1.0
            x -= mu.astype(np.float32)
            x /= sd.astype(np.float32)
        if cfg.score_column is not None:
            raw = x[:, self.feature_names.index(cfg.score_column)].astype(np.float64)
        else:
            raw = np.abs(x).mean(axis=1, dtype=np.float64)
        m, s = raw[rows].mean(), raw[rows].std()
        self.scores = ((raw - m) / (s if s > 0 else 1.0)).astype(np.float32)
        self._tracker = HostContextTracker(self.n_hosts, cfg.context)

    def episode(self, rng: np.random.Generator, horizon: int) -> TabularEpisode:
        """A window of the configured split picked by ``rng``; at most ``horizon`` rows of it."""
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon: must be a positive integer, got {horizon!r}")
        w = int(self.windows[rng.integers(self.windows.size)])
        L = self.config.episode_length
        lo, hi = w * L, w * L + min(L, int(horizon))
        ctx = self._tracker.run(self.hosts[lo:hi], np.arange(hi - lo), self.scores[lo:hi])
        return TabularEpisode(
            self.features[lo:hi], ctx, self.labels[lo:hi], self.hosts[lo:hi], w, self.n_hosts
        )
