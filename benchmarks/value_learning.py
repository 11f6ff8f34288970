"""Value learning: MonteCarloPPOTorchLearner against stock RLlib PPO on the default scenario.

Same seeds, same env-step budget, same model and PPO settings; only the learner differs:
- ``mc``: this project's learner (raw MC targets, vf_clip_param=inf, critic Adam 3e-4,
  least-squares value-head init);
- ``stock``: RLlib's ``PPOTorchLearner`` (GAE targets, default ``vf_clip_param`` 10).
Per iteration: value explained variance (masked, measured before the update on the
fresh batch, for both learners the same way), unclipped value loss, and greedy
evaluation F1 on held-out seeds. Writes ``benchmarks/results/value_learning.json``.

    python benchmarks/value_learning.py               # 3 seeds x 30 iterations
    python benchmarks/value_learning.py --quick       # 2 seeds x 10 iterations
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import convert_to_numpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.metrics import explained_variance  # noqa: E402
from marl_bft_rllib.rllib import add_evaluation, build_ppo_config, env_metric  # noqa: E402
from marl_bft_rllib.rllib.learner import (  # noqa: E402
    VALUE_EV_KEY,
    VALUE_LOSS_KEY,
    MonteCarloLearnerOptions,
)

RESULTS = Path(__file__).resolve().parent / "results" / "value_learning.json"


class StockValueStats(ConnectorV2):
    """Logs the stock learner's masked, pre-update value EV and loss (same keys as ours)."""

    def __call__(self, *, rl_module, batch, episodes, metrics=None, **kwargs):
        for mid, mb in batch.items():
            if Postprocessing.VALUE_TARGETS not in mb:
                continue
            mask = convert_to_numpy(mb[Columns.LOSS_MASK]).astype(bool)
            with torch.no_grad():
                v = convert_to_numpy(rl_module[mid].compute_values(mb))[mask]
            t = convert_to_numpy(mb[Postprocessing.VALUE_TARGETS])[mask]
            if metrics is not None:
                metrics.log_value((mid, VALUE_EV_KEY), explained_variance(t, v), window=1)
                metrics.log_value((mid, VALUE_LOSS_KEY), float(np.mean((v - t) ** 2)), window=1)
        return batch


class StockPPOWithStats(PPOTorchLearner):
    """Stock PPOTorchLearner (GAE) plus the measuring connector above; nothing else."""

    def build(self) -> None:
        """Build the stock learner and append the value-statistics connector piece."""
        super().build()
        self._learner_connector.append(StockValueStats())


def _parse(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def run(variant: str, seed: int, iters: int, batch: int, eval_episodes: int) -> list[dict]:
    """Train one (variant, seed) and return per-iteration figures."""
    training: dict[str, Any] = {"train_batch_size_per_learner": batch}
    if variant == "stock":
        training["vf_clip_param"] = 10.0  # RLlib's default
    config = build_ppo_config({"seed": seed}, **training).debugging(seed=seed)
    if variant == "stock":
        config = config.learners(learner_class=StockPPOWithStats)
    elif variant != "mc":  # "mc:key=value,key=value": this learner with other options
        opts = {k: _parse(v) for k, v in (kv.split("=") for kv in variant[3:].split(","))}
        config = config.learners(
            learner_config_dict=MonteCarloLearnerOptions(**opts).to_learner_config_dict()
        )
    config = add_evaluation(config, interval=1, duration=eval_episodes)
    algo = config.build_algo()
    rows = []
    try:
        for it in range(1, iters + 1):
            t0 = time.perf_counter()
            r = algo.train()
            m = r["learners"]["shared"]
            rows.append(
                {
                    "iteration": it,
                    "explained_var": float(m.get(VALUE_EV_KEY, math.nan)),
                    "value_loss_unclipped": float(m.get(VALUE_LOSS_KEY, math.nan)),
                    "eval_f1": env_metric(r, "pooled_f1", evaluation=True),
                    "train_return": float(r["env_runners"].get("episode_return_mean", math.nan)),
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(variant, seed, rows[-1], flush=True)
    finally:
        algo.stop()
    return rows


def summarise(runs: dict[str, list[list[dict]]], at: list[int]) -> dict[str, Any]:
    """Mean over seeds of EV, value loss and eval F1 at the given iterations."""
    out: dict[str, Any] = {}
    for variant, seeds in runs.items():
        out[variant] = {}
        for it in at:
            pts = [rows[it - 1] for rows in seeds if len(rows) >= it]
            out[variant][str(it)] = {
                k: float(np.nanmean([p[k] for p in pts]))
                for k in ("explained_var", "value_loss_unclipped", "eval_f1")
            }
    return out


def main() -> None:
    """Run every variant and seed, print the summary and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000, help="env steps per iteration")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument(
        "--variants", nargs="+", default=["mc", "stock"], help="mc, stock, or mc:opt=val,..."
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds x 10 iterations")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.iters, args.seeds = 10, 2
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[list[dict]]] = {}
    for variant in args.variants:
        runs[variant] = [
            run(variant, seed, args.iters, args.batch, args.eval_episodes)
            for seed in range(args.seeds)
        ]
    ray.shutdown()
    at = sorted({i for i in (1, 5, 10, 20, 30, args.iters) if i <= args.iters})
    summary = summarise(runs, at)
    report = {
        "benchmark": "value_learning",
        "command": " ".join(sys.argv),
        "iters": args.iters,
        "seeds": args.seeds,
        "env_steps_per_iter": args.batch,
        "machine": platform.platform(),
        "summary_mean_over_seeds": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for variant, pts in summary.items():
        for it, vals in pts.items():
            print(f"{variant:>8} it {it:>3}: " + " ".join(f"{k} {v:.3f}" for k, v in vals.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
