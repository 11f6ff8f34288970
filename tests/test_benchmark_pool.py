"""benchmarks/pool.py: pooled means, standard errors and paired gaps over several runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

POOL = Path(__file__).resolve().parent.parent / "benchmarks" / "pool.py"


@pytest.fixture(scope="module")
def pool():
    spec = importlib.util.spec_from_file_location("pool", POOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(pool, monkeypatch, capsys, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["pool.py", *argv])
    pool.main()
    return capsys.readouterr().out


def _report(tmp_path: Path, name: str, runs: dict[str, list[list[float]]]) -> str:
    rows = {v: [[{"eval_f1": f} for f in curve] for curve in seeds] for v, seeds in runs.items()}
    path = tmp_path / name
    path.write_text(json.dumps({"benchmark": "value_learning", "runs": rows}))
    return str(path)


def test_value_learning_runs_pool_per_training(pool, tmp_path, monkeypatch, capsys) -> None:
    a = _report(tmp_path, "a.json", {"ours": [[0.9] * 10, [1.0] * 10], "stock": [[0.8] * 10]})
    b = _report(tmp_path, "b.json", {"ours": [[0.8] * 10], "stock": [[0.6] * 10, [0.7] * 10]})
    out = _run(pool, monkeypatch, capsys, a, b, "--variants", "ours", "stock")
    lines = out.splitlines()
    ours_at_10 = lines[lines.index("ours") + 5]  # mean, @1, @3, @5, then @10
    assert "F1 @10" in ours_at_10 and "0.9000 +- 0.0577 (n=3)" in ours_at_10
    assert "F1 @20" not in out  # no run has iteration 20
    gap = next(line for line in lines if line.strip().startswith("F1 @10") and "paired" in line)
    # pooled 0.9 - 0.7; paired over (a, seed 0) and (b, seed 0): 0.1 and 0.2
    assert "+0.2000" in gap and "0.1500 +- 0.0500 (n=2)" in gap


def test_mixed_or_unknown_inputs_are_errors(pool, tmp_path, monkeypatch, capsys) -> None:
    a = _report(tmp_path, "a.json", {"ours": [[0.9] * 10]})
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "robustness"}))
    for argv in ([a, str(other)], [a, "--variants", "nope"], [a, str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as exc:
            _run(pool, monkeypatch, capsys, *argv)
        assert exc.value.code == 2
    assert "results" in capsys.readouterr().err
