"""Detection, STL and BFT metrics: the one place they are computed.

Env infos, RLlib callbacks, benchmarks and ``experiments/evaluate.py`` all use
these functions, so a figure means the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

CONFUSION_KEYS = ("tp", "tn", "fp", "fn")
BFT_STAT_KEYS = (
    "views",
    "view_changes",
    "undecided",
    "messages",
    "convictions",
    "agreement_violations",
    "validity_violations",
)


def confusion_counts(labels: np.ndarray, detected: np.ndarray) -> dict[str, int]:
    """Count TP / TN / FP / FN of binary labels against binary detections."""
    y = np.asarray(labels).astype(bool)
    d = np.asarray(detected).astype(bool)
    if y.shape != d.shape:
        raise ValueError(f"labels shape {y.shape} != detections shape {d.shape}")
    return {
        "tp": int(np.count_nonzero(y & d)),
        "tn": int(np.count_nonzero(~y & ~d)),
        "fp": int(np.count_nonzero(~y & d)),
        "fn": int(np.count_nonzero(y & ~d)),
    }


def add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    """Sum two confusion-count dicts."""
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in CONFUSION_KEYS}


def detection_scores(counts: Mapping[str, int]) -> dict[str, float]:
    """Precision, recall, F1 and accuracy from confusion counts (0.0 where undefined).

    Counts may be totals or per-episode means over the same episodes (the ratios agree).
    """
    tp, tn, fp, fn = (float(counts.get(k, 0)) for k in CONFUSION_KEYS)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + tn + fp + fn
    accuracy = (tp + tn) / total if total else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy}


def detection_report(counts: Mapping[str, int]) -> dict[str, float]:
    """Confusion counts together with their precision, recall, F1 and accuracy."""
    out: dict[str, float] = {k: int(counts.get(k, 0)) for k in CONFUSION_KEYS}
    out.update(detection_scores(counts))
    return out


def stl_report(robustness: Mapping[str, float]) -> dict[str, float]:
    """Per-spec robustness and satisfied flag (robustness > 0 counts as satisfied)."""
    out: dict[str, float] = {}
    for name, rho in robustness.items():
        out[f"stl_{name}_robustness"] = float(rho)
        out[f"stl_{name}_satisfied"] = float(rho > 0.0)
    return out


def mean_reports(reports: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average numeric metrics over episodes (keys missing in some episodes average the rest)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for rep in reports:
        for k, v in rep.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def explained_variance(targets: np.ndarray, predictions: np.ndarray) -> float:
    """1 - Var(targets - predictions) / Var(targets); nan where the targets are constant."""
    y = np.asarray(targets, dtype=np.float64).ravel()
    p = np.asarray(predictions, dtype=np.float64).ravel()
    if y.size == 0:
        return float("nan")
    var = y.var()
    if var <= 0.0:
        return float("nan")
    return float(1.0 - (y - p).var() / var)


def value_moments(targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sums over real steps behind ``value_stats``: n, t, t^2, v, v^2, t - v, (t - v)^2."""
    t = np.asarray(targets, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    d = t - v
    return np.array([t.size, t.sum(), t @ t, v.sum(), v @ v, d.sum(), d @ d])


def value_stats_from_moments(moments: np.ndarray) -> dict[str, float]:
    """Value loss, explained variance and target / prediction moments from ``value_moments``.

    Sums add over shards, so with several learners the figures are those of the whole
    batch (``allreduce_sum`` of every learner's moments).
    """
    n, st, stt, sv, svv, sd, sdd = (float(x) for x in moments)
    nan = float("nan")
    if n <= 0:
        return dict.fromkeys(
            ("value_loss", "explained_var", "target_mean", "target_std", "pred_mean", "pred_std"),
            nan,
        ) | {"num_steps": 0.0}
    var_t = max(stt / n - (st / n) ** 2, 0.0)
    var_d = max(sdd / n - (sd / n) ** 2, 0.0)
    return {
        "value_loss": sdd / n,
        "explained_var": 1.0 - var_d / var_t if var_t > 1e-12 * max(stt / n, 1e-300) else nan,
        "target_mean": st / n,
        "target_std": math.sqrt(var_t),
        "pred_mean": sv / n,
        "pred_std": math.sqrt(max(svv / n - (sv / n) ** 2, 0.0)),
        "num_steps": n,
    }
