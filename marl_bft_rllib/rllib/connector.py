"""Learner ConnectorV2 writing raw Monte Carlo value targets and standardised advantages.

It takes the place of RLlib's ``GeneralAdvantageEstimation`` at the end of the learner
connector pipeline (see ``MonteCarloPPOTorchLearner.build``). Like that piece it
expects ``AddOneTsToEpisodesAndTruncate`` at the start of the pipeline: every episode
chunk of a module's batch ends in one phantom row (``Columns.LOSS_MASK`` False) whose
value prediction is the bootstrap ``V(s_T)``.

Per module and per real step it writes
- ``Postprocessing.VALUE_TARGETS``: the raw discounted return, bootstrapped with
  ``V(s_T)`` only where the chunk was truncated or cut, zero after termination; never
  normalised or rescaled;
- ``Postprocessing.ADVANTAGES``: GAE(lambda) (default) or return minus value,
  standardised over the real steps of the whole train batch (all modules together),
  or per module; optionally less a fitted counterfactual baseline computed from the
  batch's ``counterfactual_rewards`` column (see ``rllib/counterfactual.py``).
Phantom rows get target ``V(s_T)`` and advantage 0 (they are masked out of the loss).
Rows flagged in an ``inert`` column (``rllib/inert.py``: a convicted attacker's void
actions) keep their value targets but get advantage 0, and are left out of the
baseline fits and the standardisation.

Termination vs truncation: a chunk is bootstrapped when its last real step carries
``Columns.TRUNCATEDS``, even if ``Columns.TERMINATEDS`` is set too. RLlib 2.60's
``MultiAgentEpisode`` marks every agent as terminated when all agents are done, so a
horizon truncation arrives with both flags set (RLlib's own GAE then drops the
bootstrap); only "terminated and not truncated" means a true terminal state here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

from marl_bft_rllib.metrics import value_moments, value_stats_from_moments
from marl_bft_rllib.rllib.counterfactual import (
    COUNTERFACTUAL_ADVANTAGES,
    COUNTERFACTUAL_REWARDS,
    counterfactual_baseline,
    immediate_terms,
)
from marl_bft_rllib.rllib.inert import INERT
from marl_bft_rllib.rllib.returns import gae_advantages, monte_carlo_returns
from marl_bft_rllib.validation import check_choice, check_number

ADVANTAGE_ESTIMATORS = ("gae", "mc")
STANDARDIZE_MODES = ("batch", "module")
# Which values the advantages use (the value targets always bootstrap with the critic):
# "critic": V itself; "fitted": beta * (V - mean(V)), beta in [0, 1] the value that
# minimises the advantages' variance on this fresh batch (variance_optimal_coef), so a
# critic that does not generalise falls back to no baseline, and V's level, which only
# acts at terminations, is left out (see MonteCarloLearnerOptions); "zero": V = 0 ("no
# critic", an ablation).
VALUE_BASELINES = ("critic", "fitted", "zero")
# The counterfactual baseline (counterfactual.py) in the advantages: "off", "step" (each
# step's own), "trace" (every step's within the advantage's window), "all_actions" ("step",
# and the sampled immediate term replaced by its expectation over actions, in the loss);
# see _fit_counterfactual and _expected_immediate_term.
COUNTERFACTUAL_MODES = ("off", "step", "trace", "all_actions")

# (module_id, module, module_batch, value_targets_all_rows, loss_mask) -> re-initialised?
# module_batch is None for a module with no rows in this learner's shard (it joins the
# cross-learner reductions with no rows).
ValueHeadInitFn = Callable[[str, Any, dict, np.ndarray, np.ndarray], bool]
# (module_id, stats) -> None; stats holds the pre-update value figures of the batch.
StatsFn = Callable[[str, dict], None]
# (module_id, module_batch, value_targets_all_rows, loss_mask) -> None; sees each module
# batch's final raw targets (for example to keep them for critic replay); module_batch is
# None for a module with no rows in this learner's shard.
TargetsFn = Callable[[str, dict | None, np.ndarray, np.ndarray], None]


def _chunk_layout(
    mask: np.ndarray, terminateds: np.ndarray, truncateds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Phantom-row indices and per-chunk "true terminal" flags of a module batch."""
    ends = np.flatnonzero(~mask)
    if mask.size and (ends.size == 0 or ends[-1] != mask.size - 1):
        raise ValueError(
            "loss mask: the batch does not end in a phantom step; "
            "AddOneTsToEpisodesAndTruncate must run first in the learner pipeline"
        )
    lengths = np.diff(ends, prepend=-1) - 1
    # A chunk ended in a terminal state if its last real step is terminated and not
    # truncated; empty chunks never are.
    terminated = np.zeros(ends.shape[0], dtype=bool)
    last = ends[lengths > 0] - 1
    terminated[lengths > 0] = terminateds[last] & ~truncateds[last]
    return ends, terminated


