"""STL robustness speed against rtamt 0.4.10 (offline, discrete time) on the same traces.

Prints traces/s of both, the speed ratio and the max absolute difference (must be 0,
inf entries included) for G, F, G(a -> F[0,10] b) and U[0,5] at T = 200 / 1000 and
batch 1 / 1024 (rtamt evaluates the batch trace by trace, on a sample of traces when
--rtamt-traces is smaller than the batch, timed per trace), then the online monitor's
cost per env step for 1024 agents. Writes benchmarks/results/stl_vs_rtamt.json.

    python benchmarks/stl_vs_rtamt.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marl_bft_rllib.stl import OnlineMonitor, parse, robustness  # noqa: E402

FORMULAS = {
    "G": ("G(a > 0)", "always(a > 0)"),
    "F": ("F(a > 0)", "eventually(a > 0)"),
    "G(a -> F[0,10] b)": (
        "G((a > 0) -> F[0,10](b > 0))",
        "always((not(a > 0)) or eventually[0,10](b > 0))",
    ),
    "U[0,5]": ("(a > 0) U[0,5] (b > 0)", "(a > 0) until[0,5] (b > 0)"),
}
ONLINE = "(a > 0) -> F[0,10](b > 0)"


def _timeit(fn, min_time: float) -> float:
    """Seconds per call (repeats until min_time has passed; best of 3 rounds)."""
    fn()
    n, best = 1, float("inf")
    for _ in range(3):
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            dt = time.perf_counter() - t0
            if dt >= min_time / 3:
                break
            n *= 2
        best = min(best, dt / n)
    return best


def _rtamt_spec(text: str):
    import rtamt

    spec = rtamt.StlDiscreteTimeOfflineSpecification()
    spec.declare_var("a", "float")
    spec.declare_var("b", "float")
    spec.spec = text
    spec.parse()
    return spec


def main() -> None:
    """Time ours against rtamt and the online monitor, print and write the results JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short timings (CI smoke run)")
    ap.add_argument("--rtamt-traces", type=int, default=None, help="rtamt traces per batch cell")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "stl_vs_rtamt.json"))
    args = ap.parse_args()
    min_time = 0.05 if args.quick else 1.0
    n_rt = args.rtamt_traces or (4 if args.quick else 32)
    rng = np.random.default_rng(0)
    rows = []
    for T in (200, 1000):
        for B in (1, 1024):
            a = np.round(rng.normal(size=(T, B)), 2)
            b = np.round(rng.normal(size=(T, B)), 2)
            sig = {"a": a[:, 0], "b": b[:, 0]} if B == 1 else {"a": a, "b": b}
            for name, (ours, theirs) in FORMULAS.items():
                f = parse(ours)
                spec = _rtamt_spec(theirs)
                ours_s = _timeit(lambda f=f, sig=sig: robustness(f, sig), min_time)
                out = robustness(f, sig).reshape(T, B)
                k = min(B, n_rt)
                idx = np.linspace(0, B - 1, k).astype(int)
                datasets = [
                    {"time": list(range(T)), "a": a[:, j].tolist(), "b": b[:, j].tolist()}
                    for j in idx
                ]
                t0 = time.perf_counter()
                refs = [np.array([v for _, v in spec.evaluate(ds)]) for ds in datasets]
                rt_per_trace = (time.perf_counter() - t0) / k
                diff = 0.0
                for j, ref in zip(idx, refs, strict=True):
                    got = out[:, j]
                    fin = np.isfinite(ref)
                    if not np.array_equal(got[~fin], ref[~fin]):
                        diff = float("inf")
                    diff = max(diff, float(np.max(np.abs(got[fin] - ref[fin]), initial=0.0)))
                ours_tps, rt_tps = B / ours_s, 1.0 / rt_per_trace
                row = {
                    "formula": name,
                    "T": T,
                    "batch": B,
                    "ours_traces_per_s": ours_tps,
                    "rtamt_traces_per_s": rt_tps,
                    "ratio": ours_tps / rt_tps,
                    "max_abs_diff": diff,
                    "rtamt_traces_checked": k,
                }
                rows.append(row)
                print(
                    f"T={T:5d} batch={B:5d} {name:18s} ours {ours_tps:12.0f} tr/s  "
                    f"rtamt {rt_tps:8.1f} tr/s  ratio {ours_tps / rt_tps:8.0f}x  "
                    f"max|diff| {diff}",
                    flush=True,
                )
    # online monitor: cost per env step for 1024 agents
    B, T = 1024, 200
    a = rng.random((T, B))
    b = rng.random((T, B))
    mon = OnlineMonitor(ONLINE, batch_shape=(B,))
    steps = [{"a": a[t], "b": b[t]} for t in range(T)]

    def episode() -> None:
        """Feed one whole episode to the online monitor and flush it."""
        for s in steps:
            mon.step(s)
        mon.flush()

    per_step = _timeit(episode, min_time * 2) / T
    outs = [mon.step(s) for s in steps] + [mon.flush()]
    online_exact = bool(np.array_equal(np.concatenate(outs), robustness(ONLINE, {"a": a, "b": b})))
    print(
        f"online monitor {ONLINE!r}, {B} agents: {per_step * 1e6:.1f} us per env step "
        f"(online + flush == offline: {online_exact})"
    )
    result = {
        "benchmark": "stl_vs_rtamt",
        "quick": args.quick,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "offline": rows,
        "online": {
            "formula": ONLINE,
            "agents": B,
            "us_per_step": per_step * 1e6,
            "online_plus_flush_equals_offline": online_exact,
        },
        "min_ratio_batch1": min(r["ratio"] for r in rows if r["batch"] == 1),
        "min_ratio_batch1024": min(r["ratio"] for r in rows if r["batch"] == 1024),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
    }
    print(
        f"min ratio batch 1: {result['min_ratio_batch1']:.0f}x, batch 1024: "
        f"{result['min_ratio_batch1024']:.0f}x, max|diff| {result['max_abs_diff']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
