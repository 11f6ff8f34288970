"""How strong a fresh learned attacker gets under each setting of its own training options.

Per training seed: train defenders against the scripted attackers (the default env), then,
for each variant of ``attacker_training`` (the attacker module's per-module PPO options,
over ``ATTACKER_DEFAULTS``), train a fresh votes-only attacker against those frozen
defenders and play the defenders greedily on the same held-out episodes with no Byzantine
replica, with that attacker, and with the scripted label-aware ``insider`` in its seat.
The figure is the robustness gap: F1 with no Byzantine replica minus F1 against it.
Writes ``benchmarks/results/attacker_training.json``.

How to run:
    python benchmarks/attacker_training.py                # 2 seeds, 4 variants, ~8 min
    python benchmarks/attacker_training.py --seeds 1 --iters 2 --attack-iters 2 \\
        --variants '[{"lambda_": 0.5}]' --out /tmp/attacker.json

Results to expect: at the defenders' own lambda (0.5) and lr schedule the attacker's gap
is a small fraction of the insider's (0.007 against 0.040); at lambda 0 and lr 3e-3 (the
default) it comes close (0.034). The README quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from robustness import (  # noqa: E402
    add_training_flags,
    check_training_flags,
    greedy,
    train,
    training_seeds,
)

from marl_bft_rllib.bft import VOTE_STRATEGIES  # noqa: E402
from marl_bft_rllib.evaluation import (  # noqa: E402
    INSIDER_CASE,
    LEARNED_CASE,
    ThresholdDetector,
    held_out_seeds,
    robustness_report,
)
from marl_bft_rllib.rllib import build_ppo_config  # noqa: E402
from marl_bft_rllib.rllib.config import (  # noqa: E402
    ATTACKER_POLICY,
    SHARED_POLICY,
    TRAINING_DEFAULTS,
)

RESULTS = Path(__file__).resolve().parent / "results" / "attacker_training.json"
VARIANTS = [
    {"lambda_": TRAINING_DEFAULTS["lambda_"], "lr": TRAINING_DEFAULTS["lr"]},
    {"lambda_": 0.0, "lr": TRAINING_DEFAULTS["lr"]},
    {"lambda_": 0.0, "lr": 3e-3},
    {"lambda_": 0.0, "lr": 1e-2},
]
CASES = ["none", LEARNED_CASE, INSIDER_CASE]


def one_seed(seed: int, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """Scripted-trained defenders of one seed, then one fresh attacker per variant."""
    learned = {"seed": seed, "attacker_strategies": list(VOTE_STRATEGIES)}

    def config(adversary: str, **kwargs: Any) -> Any:
        env = learned if adversary == "learned" else {"seed": seed}
        return (
            build_ppo_config(
                env, adversary=adversary, train_batch_size_per_learner=args.batch, **kwargs
            )
            .env_runners(num_envs_per_env_runner=args.envs_per_runner)
            .debugging(seed=seed)
        )

    algo, _ = train(config("scripted"), args.iters)
    path = workdir / f"defenders_{seed}"
    algo.save_to_path(str(path))
    defenders = greedy(algo, SHARED_POLICY)
    algo.stop()
    seeds, threshold = held_out_seeds(args.episodes), ThresholdDetector.fit({}, range(20))
    rows = []
    for variant in args.variants:
        attack, secs = train(
            config("learned", policies_to_train=[ATTACKER_POLICY], attacker_training=variant),
            args.attack_iters,
            load_defenders=path,
        )
        report = robustness_report(
            defenders,
            {"adversary": "mixed", "attacker_strategies": list(VOTE_STRATEGIES)},
            seeds,
            threshold=threshold,
            attacker=greedy(attack, ATTACKER_POLICY),
            cases=CASES,
        )
        attack.stop()
        f1 = {case: report["cases"][case]["bft_policy"]["f1"] for case in CASES}
        rows.append({"seed": seed, "variant": variant, "f1": f1, "train_seconds": secs,
                     "gap": f1["none"] - f1[LEARNED_CASE],
                     "insider_gap": f1["none"] - f1[INSIDER_CASE]})  # fmt: skip
        print(f"seed {seed} {json.dumps(variant)}: gap {rows[-1]['gap']:+.4f} "
              f"(insider {rows[-1]['insider_gap']:+.4f})", flush=True)  # fmt: skip
    return rows


def main() -> None:
    """Run every seed and variant, write the JSON, print the mean gap per variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_flags(parser, seeds=2)
    parser.add_argument(
        "--variants", type=json.loads, default=VARIANTS, help="JSON list of attacker_training"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    check_training_flags(parser, args)
    if not isinstance(args.variants, list) or not args.variants:
        parser.error("--variants: expected a non-empty JSON list of attacker_training dicts")
    for variant in args.variants:  # a bad option fails here, before Ray starts
        try:
            build_ppo_config({"adversary": "learned"}, attacker_training=variant)
        except ValueError as err:
            parser.error(f"--variants: {err}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in training_seeds(args):
                rows += one_seed(seed, args, Path(tmp))
    finally:
        ray.shutdown()
    summary = []
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        summary.append({"variant": variant, "gap_per_seed": [r["gap"] for r in mine],
                        "gap": float(np.mean([r["gap"] for r in mine])),
                        "insider_gap": float(np.mean([r["insider_gap"] for r in mine]))})  # fmt: skip
    report = {
        "benchmark": "attacker_training",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": platform.platform(),
        "summary": summary,
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print("\nrobustness gap (F1 with no Byzantine replica minus F1 against it), mean over seeds")
    for s in summary:
        print(f"{json.dumps(s['variant']):<60} attacker {s['gap']:+.4f}  "
              f"insider {s['insider_gap']:+.4f}  per seed {np.round(s['gap_per_seed'], 4)}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
