"""PPO torch learner with raw Monte Carlo value targets that the critic can actually learn.

``MonteCarloPPOTorchLearner`` is RLlib's ``PPOTorchLearner`` with these changes, all at
documented extension points:
- ``build()``: ``GeneralAdvantageEstimation`` is removed from the learner connector
  pipeline and ``MonteCarloValueTargets`` appended in its place (raw return targets,
  GAE(lambda) or MC advantages standardised over the whole batch; lambda per module
  from RLlib's ``algorithm_config_overrides_per_module``, as the lr already is);
- ``configure_optimizers_for_module()``: a separate Adam for the critic (critic encoder
  and value head) with its own learning rate; ``postprocess_gradients_for_module()``
  clips each optimiser with its own threshold;
- a one-off, data-dependent initialisation of the value head's last layer from the
  first batch of returns, done only while the critic optimiser has taken no step (so a
  restored checkpoint is never re-initialised);
- a critic-only phase after each PPO update (``critic_replay_batches``)
  (``after_gradient_based_update()``) that re-fits the critic on the raw Monte Carlo
  targets of the last few train batches, as in PPG's auxiliary phase: more data for the
  critic alone, the policy untouched;
- ``compute_loss_for_module()``: PPO's loss, plus, with
  ``counterfactual_baseline="all_actions"`` (the default), the immediate
  counterfactual term's expectation over all actions, unclipped unless
  ``all_actions_clip`` (the connector writes its per-action advantages).
Options come from ``config.learners(learner_config_dict={"monte_carlo": {...}})``, see
``MonteCarloLearnerOptions``. Targets are never normalised or rescaled.

Per module and per update it logs (pre-update, on the fresh batch, real steps only):
``value_loss_unclipped``, ``value_explained_var``, ``value_target_mean`` / ``_std``,
``value_pred_mean`` / ``_std``, ``value_health`` (0 ok, 1 stuck, 2 exploding) and
``value_head_initialised``; RLlib's own ``vf_loss_unclipped`` is kept as well.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import DEFAULT_OPTIMIZER
from ray.rllib.utils.annotations import override
from ray.rllib.utils.numpy import convert_to_numpy

from marl_bft_rllib.rllib.connector import (
    ADVANTAGE_ESTIMATORS,
    COUNTERFACTUAL_MODES,
    STANDARDIZE_MODES,
    VALUE_BASELINES,
    MonteCarloValueTargets,
    allreduce_sum,
)
from marl_bft_rllib.rllib.counterfactual import (
    COUNTERFACTUAL_ADVANTAGES,
    COUNTERFACTUAL_REWARDS,
    all_actions_surrogate,
)
from marl_bft_rllib.rllib.critic import CRITIC_STATE, AddCriticStateToBatch
from marl_bft_rllib.rllib.health import HealthConfig, ValueHealthMonitor, health_status_name
from marl_bft_rllib.rllib.inert import AddInertToBatch
from marl_bft_rllib.validation import check_bool, check_choice, check_int, check_number

logger = logging.getLogger(__name__)

OPTIONS_KEY = "monte_carlo"
CRITIC_OPTIMIZER = "critic"
VALUE_HEAD_INITS = ("lstsq", "scale", "bias", "none")

# Metric keys logged per module (under result["learners"][module_id]).
VALUE_LOSS_KEY = "value_loss_unclipped"
VALUE_EV_KEY = "value_explained_var"
VALUE_TARGET_MEAN_KEY = "value_target_mean"
VALUE_TARGET_STD_KEY = "value_target_std"
VALUE_PRED_MEAN_KEY = "value_pred_mean"
VALUE_PRED_STD_KEY = "value_pred_std"
VALUE_HEALTH_KEY = "value_health"
VALUE_HEAD_INIT_KEY = "value_head_initialised"
BASELINE_COEF_KEY = "value_baseline_coef"
COUNTERFACTUAL_COEF_KEY = "counterfactual_baseline_coef"  # its beta (0 when off)
INERT_FRACTION_KEY = "inert_fraction"  # real steps left out of the policy loss as void
ALL_ACTIONS_LOSS_KEY = "all_actions_policy_loss"  # the all-actions surrogate's loss term
REPLAY_LOSS_KEY = "critic_replay_loss"  # mean squared error of the replay phase's last pass
REPLAY_ROWS_KEY = "critic_replay_rows"  # real steps replayed (this learner's shard)
REPLAY_BATCHES_KEY = "critic_replay_batches_used"  # batches replayed, the newest included
REPLAY_KL_KEY = "critic_replay_kl_max"  # largest policy KL of an earlier buffered batch
REPLAY_TARGETS = "replay_value_targets"  # buffer column: the raw targets as computed


@dataclass
class MonteCarloLearnerOptions:
    """Options of ``MonteCarloPPOTorchLearner`` (``learner_config_dict["monte_carlo"]``).

    advantage_estimator: "gae" (GAE(lambda) with the config's lambda_) or "mc" (G - V).
    standardize_advantages: "batch" (all modules together) or "module".
    value_baseline: what the advantages use as V: "fitted" (default: beta * (V -
        mean(V)), beta in [0, 1] minimising the variance of the fresh batch's
        advantages, so a critic that does not generalise is switched off; V's level is
        left out because with returns near -300 every breach, a terminal state of value
        0, would otherwise look like an escape: delta_T = r_T - V > 0),
        "critic" (V itself) or "zero" (no critic, an ablation). Value targets always
        bootstrap with V and are never rescaled.
    counterfactual_baseline: "all_actions" (default), "step", "trace" or "off". "step":
        subtract beta * (b - mean(b)) from the advantages, where b = sum_a pi(a | o)
        r_cf(a) is the step's expected team + vote reward under the sampling policy, from
        the env's counterfactual rewards (the reward had the agent voted each action,
        everything else fixed; COMA-style, see ``rllib/counterfactual.py``), and beta in
        [0, 1] minimises the advantages' variance on the batch. It does not depend on the
        agent's own action, so the gradient stays unbiased. "trace": the advantage of r -
        beta * (b - mean(b)), so the later steps of the advantage's window lose their b
        too (less noise; biased by how the action changes the next steps' expected
        rewards). "all_actions": "step", and the sampled immediate term r_cf(a_t) - b
        leaves the advantage for an exact expectation in the loss, sum_a pi(a | o)
        (r_cf(a) - b) (logged as ``all_actions_policy_loss``): the same expected gradient
        without the noise of which action was sampled. "off": none. Needs the central
        critic's module (``build_ppo_config`` turns it off with ``critic="local"``).
    all_actions_clip: clip the "all_actions" term per action as PPO clips its surrogate
        (True), or maximise sum_a pi(a | o) (r_cf(a) - b) unclipped (False, default):
        for a fixed step that sum is the exact expected immediate reward under the new
        policy, not an importance-sampled estimate, so it needs no trust region (the
        sampled rest of the advantage keeps PPO's clip). Measured (3 seeds x 30
        iterations, benchmarks/value_learning.py): clipped, it was the slowest of the
        modes at iteration 1; unclipped, the fastest (see the README).
    skip_inert_steps: give zero advantage to the steps the env flags ``inert`` (a
        convicted attacker's: its action changes nothing) and leave them out of the
        standardisation; their value targets are kept (``rllib/inert.py``)
    separate_critic_optimizer: own Adam for critic encoder + value head.
    critic_lr: learning rate of that Adam (the policy keeps ``config.lr``). 3e-4 by
        default: on the default scenario (3 seeds x 30 iterations) 1e-2 overfit each
        batch (negative fresh-batch EV), 1e-3 reached EV 0.50 at iteration 30, 3e-4
        reached 0.68 and 1e-4 0.55.
    critic_grad_clip: global-norm clip of the critic optimiser (None: no clip); the
        policy optimiser uses RLlib's ``grad_clip``.
    value_head_init: one-off init of the value head's last layer from the first batch:
        "lstsq" (ridge least squares on its input features), "scale" (1-D least squares
        of the targets on the head's current output), "bias" (shift only), "none".
    init_ridge: ridge strength of "lstsq", relative to the mean feature variance.
    value_head_refit: redo the ``value_head_init`` fit on every train batch (after the
        honest pre-update figures are taken), not only on the first: Adam moves a raw
        output by about lr per step, far slower than the returns' scale drifts while
        the policy improves; the closed-form fit tracks it. Targets stay raw.
    critic_replay_batches: after each PPO update, re-fit the critic alone (its own
        optimiser, mean squared error on the raw targets as they were computed) on the
        real steps of the current train batch and of this many earlier ones (PPG-style
        auxiliary phase); 0 turns the phase off. Default 7 (with 2 epochs): critic EV on
        fresh batches over the last 5 of 30 iterations 0.71 against 0.44 without, F1
        level (benchmarks/value_learning.py, 3 seeds). The buffer lives in the learner
        (K + 1 batches of critic inputs: about 17 MB per module at the defaults, more with
        many replicas or big batches) and is not checkpointed: after a restore it
        refills from empty.
    critic_replay_epochs: passes over those steps per phase, in minibatches of the
        config's ``minibatch_size``.
    critic_replay_max_kl: an earlier batch is replayed only while KL(policy that sampled
        it || current policy), averaged over its steps, is at most this (its returns
        still describe the current policy); None replays every buffered batch.
    health_*: thresholds of ``HealthConfig`` (window, stuck_ev, stuck_tolerance,
        explode_factor).
    warn_vf_clip: warn when ``vf_clip_param`` is below the scale of the returns.
    """

    advantage_estimator: str = "gae"
    standardize_advantages: str = "batch"
    value_baseline: str = "fitted"
    counterfactual_baseline: str = "all_actions"
    all_actions_clip: bool = False
    skip_inert_steps: bool = True
    separate_critic_optimizer: bool = True
    critic_lr: float = 3e-4
    critic_grad_clip: float | None = None
    value_head_init: str = "lstsq"
    init_ridge: float = 1e-3
    value_head_refit: bool = False
    critic_replay_batches: int = 7
    critic_replay_epochs: int = 2
    critic_replay_max_kl: float | None = 0.05
    health_window: int = 10
    health_stuck_ev: float = 0.05
    health_stuck_tolerance: float = 0.5
    health_explode_factor: float = 100.0
    warn_vf_clip: bool = True

    def __post_init__(self) -> None:
        """Validate every option; a bad one raises a ValueError naming it."""
        check_choice("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
        check_choice("standardize_advantages", self.standardize_advantages, STANDARDIZE_MODES)
        check_choice("value_baseline", self.value_baseline, VALUE_BASELINES)
        check_choice("counterfactual_baseline", self.counterfactual_baseline, COUNTERFACTUAL_MODES)
        check_bool("all_actions_clip", self.all_actions_clip)
        check_bool("skip_inert_steps", self.skip_inert_steps)
        check_bool("separate_critic_optimizer", self.separate_critic_optimizer)
        check_number("critic_lr", self.critic_lr, lo=0.0, lo_open=True)
        if self.critic_grad_clip is not None:
            check_number("critic_grad_clip", self.critic_grad_clip, lo=0.0, lo_open=True)
        check_choice("value_head_init", self.value_head_init, VALUE_HEAD_INITS)
        check_number("init_ridge", self.init_ridge, lo=0.0)
        check_bool("value_head_refit", self.value_head_refit)
        check_int("critic_replay_batches", self.critic_replay_batches, lo=0)
        check_int("critic_replay_epochs", self.critic_replay_epochs, lo=1)
        if self.critic_replay_max_kl is not None:
            check_number("critic_replay_max_kl", self.critic_replay_max_kl, lo=0.0)
        if self.critic_replay_batches and not self.separate_critic_optimizer:
            raise ValueError(
                "critic_replay_batches: the replay phase steps the critic's own optimiser; "
                "with separate_critic_optimizer=False set critic_replay_batches=0"
            )
        check_bool("warn_vf_clip", self.warn_vf_clip)
        self.health_config()  # validates the health_* fields

    def health_config(self) -> HealthConfig:
        """The value-health thresholds as a ``HealthConfig``."""
        try:
            return HealthConfig(
                window=self.health_window,
                stuck_ev=self.health_stuck_ev,
                stuck_tolerance=self.health_stuck_tolerance,
                explode_factor=self.health_explode_factor,
            )
        except ValueError as err:
            raise ValueError(f"health_{err}") from None

    def to_learner_config_dict(self) -> dict[str, dict[str, Any]]:
        """``{"monte_carlo": {...}}`` for ``config.learners(learner_config_dict=...)``."""
        return {OPTIONS_KEY: asdict(self)}

    @classmethod
    def from_learner_config_dict(cls, learner_config_dict: dict | None) -> MonteCarloLearnerOptions:
        """Read the options from a learner config dict (defaults where absent)."""
        raw = (learner_config_dict or {}).get(OPTIONS_KEY, {})
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, dict):
            raise ValueError(f"{OPTIONS_KEY}: must be a dict of options, got {type(raw)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{OPTIONS_KEY}: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)


def _is_critic_param(name: str) -> bool:
    return name.startswith("vf.") or name.startswith("encoder.critic_encoder.")


class MonteCarloPPOTorchLearner(PPOTorchLearner):
    """PPOTorchLearner with raw Monte Carlo value targets and levers to learn them."""

    @staticmethod
    def _warn(msg: str, *args: Any) -> bool:
        """Log a warning once per run: only the first learner (rank 0) speaks under DDP."""
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return False
        logger.warning(msg, *args)
        return True

    @override(PPOTorchLearner)
    def build(self) -> None:
        """Build as PPO, then swap GAE for the Monte Carlo value-target connector."""
        self.mc_options = MonteCarloLearnerOptions.from_learner_config_dict(
            self.config.learner_config_dict
        )
        self.health_monitors: dict[str, ValueHealthMonitor] = {}
        self._value_head_checked: set[str] = set()
        self._vf_clip_warned: set[str] = set()
        # module_id -> the last critic_replay_batches + 1 batches: (critic inputs, targets)
        self._critic_replay: dict[str, deque] = {}
        super().build()
        if self.config.num_aggregator_actors_per_learner > 0:
            raise ValueError(
                "num_aggregator_actors_per_learner: MonteCarloPPOTorchLearner needs its "
                "learner connector on the learner; set it to 0"
            )
        if self._learner_connector is None or not (
            self.config.add_default_connectors_to_learner_pipeline
        ):
            self._warn(
                "No default learner connectors: MonteCarloValueTargets was not added; "
                "add AddOneTsToEpisodesAndTruncate and MonteCarloValueTargets yourself."
            )
            return
        self._learner_connector.remove("GeneralAdvantageEstimation")
        if self.mc_options.counterfactual_baseline != "off" and not any(
            COUNTERFACTUAL_REWARDS in getattr(self.module[mid].unwrapped(), "passed_through", ())
            for mid in self.module.keys()
        ):
            raise ValueError(
                "counterfactual_baseline: no module records the env's counterfactual rewards; "
                "it needs the central critic's module (build_ppo_config(critic='central')), "
                "or set counterfactual_baseline='off'"
            )
        if any(
            getattr(self.module[mid].unwrapped(), "uses_critic_state", False)
            for mid in self.module.keys()
        ):
            self._learner_connector.insert_after(
                "AddObservationsFromEpisodesToBatch", AddCriticStateToBatch()
            )
        if self.mc_options.skip_inert_steps:  # a convicted attacker's void actions
            self._learner_connector.insert_after(
                "AddObservationsFromEpisodesToBatch", AddInertToBatch()
            )
        self._learner_connector.append(
            MonteCarloValueTargets(
                gamma=self.config.gamma,
                lambda_=self.config.lambda_,
                # config.rl_module(algorithm_config_overrides_per_module=...)
                lambda_per_module={
                    mid: self.config.get_config_for_module(mid).lambda_
                    for mid in self.config.algorithm_config_overrides_per_module
                },
                advantage_estimator=self.mc_options.advantage_estimator,
                standardize_advantages=self.mc_options.standardize_advantages,
                value_baseline=self.mc_options.value_baseline,
                counterfactual_baseline=self.mc_options.counterfactual_baseline,
                value_head_init_fn=self._maybe_init_value_head,
                stats_fn=self._log_value_stats,
                targets_fn=self._keep_for_replay if self.mc_options.critic_replay_batches else None,
            )
        )

    # ---------------------------------------------------------------- loss
    @override(PPOTorchLearner)
    def compute_loss_for_module(
        self, *, module_id: str, config: Any, batch: dict, fwd_out: dict
    ) -> torch.Tensor:
        """PPO's loss, plus the all-actions surrogate of the immediate counterfactual term."""
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        if COUNTERFACTUAL_ADVANTAGES not in batch:  # counterfactual_baseline != "all_actions"
            return loss
        surrogate = all_actions_surrogate(
            fwd_out[Columns.ACTION_DIST_INPUTS],
            batch[Columns.ACTION_DIST_INPUTS],
            batch[COUNTERFACTUAL_ADVANTAGES],
            config.clip_param if self.mc_options.all_actions_clip else None,
        )
        mask = batch.get(Columns.LOSS_MASK)
        mean = surrogate[mask].mean() if mask is not None else surrogate.mean()
        self.metrics.log_value((module_id, ALL_ACTIONS_LOSS_KEY), -mean.detach(), window=1)
        return loss - mean

    # ---------------------------------------------------------------- optimisers
    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        """One Adam for the policy (``config.lr``), one for the critic (``critic_lr``)."""
        opts = getattr(self, "mc_options", None) or MonteCarloLearnerOptions()
        module = self.module[module_id]
        named = dict(module.named_parameters())
        critic = [p for n, p in named.items() if _is_critic_param(n) and p.requires_grad]
        if not opts.separate_critic_optimizer or not critic:
            if opts.separate_critic_optimizer:
                self._warn(
                    "module %s: no value-head parameters found; one optimiser for all", module_id
                )
            super().configure_optimizers_for_module(module_id, config)
            return
        if not any(n.startswith("encoder.critic_encoder.") for n in named):
            self._warn(
                "module %s: shared encoder (vf_share_layers=True): raw value gradients "
                "reach the policy's encoder; set vf_share_layers=False",
                module_id,
            )
        policy = [p for n, p in named.items() if not _is_critic_param(n) and p.requires_grad]
        self.register_optimizer(
            module_id=module_id,
            optimizer_name=DEFAULT_OPTIMIZER,
            optimizer=torch.optim.Adam(policy),
            params=policy,
            lr_or_lr_schedule=config.lr,
        )
        self.register_optimizer(
            module_id=module_id,
            optimizer_name=CRITIC_OPTIMIZER,
            optimizer=torch.optim.Adam(critic),
            params=critic,
            lr_or_lr_schedule=opts.critic_lr,
        )

    @override(PPOTorchLearner)
    def postprocess_gradients_for_module(
        self, *, module_id: str, config: Any = None, module_gradients_dict: dict
    ) -> dict:
        """Clip each optimiser's gradients by its own global norm (critic: critic_grad_clip)."""
        out = dict(module_gradients_dict)
        for name, optimizer in self.get_optimizers_for_module(module_id):
            clip = (
                self.mc_options.critic_grad_clip if name == CRITIC_OPTIMIZER else config.grad_clip
            )
            if not clip:
                continue
            grads = self.filter_param_dict_for_optimizer(module_gradients_dict, optimizer)
            norm = self._get_clip_function()(
                grads, grad_clip=clip, grad_clip_by=config.grad_clip_by
            )
            out.update(grads)
            if config.grad_clip_by == "global_norm":
                self.metrics.log_value((module_id, f"gradients_{name}_global_norm"), norm, window=1)
        return out

    # ---------------------------------------------------------------- value head init
    def _critic_optimizer(self, module_id: str) -> torch.optim.Optimizer:
        names = [n for n, _ in self.get_optimizers_for_module(module_id)]
        name = CRITIC_OPTIMIZER if CRITIC_OPTIMIZER in names else DEFAULT_OPTIMIZER
        return self.get_optimizer(module_id, name)

    def _maybe_init_value_head(
        self,
        module_id: str,
        module: Any,
        module_batch: dict | None,
        targets: np.ndarray,
        mask: np.ndarray,
    ) -> bool:
        """Fit the value head's last layer on this batch: once before any step, or every batch.

        ``module_batch`` is None when the module has no rows in this learner's shard: the
        learner still joins the cross-learner fit (with no rows), so every learner makes
        the same collective calls and ends with the same head.
        """
        method = self.mc_options.value_head_init
        if method == "none" or not self.should_module_be_updated(module_id):
            return False  # a frozen module (not in policies_to_train) keeps its head
        if not self.mc_options.value_head_refit:
            if module_id in self._value_head_checked:
                return False
            self._value_head_checked.add(module_id)
            if self._critic_optimizer(module_id).state:
                return False  # already trained, or restored from a checkpoint
        head = getattr(module.unwrapped(), "vf", None)
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)] if head else []
        if not linears or linears[-1].out_features != 1:
            self._warn("module %s: no linear value head found; skipping init", module_id)
            return False
        last = linears[-1]
        if module_batch is None:
            x = np.zeros((0, last.in_features))
        else:
            captured: list[torch.Tensor] = []
            hook = last.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
            try:
                with torch.no_grad():
                    module.unwrapped().compute_values(module_batch)
            finally:
                hook.remove()
            x = captured[0].detach().cpu().double().numpy().reshape(mask.shape[0], -1)[mask]
        y = targets[mask].astype(np.float64)  # may be empty on one learner's shard: sums are 0
        w_old = last.weight.detach().cpu().double().numpy().reshape(-1)
        b_old = float(last.bias.detach().cpu().item()) if last.bias is not None else 0.0
        w, b = _fit_last_layer(method, x, y, w_old, b_old, self.mc_options.init_ridge)
        if last.bias is None:
            w, b = w_old, 0.0  # cannot shift without a bias: keep the layer
        with torch.no_grad():
            last.weight.copy_(torch.as_tensor(w, dtype=last.weight.dtype).view_as(last.weight))
            if last.bias is not None:
                last.bias.fill_(b)
        logger.info(
            "module %s: value head initialised (%s) from %d steps", module_id, method, y.size
        )
        return True

    # ---------------------------------------------------------------- critic replay
    def _keep_for_replay(
        self, module_id: str, module_batch: dict | None, targets: np.ndarray, mask: np.ndarray
    ) -> None:
        """Keep this batch's real steps (critic inputs, actions, log-probs) and raw targets.

        A module with no rows in this learner's shard gets an empty entry, so every
        learner's buffer holds the same batches in the same order. A frozen module (not
        in policies_to_train, the same on every learner) is never replayed: nothing kept.
        """
        if not self.should_module_be_updated(module_id):
            return
        keys = (Columns.OBS, CRITIC_STATE, Columns.ACTIONS, Columns.ACTION_LOGP)
        rows = {}
        if module_batch is not None:
            rows = {
                key: torch.as_tensor(convert_to_numpy(module_batch[key])[mask])
                for key in keys
                if key in module_batch
            }
        rows[REPLAY_TARGETS] = torch.as_tensor(targets[mask], dtype=torch.float32)
        buffer = self._critic_replay.setdefault(
            module_id, deque(maxlen=self.mc_options.critic_replay_batches + 1)
        )
        buffer.append(rows)

    @override(PPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        """PPO's schedules, then (``critic_replay_batches`` > 0) the critic replay phase."""
        super().after_gradient_based_update(timesteps=timesteps)
        if self.mc_options.critic_replay_batches:
            for module_id in sorted(self.module.keys()):
                names = [n for n, _ in self.get_optimizers_for_module(module_id)]
                # A frozen module (not in policies_to_train) keeps its critic too.
                if CRITIC_OPTIMIZER in names and self.should_module_be_updated(module_id):
                    self._replay_critic(module_id)

    def _policy_kl(self, module: Any, rows: dict) -> tuple[float, float]:
        """(sum, count) over rows of KL(policy that sampled them || current policy), k3."""
        if Columns.ACTION_LOGP not in rows or not len(rows[REPLAY_TARGETS]):
            return 0.0, 0.0
        device = next(module.parameters()).device
        batch = {Columns.OBS: rows[Columns.OBS].to(device)}
        with torch.no_grad():
            logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
            dist_cls = module.get_train_action_dist_cls()
            logp = dist_cls.from_logits(logits).logp(rows[Columns.ACTIONS].to(device))
            log_ratio = logp.double() - rows[Columns.ACTION_LOGP].to(device).double()
            k3 = torch.expm1(log_ratio) - log_ratio  # >= 0, unbiased for KL(old || new)
        return float(k3.sum()), float(k3.numel())

    def _replay_critic(self, module_id: str) -> None:
        """Re-fit the critic on the buffered batches' raw targets (critic optimiser only).

        An earlier batch is replayed only while the policy that sampled it is within
        ``critic_replay_max_kl`` of the current one (its returns still describe this
        policy); the newest batch always is. With several learners the KL and row counts
        are summed over all shards, gradients are averaged, and every learner takes the
        same steps, so parameters stay identical.
        """
        opts = self.mc_options
        module = self.module[module_id].unwrapped()
        optimizer = self.get_optimizer(module_id, CRITIC_OPTIMIZER)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        buffer = list(self._critic_replay.get(module_id, ()))
        if not buffer:
            return
        kl = allreduce_sum([self._policy_kl(module, rows) for rows in buffer[:-1]] + [[0, 0]])
        mean_kl = kl[:, 0] / np.maximum(kl[:, 1], 1.0)
        kept = [
            rows
            for rows, value in zip(buffer, mean_kl, strict=True)
            if opts.critic_replay_max_kl is None or value <= opts.critic_replay_max_kl
        ]
        kept = [rows for rows in kept if len(rows[REPLAY_TARGETS])]  # empty: absent module
        keys = [k for k in (Columns.OBS, CRITIC_STATE) if kept and k in kept[0]]
        inputs = {k: torch.cat([rows[k] for rows in kept]) for k in keys}
        targets = torch.cat([rows[REPLAY_TARGETS] for rows in kept] or [torch.zeros(0)])
        n_local = int(targets.shape[0])
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        n_total = float(allreduce_sum([n_local])[0])
        size = int(self.config.minibatch_size or max(n_total, 1))
        steps_per_pass = math.ceil(n_total / (world * size)) if n_total else 0
        device = params[0].device
        losses: list[float] = []
        for _ in range(opts.critic_replay_epochs):
            order = torch.randperm(n_local) if n_local else None
            losses = []
            for step in range(steps_per_pass):
                optimizer.zero_grad(set_to_none=False)
                if n_local:
                    idx = order[(torch.arange(size) + step * size) % n_local]
                    batch = {k: v[idx].to(device) for k, v in inputs.items()}
                    loss = torch.mean(
                        torch.square(module.compute_values(batch) - targets[idx].to(device))
                    )
                    loss.backward()
                    losses.append(float(loss.detach()))
                if world > 1:
                    for p in params:
                        if p.grad is None:
                            p.grad = torch.zeros_like(p)
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                        p.grad /= world
                if opts.critic_grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, opts.critic_grad_clip)
                optimizer.step()
        figures = {
            REPLAY_ROWS_KEY: float(n_local),
            REPLAY_BATCHES_KEY: float(len(kept)),
            REPLAY_KL_KEY: float(mean_kl[:-1].max()) if len(buffer) > 1 else 0.0,
        }
        if losses:
            figures[REPLAY_LOSS_KEY] = float(np.mean(losses))
        for key, value in figures.items():
            self.metrics.log_value((module_id, key), value, window=1)

    # ---------------------------------------------------------------- metrics
    def _log_value_stats(self, module_id: str, stats: dict) -> None:
        """Log the pre-update value figures, update health, warn on a too-small vf clip."""
        monitor = self.health_monitors.get(module_id)
        if monitor is None:
            monitor = self.health_monitors[module_id] = ValueHealthMonitor(
                self.mc_options.health_config()
            )
        previous = monitor.status
        status = monitor.update(
            stats["value_loss"], stats["target_std"] ** 2, stats["explained_var"]
        )
        if status != previous:
            self._warn(
                "module %s: value health %s -> %s (value loss %.4g, target var %.4g, EV %.3f)",
                module_id,
                health_status_name(previous),
                health_status_name(status),
                stats["value_loss"],
                stats["target_std"] ** 2,
                stats["explained_var"],
            )
        values = {
            VALUE_LOSS_KEY: stats["value_loss"],
            VALUE_EV_KEY: stats["explained_var"],
            VALUE_TARGET_MEAN_KEY: stats["target_mean"],
            VALUE_TARGET_STD_KEY: stats["target_std"],
            VALUE_PRED_MEAN_KEY: stats["pred_mean"],
            VALUE_PRED_STD_KEY: stats["pred_std"],
            VALUE_HEALTH_KEY: float(status),
            VALUE_HEAD_INIT_KEY: stats.get("value_head_initialised", 0.0),
            BASELINE_COEF_KEY: stats.get("baseline_coef", 1.0),
            COUNTERFACTUAL_COEF_KEY: stats.get("counterfactual_coef", 0.0),
            INERT_FRACTION_KEY: stats.get("inert_fraction", 0.0),
        }
        for key, value in values.items():
            self.metrics.log_value((module_id, key), value, window=1)
        self._check_vf_clip(module_id, stats["target_std"])

    def _check_vf_clip(self, module_id: str, target_std: float) -> None:
        clip = self.config.get_config_for_module(module_id).vf_clip_param
        if (
            not self.mc_options.warn_vf_clip
            or module_id in self._vf_clip_warned
            or clip is None
            or not math.isfinite(clip)
            or not math.sqrt(clip) < target_std
        ):
            return
        self._vf_clip_warned.add(module_id)
        msg = (
            f"module {module_id}: vf_clip_param={clip} clamps the squared value error at "
            f"{clip}, i.e. |V - G| > {math.sqrt(clip):.3g}, below the std of the raw value "
            f"targets ({target_std:.3g}): those samples give no value gradient. "
            "Use vf_clip_param=float('inf')."
        )
        if self._warn(msg):
            warnings.warn(msg, UserWarning, stacklevel=2)