def targets_and_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    terminateds: np.ndarray,
    truncateds: np.ndarray,
    mask: np.ndarray,
    *,
    gamma: float,
    lambda_: float,
    estimator: str = "gae",
    baseline: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw MC value targets and unstandardised advantages over a module batch (all rows).

    The targets bootstrap with ``values``; the advantages use ``baseline`` (all rows,
    default ``values``) in place of V, bootstrap included.
    """
    ends, terminated = _chunk_layout(mask, terminateds, truncateds)
    lengths = np.diff(ends, prepend=-1) - 1
    bootstrap = np.where(terminated, 0.0, values[ends])
    r = rewards[mask]
    returns = monte_carlo_returns(r, lengths, bootstrap, gamma)
    base = values if baseline is None else baseline
    base_bootstrap = np.where(terminated, 0.0, base[ends])
    v = base[mask]
    if estimator == "gae":
        adv = gae_advantages(r, v, lengths, base_bootstrap, gamma, lambda_)
    else:
        adv = monte_carlo_returns(r, lengths, base_bootstrap, gamma) - v
    targets = np.empty(mask.shape[0], dtype=np.float32)
    targets[mask] = returns
    targets[ends] = bootstrap
    advantages = np.zeros(mask.shape[0], dtype=np.float32)
    advantages[mask] = adv
    return targets, advantages


def allreduce_sum(rows: Any) -> np.ndarray:
    """Element-wise sum over all learners (torch.distributed), as float64; identity alone."""
    x = np.asarray(rows, dtype=np.float64)
    if not (dist.is_available() and dist.is_initialized()):
        return x
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if (dist.get_backend() == "nccl")
        else torch.device("cpu")
    )
    t = torch.as_tensor(x, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def variance_optimal_coef_from_moments(
    n: float, sum_a: float, sum_d: float, sum_ad: float, sum_dd: float
) -> float:
    """``variance_optimal_coef`` from the sums n, sum(a), sum(d), sum(a * d), sum(d * d)."""
    if n < 2:
        return 0.0
    var = sum_dd / n - (sum_d / n) ** 2
    if var <= 1e-12 * max(sum_dd / n, 1e-300):
        return 0.0
    cov = sum_ad / n - (sum_a / n) * (sum_d / n)
    return float(np.clip(-cov / var, 0.0, 1.0))


def variance_optimal_coef(adv_constant: np.ndarray, adv_critic: np.ndarray) -> float:
    """beta in [0, 1] minimising Var(A_0 + beta * (A_v - A_0)) over real steps.

    Advantages are linear in the baseline, so with the baseline beta * (V - mean(V))
    they are A_0 + beta * (A_v - A_0), where A_0 uses no baseline and A_v uses V - mean(V).
    A critic that does not reduce the advantages' variance on this fresh batch gets
    beta = 0: no baseline beyond the standardisation.
    """
    a = np.asarray(adv_constant, dtype=np.float64)
    d = np.asarray(adv_critic, dtype=np.float64) - a
    return variance_optimal_coef_from_moments(
        a.size, a.sum(), d.sum(), (a * d).sum(), (d * d).sum()
    )


def value_stats(targets: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Value loss, explained variance and target / prediction moments over real steps."""
    return value_stats_from_moments(value_moments(targets, values))


