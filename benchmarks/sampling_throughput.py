"""RLlib sampling throughput against the raw env's rate (the limit), measured in one run.

For each ``num_envs_per_env_runner`` in ``--envs`` and each ``num_env_runners`` in
``--runners`` it builds the project's default config (``build_ppo_config()``: central
critic, its env-to-module state piece, the metrics callbacks), samples
``--steps`` env steps with RLlib's ``synchronous_parallel_sample`` (what PPO's
``training_step`` calls) after one warm-up call, and times
one full ``train()`` iteration (2,000 env steps). The limit is the raw
``BFTSecurityEnv`` stepped with random actions in this process. It prints env-steps/s
and the ratio to the raw env, and writes ``benchmarks/results/sampling_throughput.json``.

    python benchmarks/sampling_throughput.py
    python benchmarks/sampling_throughput.py --envs 1 4 --runners 0 --steps 4000
    python benchmarks/sampling_throughput.py --profile 4   # where sampling time goes

``--profile K`` instead profiles one sampling call of ``--steps`` env steps with K envs
in this process (cProfile) and prints its own-time per owner: this project's env and
its RLlib pieces (connector, callbacks), RLlib's episode bookkeeping, metrics and
connectors, torch, numpy and the rest (mostly builtins RLlib calls). It writes
``benchmarks/results/sampling_profile.json``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import platform
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.env import BFTSecurityEnv  # noqa: E402
from marl_bft_rllib.rllib import build_ppo_config  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sampling_throughput.json"
PROFILE = RESULTS.with_name("sampling_profile.json")


def owner(file: str, function: str) -> str:
    """Who a profiled function belongs to: ours (by module), RLlib (by subpackage), ..."""
    if "marl_bft_rllib" in file:
        rest = file.split("marl_bft_rllib/")[-1]
        return "ours: RLlib pieces (" + rest + ")" if rest.startswith("rllib/") else "ours: env"
    if "/rllib/" in file:
        return "rllib: " + file.split("/rllib/")[-1].split("/")[0]
    if "torch" in file or "torch" in function:
        return "torch"
    if "numpy" in file or "numpy" in function:
        return "numpy"
    return "other (builtins, tree, gymnasium, ...)"


def profile_sampling(envs: int, steps: int) -> dict[str, float]:
    """Own time per owner (fraction of the total) of one local sampling call."""
    algo = build_ppo_config().env_runners(num_envs_per_env_runner=envs).build_algo()
    runner = algo.env_runner
    runner.sample(num_timesteps=steps // 2)  # warm-up
    prof = cProfile.Profile()
    prof.enable()
    runner.sample(num_timesteps=steps)
    prof.disable()
    algo.stop()
    groups: collections.Counter = collections.Counter()
    for (file, _, function), (_, _, own, _, _) in pstats.Stats(prof).stats.items():
        groups[owner(file, function)] += own
    total = sum(groups.values())
    return {name: t / total for name, t in groups.most_common()}


def raw_env_rate(steps: int, seed: int = 0) -> float:
    """Env steps per second of the bare env with random votes (no RLlib)."""
    env = BFTSecurityEnv({"seed": seed})
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        if not env.agents:
            env.reset()
        env.step({a: int(rng.integers(4)) for a in env.agents})
    return steps / (time.perf_counter() - start)


def rllib_rates(envs: int, runners: int, steps: int) -> dict[str, float]:
    """Sampling env-steps/s and seconds per train() of the default config."""
    config = build_ppo_config({"seed": 0}).env_runners(
        num_env_runners=runners, num_envs_per_env_runner=envs
    )
    algo = config.build_algo()
    try:

        def sample(n: int) -> list:
            return synchronous_parallel_sample(
                worker_set=algo.env_runner_group,
                max_env_steps=n,
                concat=False,
                _uses_new_env_runners=True,
            )

        sample(min(steps, 500))  # warm-up: first forward passes
        start = time.perf_counter()
        episodes = sample(steps)
        seconds = time.perf_counter() - start
        flat = [e for group in episodes for e in (group if isinstance(group, list) else [group])]
        sampled = sum(e.env_steps() for e in flat)
        start = time.perf_counter()
        algo.train()
        train_s = time.perf_counter() - start
    finally:
        algo.stop()
    return {"env_steps_per_s": sampled / seconds, "train_seconds": train_s}


def main() -> None:
    """Measure every (envs, runners) cell next to the raw env and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--runners", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=8000, help="env steps sampled per cell")
    parser.add_argument("--out", type=Path, default=None, help="default: results/<name>.json")
    parser.add_argument("--profile", type=int, default=None, metavar="ENVS")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if args.profile is not None:
        shares = profile_sampling(args.profile, args.steps)
        ray.shutdown()
        for name, share in shares.items():
            print(f"{name:<52} {share:6.1%}")
        ours = sum(v for k, v in shares.items() if k.startswith("ours"))
        print(f"ours in total: {ours:.1%}; RLlib, torch and the rest: {1 - ours:.1%}")
        out = args.out or PROFILE
        out.write_text(
            json.dumps(
                {
                    "benchmark": "sampling_profile",
                    "command": "python benchmarks/sampling_throughput.py " + " ".join(sys.argv[1:]),
                    "machine": platform.platform(),
                    "own_time_share": shares,
                },
                indent=1,
            )
        )
        print(f"wrote {out}")
        return
    raw = raw_env_rate(args.steps)
    cells = []
    for runners in args.runners:
        for envs in args.envs:
            rates = rllib_rates(envs, runners, args.steps)
            cells.append({"num_env_runners": runners, "num_envs_per_env_runner": envs, **rates})
            cells[-1]["ratio_to_raw"] = rates["env_steps_per_s"] / raw
            print(
                f"runners {runners} envs {envs:>2}: {rates['env_steps_per_s']:7.0f} env-steps/s "
                f"({cells[-1]['ratio_to_raw']:.0%} of raw {raw:.0f}), "
                f"train() {rates['train_seconds']:.2f} s",
                flush=True,
            )
    ray.shutdown()
    report = {
        "benchmark": "sampling_throughput",
        "command": "python benchmarks/sampling_throughput.py " + " ".join(sys.argv[1:]),
        "machine": platform.platform(),
        "raw_env_steps_per_s": raw,
        "cells": cells,
    }
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
