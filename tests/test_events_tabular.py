"""Tabular source: CSV and Parquet happy paths, time order, split rule, batching, bad tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from marl_bft_rllib.events import (
    CONTEXT_NAMES,
    TableConfig,
    TabularSource,
    make_source,
    split_windows,
)


def make_table(n=1200, seed=0, shuffle_time=True):
    """A small labelled event table with a host and a (shuffled) time column."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 10
    label = np.zeros(n, np.int64)
    for start in rng.choice(n - 30, 12, replace=False):  # bursty positives
        label[start : start + rng.integers(3, 12)] = 1
    cols = {
        "ts": t,
        "host": np.array([f"h{i}" for i in rng.integers(0, 5, n)]),
        "a": rng.standard_normal(n) + 2.0 * label,
        "b": rng.standard_normal(n) * 3.0 + 10.0,
        "c": rng.integers(0, 100, n),
        "label": label,
    }
    order = rng.permutation(n) if shuffle_time else np.arange(n)
    return pa.table({k: v[order] for k, v in cols.items()}), order


def write(table: pa.Table, path) -> str:
    """Write a table as CSV or Parquet by the path's extension."""
    if str(path).endswith(".csv"):
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


@pytest.fixture(params=["csv", "parquet"])
def table_path(request, tmp_path):
    table, order = make_table()
    return write(table, tmp_path / f"events.{request.param}"), table, order


def test_happy_path_both_formats(table_path):
    path, table, order = table_path
    src = TabularSource(TableConfig(path, host_column="host", time_column="ts", episode_length=50))
    assert src.feature_names == ("a", "b", "c")
    assert src.context_names == CONTEXT_NAMES
    assert src.n_hosts == 5
    # rows are in time order: features follow the sorted ts column
    ts_sorted = np.sort(np.asarray(table.column("ts")))
    np.testing.assert_array_equal(np.asarray(table.column("ts"))[src.row_order], ts_sorted)
    np.testing.assert_array_equal(src.labels, np.asarray(table.column("label"))[src.row_order])
    # standardised with the train split's statistics: roughly unit scale
    assert np.abs(src.features.mean(0)).max() < 0.3 and np.abs(src.features.std(0) - 1).max() < 0.3
    ep = src.episode(np.random.default_rng(0), 200)
    n, labels, outs = 0, [], []
    while True:
        ev = ep.current()
        assert ev.features.shape == (3,) and ev.features.dtype == np.float32
        assert ev.context.shape == (len(CONTEXT_NAMES),) and 0 <= ev.host < 5
        assert ev.stage == -1 and (ev.campaign >= 0) == (ev.label == 1)
        labels.append(ev.label)
        out = ep.respond(3)
        outs.append(out)
        n += 1
        if out.exhausted:
            break
    assert n == 50 and not any(o.breached or o.contained for o in outs)
    w = ep.window
    np.testing.assert_array_equal(labels, src.labels[w * 50 : w * 50 + 50])
    with pytest.raises(RuntimeError):
        ep.respond(0)


def test_csv_and_parquet_agree(tmp_path):
    table, _ = make_table()
    kw = dict(host_column="host", time_column="ts", episode_length=40)
    a = TabularSource(TableConfig(write(table, tmp_path / "t.csv"), **kw))
    b = TabularSource(TableConfig(write(table, tmp_path / "t.parquet"), **kw))
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.window_split, b.window_split)


def test_horizon_shorter_than_window_and_determinism(table_path):
    path, _, _ = table_path
    src = TabularSource(TableConfig(path, time_column="ts", episode_length=50))
    assert src.n_hosts == 1  # no host column: one host
    ep = src.episode(np.random.default_rng(3), 7)
    outs = [ep.respond(0) for _ in range(7)]
    assert outs[-1].exhausted and not any(o.exhausted for o in outs[:-1])
    w1 = src.episode(np.random.default_rng(5), 50).window
    assert w1 == src.episode(np.random.default_rng(5), 50).window
    picked = {src.episode(np.random.default_rng(s), 50).window for s in range(60)}
    assert picked <= set(src.windows.tolist()) and len(picked) > 1


def test_context_uses_host_history(tmp_path):
    table, _ = make_table(shuffle_time=False)
    path = write(table, tmp_path / "t.parquet")
    src = TabularSource(TableConfig(path, host_column="host", episode_length=100))
    ep = src.episode(np.random.default_rng(0), 100)
    seen = set()
    for _ in range(100):
        ev = ep.current()
        if ev.host not in seen:
            assert ev.context[0] == 0.0
        else:
            assert ev.context[0] > 0.0
        seen.add(ev.host)
        ep.respond(0)


def test_split_time_blocked_disjoint_stratified(tmp_path):
    table, _ = make_table(n=4000, seed=1)
    path = write(table, tmp_path / "t.parquet")
    kw = dict(time_column="ts", episode_length=20, n_blocks=20)
    srcs = {s: TabularSource(TableConfig(path, split=s, **kw)) for s in ("train", "val", "test")}
    wins = {s: set(src.windows.tolist()) for s, src in srcs.items()}
    assert not (
        wins["train"] & wins["val"] or wins["train"] & wins["test"] or wins["val"] & wins["test"]
    )
    assert len(wins["train"] | wins["val"] | wins["test"]) == 4000 // 20
    split = srcs["train"].window_split
    # time-blocked: the split only changes at block edges (200 windows / 20 blocks = 10 each)
    changes = np.flatnonzero(np.diff(split)) + 1
    assert np.all(changes % 10 == 0)
    pos = srcs["train"].window_positive
    for sid, frac in enumerate((0.7, 0.15, 0.15)):
        share_win = np.mean(split == sid)
        share_pos = pos[split == sid].sum() / pos.sum()
        assert abs(share_win - frac) <= 0.1 and abs(share_pos - frac) <= 0.12


