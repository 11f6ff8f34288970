"""Pool the per-training figures of several runs of one benchmark: mean, standard error, n.

Run-to-run noise here is as large as the effects measured, so a claim rests on every
training made, not on one run. Each training counts once: a value_learning run gives one
F1 curve per (variant, seed), a robustness run one worst case per (set, seed). Seeds
repeated across runs count again (the runs are not bit-identical).

How to run
    python benchmarks/pool.py benchmarks/results/value_learning_6seeds_30it.json \
        benchmarks/results/value_learning_6seeds_rerun.json \
        benchmarks/results/value_learning_seeds_6_11.json --variants ours stock:lambda_=0.5
    python benchmarks/pool.py benchmarks/results/robustness.json \
        benchmarks/results/robustness_6seeds.json

Results to expect
    value_learning: per variant, the mean F1 over iterations 1-10 and F1 at iterations 1,
    3, 5, 10 (and 20, 30 where every run has them), then ``A - B`` for the first two
    variants: the difference of the pooled means, and the paired difference over the
    (run, seed) trainings that both have. robustness: each set's worst case.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

AT = (1, 3, 5, 10, 20, 30)


def mean_se(values: list[float]) -> str:
    """``mean +- standard error (n)`` of ``values``."""
    x = np.asarray(values, float)
    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():.4f} +- {se:.4f} (n={len(x)})"


def value_learning(reports: list[dict[str, Any]], variants: list[str]) -> None:
    """Print the pooled F1 figures of each variant and the gap between the first two."""
    figures: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    keyed: dict[str, dict[tuple[int, int], dict[str, float]]] = defaultdict(dict)
    for r, report in enumerate(reports):
        for variant in variants:
            for s, rows in enumerate(report["runs"].get(variant, [])):
                f1 = [row["eval_f1"] for row in rows]
                got = {"mean F1 1-10": float(np.mean(f1[:10]))}
                got |= {f"F1 @{i}": f1[i - 1] for i in AT if i <= len(f1)}
                keyed[variant][(r, s)] = got
                for name, value in got.items():
                    figures[variant][name].append(value)
    names = ["mean F1 1-10", *(f"F1 @{i}" for i in AT)]
    for variant in variants:
        print(variant)
        for name in names:
            if figures[variant][name]:
                print(f"  {name:<14} {mean_se(figures[variant][name])}")
    if len(variants) < 2:
        return
    a, b = variants[:2]
    both = sorted(set(keyed[a]) & set(keyed[b]))
    print(f"{a} - {b}: pooled means; paired over the {len(both)} (run, seed) both have")
    for name in names:
        if figures[a][name] and figures[b][name]:
            gap = np.mean(figures[a][name]) - np.mean(figures[b][name])
            paired = [keyed[a][k][name] - keyed[b][k][name] for k in both if name in keyed[a][k]]
            print(f"  {name:<14} {gap:+.4f}; paired {mean_se(paired) if paired else '-'}")


def robustness(reports: list[dict[str, Any]]) -> None:
    """Print each defender set's pooled worst case, with and without the insider."""
    for side in ("scripted", "selfplay"):
        for key in ("worst_f1_per_seed", "worst_f1_without_insider_per_seed"):
            values = [v for report in reports for v in report["summary"][side][key]]
            print(f"{side:<9} {key.removesuffix('_per_seed'):<26} {mean_se(values)}")


def main() -> None:
    """Read the results JSONs, check they come from one benchmark, print the pooled figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results JSONs of one benchmark")
    parser.add_argument("--variants", nargs="+", help="value_learning: the variants to pool")
    args = parser.parse_args()
    reports = []
    for path in args.results:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            parser.error(f"results: cannot read {path}: {e}")
    kinds = {report.get("benchmark") for report in reports}
    if len(kinds) != 1 or not kinds <= {"value_learning", "robustness"}:
        parser.error(f"results: expected runs of one of value_learning, robustness; got {kinds}")
    if kinds == {"value_learning"}:
        variants = args.variants or list(reports[0]["runs"])
        for variant in variants:
            if not any(variant in report["runs"] for report in reports):
                parser.error(f"--variants: {variant!r} is in none of the results")
        value_learning(reports, variants)
    else:
        robustness(reports)


if __name__ == "__main__":
    main()
