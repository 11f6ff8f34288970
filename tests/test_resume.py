"""--resume after a SIGINT: no iteration redone twice, parseable progress, carried F1 never NaN,
and the experiment continues with the flags it started with."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "experiments" / "train_tune.py"
STOP_ITERS = 8


def _cmd(storage: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(TRAIN), "--smoke", "--stop-iters", str(STOP_ITERS),
        "--eval-interval", "2", "--storage-path", str(storage), "--name", "resumed", *extra,
    ]  # fmt: skip


def _trial_dir(exp: Path) -> Path | None:
    dirs = [p for p in exp.glob("PPO_*") if p.is_dir()]
    return dirs[0] if dirs else None


def _rows(exp: Path) -> int:
    trial = _trial_dir(exp)
    if trial is None or not (trial / "result.json").is_file():
        return 0
    return len((trial / "result.json").read_text().splitlines())


def test_sigint_then_resume_continues_from_the_last_iteration(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    exp = tmp_path / "resumed"
    proc = subprocess.Popen(
        _cmd(tmp_path), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 240
    while _rows(exp) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    interrupted_at = _rows(exp)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=180)
    assert interrupted_at < STOP_ITERS

    resume = [sys.executable, str(TRAIN), "--resume", "--storage-path", str(tmp_path)]
    done = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())  # the started run's flags, not
    assert summary["env_config"]["horizon"] == 150  # today's defaults (--smoke's horizon)

    trial = _trial_dir(exp)
    results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    iterations = [r["training_iteration"] for r in results]
    assert iterations == list(range(1, STOP_ITERS + 1)), iterations  # none twice, none lost
    progress = pd.read_csv(trial / "progress.csv")  # one header across the resume
    assert progress["training_iteration"].tolist() == iterations
    carried = [r["eval_f1_last"] for r in results if r["training_iteration"] >= 2]
    assert all(not math.isnan(f) for f in carried), carried  # restored trials re-evaluate


class _Trial:
    """What Tune's file loggers use of a trial."""

    def __init__(self, path: Path) -> None:
        self.local_path = str(path)
        self.trial_id = "t0"
        self.config: dict = {}
        self.checkpoint = None  # nothing to fetch from remote storage

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def test_a_redone_iteration_replaces_its_logged_rows(tmp_path):
    """Logged before an interruption, checkpointed after it: iteration 3 runs again."""
    from marl_bft_rllib.tune import ResumableCSVLoggerCallback, ResumableJsonLoggerCallback

    trial = _Trial(tmp_path)
    first = [ResumableCSVLoggerCallback(), ResumableJsonLoggerCallback()]
    for it in (1, 2, 3):
        for cb in first:
            cb.log_trial_result(it, trial, {"training_iteration": it, "x": it})
    for cb in first:
        cb.log_trial_end(trial)
    resumed = [ResumableCSVLoggerCallback(), ResumableJsonLoggerCallback()]  # new process
    # A restored trial's logger first fetches its files from storage (Tune's
    # _restore_from_remote): here the same rows, written again, so a drop done before
    # the fetch would be undone by it.
    stored = {name: (tmp_path / name).read_text() for name in ("result.json", "progress.csv")}
    for cb in resumed:
        cb._restore_from_remote = lambda name, _trial: (tmp_path / name).write_text(stored[name])
    for it in (3, 4):
        for cb in resumed:
            cb.log_trial_result(it, trial, {"training_iteration": it, "x": 10 * it})
    for cb in resumed:
        cb.log_trial_end(trial)
    rows = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    assert [(r["training_iteration"], r["x"]) for r in rows] == [(1, 1), (2, 2), (3, 30), (4, 40)]
    progress = pd.read_csv(tmp_path / "progress.csv")
    assert progress["training_iteration"].tolist() == [1, 2, 3, 4]
    assert progress["x"].tolist() == [1, 2, 30, 40]