def test_split_windows_rule_directly():
    pos = np.zeros(100, bool)
    pos[[3, 4, 5, 50, 51, 90, 91, 92, 93, 97]] = True  # clustered in time
    s = split_windows(pos, (0.7, 0.15, 0.15), 10)
    assert s.shape == (100,) and set(s.tolist()) == {0, 1, 2}
    for sid in (1, 2):
        assert pos[s == sid].sum() >= 1  # every split gets positives
    assert np.all(np.flatnonzero(np.diff(s)) % 10 == 9)  # whole blocks of 10


def test_batched_reading_matches_single_batch(table_path):
    path, _, _ = table_path
    kw = dict(host_column="host", time_column="ts", episode_length=50)
    small = TabularSource(TableConfig(path, batch_rows=64, **kw))
    big = TabularSource(TableConfig(path, **kw))
    assert small.n_batches_read > 5 and big.n_batches_read <= 2
    np.testing.assert_array_equal(small.features, big.features)
    np.testing.assert_array_equal(small.labels, big.labels)
    np.testing.assert_array_equal(small.hosts, big.hosts)


def test_make_source_builds_table_source(table_path):
    path, _, _ = table_path
    src = make_source(path, split="val", episode_length=50, time_column="ts")
    assert isinstance(src, TabularSource) and src.config.split == "val"
    with pytest.raises(ValueError, match="horizon_steps"):
        make_source(path, horizon_steps=5)


# -- bad tables ------------------------------------------------------------------------
def _table(**cols):
    return pa.table(cols)


@pytest.mark.parametrize("ext", ["csv", "parquet"])
@pytest.mark.parametrize(
    ("table", "kwargs", "match"),
    [
        (_table(a=[1.0] * 30, y=[0] * 30), {}, "label_column.*'label'"),
        (_table(a=["x"] * 30, label=[0] * 30), {"feature_columns": ("a",)}, "feature_columns.*'a'"),
        (
            _table(a=[1.0] * 10 + [None] + [1.0] * 19, label=[0] * 30),
            {},
            r"'a'.*row 10",
        ),
        (
            _table(a=[1.0] * 30, label=[0] * 20 + [None] + [0] * 9),
            {},
            r"label_column.*'label'.*row 20",
        ),
        (_table(a=[1.0] * 30, label=[0] * 29 + [2]), {}, r"label_column.*binary.*row 29"),
        (_table(a=[1.0] * 5, label=[0] * 5), {}, "episode_length.*5 rows"),
        (_table(a=pa.array([], pa.float64()), label=pa.array([], pa.int64())), {}, "empty"),
        (_table(a=[1.0] * 30, label=[0] * 30), {"feature_columns": ("zz",)}, "'zz'"),
        (_table(a=[1.0] * 30, label=[0] * 30), {"host_column": "hh"}, "host_column.*'hh'"),
    ],
)
def test_bad_tables(tmp_path, ext, table, kwargs, match):
    path = write(table, tmp_path / f"bad.{ext}")
    with pytest.raises(ValueError, match=match):
        TabularSource(TableConfig(path, episode_length=10, **kwargs))


def test_nan_float_in_parquet_is_rejected(tmp_path):
    a = np.ones(30)
    a[17] = np.nan
    path = write(_table(a=a, label=[0] * 30), tmp_path / "nan.parquet")
    with pytest.raises(ValueError, match=r"'a'.*row 17"):
        TabularSource(TableConfig(path, episode_length=10, batch_rows=8))


def test_non_numeric_value_late_in_csv_is_rejected(tmp_path):
    path = tmp_path / "late.csv"
    rows = ["a,label"] + [f"{i}.5,0" for i in range(20000)] + ["oops,0"]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match="'a'"):
        TabularSource(TableConfig(str(path), episode_length=10, batch_rows=100))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="path.*no such file"):
        TabularSource(TableConfig(str(tmp_path / "nope.csv")))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        TabularSource(TableConfig(str(empty)))
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,label\n")
    with pytest.raises(ValueError, match="empty"):
        TabularSource(TableConfig(str(header_only)))
    other = tmp_path / "x.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="extension"):
        TabularSource(TableConfig(str(other)))


def test_too_few_windows_for_the_split(tmp_path):
    path = write(_table(a=[1.0] * 20, label=[0] * 20), tmp_path / "small.parquet")
    with pytest.raises(ValueError, match="split"):
        TabularSource(TableConfig(path, episode_length=10, split="test"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"episode_length": 0}, "episode_length"),
        ({"batch_rows": -1}, "batch_rows"),
        ({"split": "dev"}, "split"),
        ({"split_fractions": (0.5, -0.1, 0.6)}, "split_fractions"),
        ({"feature_columns": ("label",)}, "feature_columns"),
        ({"host_column": ""}, "host_column"),
    ],
)
def test_table_config_errors(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TableConfig("x.csv", **kwargs)
