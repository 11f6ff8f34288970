"""Env agent-steps per second against PettingZoo MPE simple_spread, measured side by side.

Usage: python benchmarks/env_throughput.py [--seconds 5] [--out benchmarks/results/env_throughput.json]

Both envs run on one core (CPU affinity pinned, BLAS threads 1) with uniformly random
actions drawn from the action spaces, resetting when an episode ends. The figure is
agent-steps per second: env steps times the number of acting agents.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pettingzoo import ParallelEnv  # noqa: E402

from marl_bft_rllib.env import BFTSecurityEnv  # noqa: E402


def agent_steps_per_second(env: ParallelEnv, seconds: float, seed: int = 0) -> dict[str, float]:
    """Step ``env`` with random actions for ``seconds``; return agent-steps/s and env-steps/s."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    agent_steps = env_steps = 0
    episode = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            agents = env.agents
            if not agents:
                episode += 1
                env.reset(seed=seed + episode)
                agents = env.agents
            actions = {a: int(rng.integers(env.action_space(a).n)) for a in agents}
            env.step(actions)
            agent_steps += len(actions)
            env_steps += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    return {
        "agent_steps_per_s": agent_steps / elapsed,
        "env_steps_per_s": env_steps / elapsed,
        "agents_per_step": agent_steps / env_steps,
    }


def main() -> None:
    """Measure both envs in one run and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "env_throughput.json"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from mpe2 import simple_spread_v3

    mpe = simple_spread_v3.parallel_env(N=3, max_cycles=25)
    results = {
        "mpe_simple_spread_n3": agent_steps_per_second(mpe, args.seconds),
        "marl_bft_n4": agent_steps_per_second(BFTSecurityEnv(), args.seconds),
        "marl_bft_n16": agent_steps_per_second(
            BFTSecurityEnv({"n_replicas": 16, "n_byzantine": 5}), args.seconds
        ),
    }
    peer = results["mpe_simple_spread_n3"]["agent_steps_per_s"]
    ratio4 = results["marl_bft_n4"]["agent_steps_per_s"] / peer
    ratio16 = results["marl_bft_n16"]["agent_steps_per_s"] / peer
    for name, r in results.items():
        print(
            f"{name:<22s} {r['agent_steps_per_s']:>10.0f} agent-steps/s "
            f"({r['env_steps_per_s']:.0f} env-steps/s, {r['agents_per_step']:.1f} agents/step)"
        )
    print(f"ratio n=4 vs MPE: {ratio4:.2f}x (target >= 2.0x)")
    print(f"ratio n=16 vs MPE: {ratio16:.2f}x")
    report = {
        "results": results,
        "ratio_n4_vs_mpe": ratio4,
        "ratio_n16_vs_mpe": ratio16,
        "target_ratio_n4": 2.0,
        "seconds_per_measurement": args.seconds,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