class MonteCarloValueTargets(ConnectorV2):
    """Writes raw Monte Carlo value targets and standardised advantages into the batch."""

    def __init__(
        self,
        input_observation_space=None,
        input_action_space=None,
        *,
        gamma: float,
        lambda_: float,
        lambda_per_module: dict[str, float] | None = None,
        advantage_estimator: str = "gae",
        standardize_advantages: str = "batch",
        value_baseline: str = "critic",
        counterfactual_baseline: str = "off",
        value_head_init_fn: ValueHeadInitFn | None = None,
        stats_fn: StatsFn | None = None,
        targets_fn: TargetsFn | None = None,
        **kwargs,
    ) -> None:
        """Set the discount, GAE lambda (overridable per module), estimator, scope, baselines."""
        super().__init__(input_observation_space, input_action_space, **kwargs)
        check_number("gamma", gamma, lo=0.0, hi=1.0)
        check_number("lambda_", lambda_, lo=0.0, hi=1.0)
        self.lambda_per_module = {
            mid: check_number(f"lambda_ of module {mid!r}", lam, lo=0.0, hi=1.0)
            for mid, lam in (lambda_per_module or {}).items()
        }
        check_choice("advantage_estimator", advantage_estimator, ADVANTAGE_ESTIMATORS)
        check_choice("standardize_advantages", standardize_advantages, STANDARDIZE_MODES)
        check_choice("value_baseline", value_baseline, VALUE_BASELINES)
        check_choice("counterfactual_baseline", counterfactual_baseline, COUNTERFACTUAL_MODES)
        self.value_baseline = value_baseline
        self.counterfactual_baseline = counterfactual_baseline
        self.gamma = float(gamma)
        self.lambda_ = float(lambda_)
        self.advantage_estimator = advantage_estimator
        self.standardize_advantages = standardize_advantages
        self.value_head_init_fn = value_head_init_fn
        self.stats_fn = stats_fn
        self.targets_fn = targets_fn

    @staticmethod
    def _values(module: Any, module_batch: dict) -> np.ndarray:
        with torch.no_grad():  # unwrapped: a DDP wrapper has no compute_values
            values = module.unwrapped().compute_values(module_batch)
        return convert_to_numpy(values).astype(np.float64)

    def _module_pass(self, mid: str, module: Any, module_batch: dict) -> dict[str, Any]:
        """Targets, candidate advantages and honest value figures of one module's batch."""
        if module.is_stateful():
            raise ValueError(
                f"module {mid!r}: stateful (recurrent) modules are not supported by "
                "MonteCarloValueTargets; use a feed-forward model"
            )
        mask = convert_to_numpy(module_batch[Columns.LOSS_MASK]).astype(bool)
        chunks = functools.partial(  # (rewards, values, baseline=...) over this batch's chunks
            targets_and_advantages,
            terminateds=convert_to_numpy(module_batch[Columns.TERMINATEDS]).astype(bool),
            truncateds=convert_to_numpy(module_batch[Columns.TRUNCATEDS]).astype(bool),
            mask=mask,
            gamma=self.gamma,
            lambda_=self.lambda_per_module.get(mid, self.lambda_),
            estimator=self.advantage_estimator,
        )
        compute = functools.partial(
            chunks, convert_to_numpy(module_batch[Columns.REWARDS]).astype(np.float64)
        )
        values = fresh = self._values(module, module_batch)
        targets, adv = compute(values)
        # Honest figures: measured on the fresh batch, before any update (their sums here;
        # summed over learners and turned into figures in __call__).
        stats: dict[str, Any] = {"moments": value_moments(targets[mask], values[mask])}
        if self.value_head_init_fn is not None and self.value_head_init_fn(
            mid, module, module_batch, targets, mask
        ):
            # The head changed: recompute bootstraps and advantages with it.
            values = self._values(module, module_batch)
            targets, adv = compute(values)
            stats["value_head_initialised"] = 1.0
        if self.value_baseline == "zero":
            _, adv = compute(values, baseline=np.zeros_like(values))
            stats["baseline_coef"] = 0.0
        if self.targets_fn is not None:
            self.targets_fn(mid, module_batch, targets, mask)
        # rows whose advantage reaches the policy loss: real steps whose action was not void
        acting = mask.copy()
        if INERT in module_batch:
            acting &= ~convert_to_numpy(module_batch[INERT]).astype(bool)
            stats["inert_fraction"] = float((mask & ~acting).sum() / max(mask.sum(), 1))
        part = {"mask": mask, "acting": acting, "chunks": chunks, "compute": compute,
                "values": values, "fresh": fresh, "targets": targets, "adv": adv,
                "stats": stats}  # fmt: skip
        if self.counterfactual_baseline != "off":
            if COUNTERFACTUAL_REWARDS not in module_batch:
                raise ValueError(
                    f"module {mid!r}: no {COUNTERFACTUAL_REWARDS!r} column; "
                    "counterfactual_baseline needs the central critic's module and its "
                    "env-to-module pieces (build_ppo_config(critic='central')), or set "
                    "counterfactual_baseline='off'"
                )
            part["cf_rewards"] = convert_to_numpy(module_batch[COUNTERFACTUAL_REWARDS])
            part["logits"] = convert_to_numpy(module_batch[Columns.ACTION_DIST_INPUTS])
            part["cf"] = counterfactual_baseline(part["logits"], part["cf_rewards"])
            part["actions"] = convert_to_numpy(module_batch[Columns.ACTIONS]).astype(np.int64)
        return part

    @staticmethod
    def _fit_shift(
        order: list[str],
        parts: dict[str, dict[str, Any]],
        signal: Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]],
        shift: Callable[[dict[str, Any], float], tuple[np.ndarray, np.ndarray]],
        stat: str,
    ) -> None:
        """Per module, advantages = base + beta * delta with beta variance-optimal (all learners).

        ``signal(part)`` gives (values, rows) whose mean over every learner's rows is
        taken; ``shift(part, mean)`` gives (base advantages, delta) from it. beta is
        logged as ``stats[stat]``. Every learner makes the same reductions in the same
        order (zeros for a module absent from its shard).
        """
        centres = []
        for mid in order:
            if (p := parts.get(mid)) is None:
                centres.append([0.0, 0.0])
                continue
            values, rows = signal(p)
            centres.append([values[rows].sum(), rows.sum()])
        sums = allreduce_sum(centres)
        moments, shifts = [], {}
        for k, mid in enumerate(order):
            if (p := parts.get(mid)) is None:
                moments.append(np.zeros(5))
                continue
            base, delta = shifts[mid] = shift(p, sums[k, 0] / max(sums[k, 1], 1.0))
            a, d = base[p["acting"]], delta[p["acting"]]
            moments.append(np.array([a.size, a.sum(), d.sum(), (a * d).sum(), (d * d).sum()]))
        moments = allreduce_sum(moments)
        for k, mid in enumerate(order):
            if mid in shifts:
                beta = variance_optimal_coef_from_moments(*moments[k])
                base, delta = shifts[mid]
                parts[mid]["adv"] = base + beta * delta
                parts[mid]["stats"][stat] = beta

    def _fit_baselines(self, order: list[str], parts: dict[str, dict[str, Any]]) -> None:
        """Replace each module's advantages by the variance-optimal blend (all learners)."""

        def shift(p: dict[str, Any], mean: float) -> tuple[np.ndarray, np.ndarray]:
            _, adv_0 = p["compute"](p["values"], baseline=np.zeros_like(p["fresh"]))
            _, adv_v = p["compute"](p["values"], baseline=p["fresh"] - mean)
            return adv_0, adv_v - adv_0

        # The critic's predictions before any change (a head just initialised on this
        # batch would be fitted in-sample), centred on their mean over every learner.
        self._fit_shift(order, parts, lambda p: (p["fresh"], p["mask"]), shift, "baseline_coef")

    def _fit_counterfactual(self, order: list[str], parts: dict[str, dict[str, Any]]) -> None:
        """Subtract beta * (b - mean(b)) from each module's advantages (all learners).

        b is the counterfactual baseline: the step's own ("step"), or every step's in
        the advantage's (gamma * lambda)-weighted window ("trace": the advantage of the
        rewards r - beta * (b - mean(b))). beta in [0, 1] minimises the variance of the
        result on this batch, as for the critic's blend. Rows without b add nothing.
        """
        for p in parts.values():
            p["cf_valid"] = p["mask"] & np.isfinite(p["cf"])

        def shift(p: dict[str, Any], mean: float) -> tuple[np.ndarray, np.ndarray]:
            delta = np.where(p["cf_valid"], mean - np.nan_to_num(p["cf"]), 0.0)
            if self.counterfactual_baseline == "trace":
                zeros = np.zeros_like(delta)
                _, delta = p["chunks"](delta, zeros, baseline=zeros)
            return p["adv"], delta

        self._fit_shift(
            order, parts, lambda p: (p["cf"], p["cf_valid"]), shift, "counterfactual_coef"
        )
        if self.counterfactual_baseline == "all_actions":
            for p in parts.values():
                self._expected_immediate_term(p)

    @staticmethod
    def _expected_immediate_term(p: dict[str, Any]) -> None:
        """Move the sampled r_cf(a_t) - b out of the advantages into per-action ones.

        The advantages lose r_cf(a_t) - b (what stays of this step's reward in them no
        longer depends on a_t); the column ``COUNTERFACTUAL_ADVANTAGES`` gets r_cf(a) - b
        for every action a, which the loss weighs by the policy's probabilities:
        sum_a pi(a | o) (r_cf(a) - b) has the same expected gradient as the sampled term,
        without its sampling noise (``immediate_terms``: also for an attacker's partial
        vectors). Both are standardised with the scale of the advantages before the move.
        """
        p["cf_actions"], taken = immediate_terms(
            p["logits"], p["cf_rewards"], p["actions"], p["mask"]
        )
        p["scale_adv"] = p["adv"]
        p["adv"] = p["adv"] - taken

    @override(ConnectorV2)
    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: Any, **kwargs) -> Any:
        """Add value targets and advantages for every module with a value function.

        With several learners (DDP) every statistic that shapes the advantages (the
        baseline fit and the standardisation) is summed over all learners' shards, so
        the result is that of the whole batch; every learner calls the same reductions
        in the same order (all value modules, sorted, zeros for one absent from a shard).
        """
        order = sorted(
            mid
            for mid in rl_module.keys()
            if isinstance(rl_module[mid].unwrapped(), ValueFunctionAPI)
        )
        parts = {}
        for mid in order:
            if mid in batch:
                parts[mid] = self._module_pass(mid, rl_module[mid], batch[mid])
                continue
            # No rows in this learner's shard: join the other learners' head fit anyway,
            # and keep the per-module bookkeeping aligned with theirs.
            empty = np.zeros(0, dtype=bool)
            if self.value_head_init_fn is not None:
                self.value_head_init_fn(mid, rl_module[mid], None, empty.astype(np.float32), empty)
            if self.targets_fn is not None:
                self.targets_fn(mid, None, empty.astype(np.float32), empty)
        if self.value_baseline == "fitted":
            self._fit_baselines(order, parts)
        if self.counterfactual_baseline != "off":
            self._fit_counterfactual(order, parts)
        value_sums = allreduce_sum(
            [p["stats"].pop("moments") if (p := parts.get(mid)) else np.zeros(7) for mid in order]
        )
        for k, mid in enumerate(order):
            if (p := parts.get(mid)) is not None:
                p["stats"].update(value_stats_from_moments(value_sums[k]))
                if self.stats_fn is not None:
                    self.stats_fn(mid, p["stats"])

        # Per module: rows, sum of the advantages, and the sum and squares of those that
        # set the scale (the same ones, except before the all-actions move).
        moments = np.zeros((len(order), 4))
        for k, mid in enumerate(order):
            if (p := parts.get(mid)) is not None:
                rows = p["acting"]
                a, scale = p["adv"][rows], p.get("scale_adv", p["adv"])[rows]
                moments[k] = [a.size, a.sum(), scale.sum(), np.square(scale).sum()]
        moments = allreduce_sum(moments)
        if self.standardize_advantages == "batch":
            moments[:] = moments.sum(axis=0)
        for k, mid in enumerate(order):
            if (p := parts.get(mid)) is None:
                continue
            n, total, scale_total, squares = moments[k]
            mean = total / n if n else 0.0
            std = math.sqrt(max(squares / n - (scale_total / n) ** 2, 0.0)) if n else 1.0
            std = max(std, 1e-4)
            acting = p["acting"]
            columns = {
                Postprocessing.VALUE_TARGETS: p["targets"],
                Postprocessing.ADVANTAGES: np.where(acting, (p["adv"] - mean) / std, 0.0),
            }
            if "cf_actions" in p:
                columns[COUNTERFACTUAL_ADVANTAGES] = np.where(
                    acting[:, None], p["cf_actions"] / std, 0.0
                )
            ref = batch[mid][Columns.REWARDS]
            for column, values in columns.items():
                values = values.astype(np.float32)
                if isinstance(ref, torch.Tensor):  # the default pipeline is tensors by now
                    values = convert_to_torch_tensor(values, device=ref.device)
                batch[mid][column] = values
        return batch
