"""MonteCarloValueTargets against RLlib's GeneralAdvantageEstimation on the same batch.

Both pieces get the same multi-module train batch (phantom step per episode chunk, as
after ``AddOneTsToEpisodesAndTruncate``) and the same RLModules; each does its value
forward pass, its recursion and writes its columns. Prints the time ratio
(ours / GAE, target <= 1.0) and writes ``benchmarks/results/connector_speed.json``.

    python benchmarks/connector_speed.py [--modules 4] [--steps 5000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.rllib.connector import (  # noqa: E402
    MonteCarloValueTargets,
    targets_and_advantages,
)

if TYPE_CHECKING:
    from ray.rllib.connectors.connector_v2 import ConnectorV2
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModule

    Batch = dict[str, dict[str, torch.Tensor]]

RESULTS = Path(__file__).resolve().parent / "results" / "connector_speed.json"
OBS_DIM = 32


def make_inputs(
    n_modules: int, steps: int, horizon: int, seed: int = 0
) -> tuple[MultiRLModule, Batch, list[SingleAgentEpisode]]:
    """Modules, a batch of ``steps`` real steps per module in chunks, and matching episodes."""
    rng = np.random.default_rng(seed)
    obs_space = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
    act_space = gym.spaces.Discrete(4)
    spec = MultiRLModuleSpec(
        rl_module_specs={
            f"m{i}": RLModuleSpec(
                module_class=DefaultPPOTorchRLModule,
                observation_space=obs_space,
                action_space=act_space,
                model_config={"fcnet_hiddens": [128, 128], "vf_share_layers": False},
            )
            for i in range(n_modules)
        }
    )
    module = spec.build()
    batch, episodes = {}, []
    for i in range(n_modules):
        mid = f"m{i}"
        lengths = []
        left = steps
        while left > 0:  # full episodes, then a cut chunk at the end
            n = min(int(rng.integers(horizon // 4, horizon + 1)), left)
            lengths.append(n)
            left -= n
        rows = steps + len(lengths)
        mask = np.ones(rows, bool)
        ends = np.cumsum(np.array(lengths) + 1) - 1
        mask[ends] = False
        term = np.zeros(rows, bool)
        trunc = np.zeros(rows, bool)
        done = rng.random(len(lengths)) < 0.5
        term[ends[done] - 1] = True
        trunc[ends[~done] - 1] = True
        rewards = np.where(mask, rng.normal(-5.0, 10.0, rows), 0.0).astype(np.float32)
        batch[mid] = {
            Columns.OBS: torch.from_numpy(rng.normal(size=(rows, OBS_DIM)).astype(np.float32)),
            Columns.REWARDS: torch.from_numpy(rewards),
            Columns.LOSS_MASK: torch.from_numpy(mask),
            Columns.TERMINATEDS: torch.from_numpy(term),
            Columns.TRUNCATEDS: torch.from_numpy(trunc),
        }
        for n in lengths:  # episodes as GAE sees them: phantom step included
            episodes.append(
                SingleAgentEpisode(
                    observations=[np.zeros(OBS_DIM, np.float32)] * (n + 2),
                    actions=[0] * (n + 1),
                    rewards=[0.0] * (n + 1),
                    len_lookback_buffer=0,
                    module_id=mid,
                )
            )
    return module, batch, episodes


def time_piece(
    piece: ConnectorV2,
    module: MultiRLModule,
    batch: Batch,
    episodes: list[SingleAgentEpisode],
    repeats: int,
) -> float:
    """Median seconds per call."""
    times = []
    for _ in range(repeats):
        b = {mid: dict(cols) for mid, cols in batch.items()}
        t0 = time.perf_counter()
        piece(rl_module=module, batch=b, episodes=episodes, shared_data={})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    """Time both connector pieces and both recursions, print and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5000, help="real steps per module")
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    module, batch, episodes = make_inputs(args.modules, args.steps, args.horizon)
    gae = GeneralAdvantageEstimation(gamma=0.99, lambda_=0.95)
    ours = MonteCarloValueTargets(gamma=0.99, lambda_=0.95)
    for piece in (gae, ours):  # warm-up
        time_piece(piece, module, batch, episodes, 2)
    # Interleave to share any drift in machine load.
    t_gae, t_ours = [], []
    for _ in range(3):
        t_gae.append(time_piece(gae, module, batch, episodes, args.repeats))
        t_ours.append(time_piece(ours, module, batch, episodes, args.repeats))
    t_gae_s, t_ours_s = float(np.median(t_gae)), float(np.median(t_ours))
    # The recursion alone, without the value forward passes both pieces share.
    cols = {}
    with torch.no_grad():
        for m, b in batch.items():
            cols[m] = {k: v.numpy() for k, v in b.items() if k != Columns.OBS}
            cols[m]["values"] = module[m].compute_values(b).numpy().astype(np.float64)

    def rllib_recursion() -> None:
        """RLlib's GAE value-target recursion on every module's columns."""
        for c in cols.values():
            compute_value_targets(
                values=c["values"],
                rewards=c[Columns.REWARDS],
                terminateds=c[Columns.TERMINATEDS].astype(np.float32),
                truncateds=c[Columns.TRUNCATEDS].astype(np.float32),
                gamma=0.99,
                lambda_=0.95,
            )

    def our_recursion() -> None:
        """Our value-target and advantage recursion on every module's columns."""
        for c in cols.values():
            targets_and_advantages(
                c[Columns.REWARDS].astype(np.float64),
                c["values"],
                c[Columns.TERMINATEDS],
                c[Columns.TRUNCATEDS],
                c[Columns.LOSS_MASK],
                gamma=0.99,
                lambda_=0.95,
            )

    rec = {}
    for name, fn in (("rllib", rllib_recursion), ("ours", our_recursion)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rec[name] = float(np.median(times))
    report = {
        "benchmark": "connector_speed",
        "command": " ".join(sys.argv),
        "modules": args.modules,
        "steps_per_module": args.steps,
        "total_rows": int(sum(len(b[Columns.REWARDS]) for b in batch.values())),
        "episodes": len(episodes),
        "torch_threads": args.threads,
        "gae_seconds": t_gae_s,
        "ours_seconds": t_ours_s,
        "ratio_ours_over_gae": t_ours_s / t_gae_s,
        "recursion_only_rllib_seconds": rec["rllib"],
        "recursion_only_ours_seconds": rec["ours"],
        "recursion_only_ratio": rec["ours"] / rec["rllib"],
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(
        f"GAE {t_gae_s * 1e3:.2f} ms, MonteCarloValueTargets {t_ours_s * 1e3:.2f} ms on "
        f"{report['total_rows']} rows / {args.modules} modules: "
        f"ratio {report['ratio_ours_over_gae']:.3f}"
    )
    print(
        f"recursion only (no value forward pass): RLlib {rec['rllib'] * 1e3:.2f} ms, "
        f"ours {rec['ours'] * 1e3:.2f} ms: ratio {report['recursion_only_ratio']:.3f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
