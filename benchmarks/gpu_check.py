"""GPU check: the learner on one or two GPU learners (DDP over nccl) against CPU.

Trains 3 iterations of the default config with 1 and with 2 learners on the GPU(s)
(``num_gpus_per_learner`` 1, or 0.5 each when the machine has one GPU), asserts that
the two learners hold identical parameters after every update, and prints the seconds
per ``train()`` iteration (after the first) against the same runs on CPU. Needs a GPU;
exits 2 with a message when there is none. Writes ``benchmarks/results/gpu_check.json``.
Not yet run: no GPU machine has been lent to this project's sessions so far.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.rllib import build_ppo_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_check.json"
ITERS = 3


def run(num_learners: int, gpus_per_learner: float) -> dict:
    """Train ITERS iterations; return seconds per iteration and the learners' max weight gap."""
    config = build_ppo_config({"seed": 0}).learners(
        num_learners=num_learners, num_gpus_per_learner=gpus_per_learner
    )
    algo = config.build_algo()
    seconds, gaps = [], []
    try:
        for _ in range(ITERS):
            start = time.perf_counter()
            algo.train()
            seconds.append(time.perf_counter() - start)
            if num_learners >= 2:
                calls = algo.learner_group.foreach_learner(
                    lambda learner: {
                        k: v.detach().cpu().numpy()
                        for k, v in learner.module["shared"].unwrapped().state_dict().items()
                    }
                )
                first, *others = [c.get() for c in calls]
                gaps.append(
                    max(float(np.abs(first[k] - o[k]).max()) for o in others for k in first)
                )
    finally:
        algo.stop()
    return {"seconds_per_iter": float(np.mean(seconds[1:])), "max_param_gap": gaps}


def main() -> int:
    """Run the GPU cells and the CPU reference, check the learners agree, write the JSON."""
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; run it where one is available")
        return 2
    n_gpus = torch.cuda.device_count()
    ray.init(include_dashboard=False, log_to_driver=False)
    cells = {
        "cpu_1_learner": run(0, 0.0),
        "gpu_1_learner": run(1, 1.0),
        "gpu_2_learners": run(2, 1.0 if n_gpus >= 2 else 0.5),
        "cpu_2_learners": run(2, 0.0),
    }
    ray.shutdown()
    for name, cell in cells.items():
        print(
            f"{name:>15}: {cell['seconds_per_iter']:.2f} s / iteration, gaps {cell['max_param_gap']}"
        )
        assert all(g == 0.0 for g in cell["max_param_gap"]), f"{name}: learners diverged"
    ratio = cells["gpu_1_learner"]["seconds_per_iter"] / cells["cpu_1_learner"]["seconds_per_iter"]
    print(f"GPU / CPU time per iteration (1 learner): {ratio:.2f}")
    report = {
        "benchmark": "gpu_check",
        "command": "python benchmarks/gpu_check.py",
        "machine": platform.platform(),
        "gpu": torch.cuda.get_device_name(0),
        "cells": cells,
        "gpu_over_cpu": ratio,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
