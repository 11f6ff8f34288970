"""Scale-out paths of train_tune.py: a real two-node Ray cluster, and two DDP learners.

The cluster is Ray's own multi-node test tool (``ray.cluster_utils.Cluster``): a head
node and a worker node on this machine, each with one CPU, so the two trials of the
search must run on different nodes. Token authentication is off for the cluster and its
client alike (``RAY_AUTH_MODE=disabled``), as the README's cluster section shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "experiments" / "train_tune.py"


def _train(
    *args: str, env: dict | None = None, timeout: float = 420
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def _summary(exp_dir: Path) -> dict:
    return json.loads((exp_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, one CPU each; shut down afterwards."""
    from ray.cluster_utils import Cluster

    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def test_two_trial_search_runs_on_a_two_node_cluster(cluster, tmp_path):
    proc = _train(
        "--address", cluster.address, "--smoke", "--num-samples", "2",
        "--storage-path", str(tmp_path), "--name", "two_nodes",
        env={"RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = _summary(tmp_path / "two_nodes")
    assert len(summary["trials"]) == 2
    assert all(t["error"] is None for t in summary["trials"]), summary["trials"]
    for trial in summary["trials"]:
        assert list(Path(trial["trial_dir"]).glob("checkpoint_*")), trial["trial_dir"]


def test_two_learners_train_end_to_end(tmp_path):
    # 1 trial process + 2 learner actors: more logical CPUs than this machine's cores.
    proc = _train(
        "--smoke", "--num-learners", "2", "--num-cpus", "4",
        "--storage-path", str(tmp_path), "--name", "ddp",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = _summary(tmp_path / "ddp")
    assert summary["trials"][0]["error"] is None
    assert summary["best_checkpoint"] is not None