def _fit_last_layer(
    method: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, ridge: float
) -> tuple[np.ndarray, float]:
    """New (weight, bias) of a 1-output linear layer with input features x for targets y.

    Fitted from sufficient statistics summed over every learner (``allreduce_sum``), so
    with several learners each one computes the same head from the whole batch.
    """
    if method == "lstsq":
        d = x.shape[1]
        sums = allreduce_sum(
            np.concatenate([[y.size, y.sum()], x.sum(axis=0), (x.T @ x).ravel(), x.T @ y])
        )
        n, sy = max(sums[0], 1.0), sums[1]
        sx, xtx, xty = sums[2 : 2 + d], sums[2 + d : 2 + d + d * d], sums[2 + d + d * d :]
        xm, ym = sx / n, sy / n
        gram = xtx.reshape(d, d) - n * np.outer(xm, xm)
        reg = ridge * max(float(np.trace(gram)) / max(d, 1), 1e-8)
        w_new = np.linalg.solve(gram + reg * np.eye(d), xty - n * xm * ym)
        return w_new, float(ym - xm @ w_new)
    pred = x @ w + b
    n, sp, sy, spp, spy = allreduce_sum(
        [y.size, pred.sum(), y.sum(), (pred * pred).sum(), (pred * y).sum()]
    )
    n = max(n, 1.0)
    pm, ymean = sp / n, sy / n
    if method == "scale":
        var = spp / n - pm**2
        scale = float((spy / n - pm * ymean) / var) if var > 0 else 0.0
        return w * scale, float(ymean - scale * (pm - b))
    # "bias": shift the output to the mean target.
    return w, float(b + ymean - pm)
