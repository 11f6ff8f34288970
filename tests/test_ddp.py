"""Two real DDP learners (torch gloo on CPU): identical parameters, whole-batch statistics."""

from __future__ import annotations

import copy
import dataclasses
import sys
from typing import Any

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.numpy import convert_to_numpy

from marl_bft_rllib.rllib import build_ppo_config
from marl_bft_rllib.rllib.connector import allreduce_sum
from marl_bft_rllib.rllib.counterfactual import COUNTERFACTUAL_ADVANTAGES
from marl_bft_rllib.rllib.learner import REPLAY_ROWS_KEY, MonteCarloLearnerOptions

# The learner actors cannot import this test module: ship _shard_rows by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROW_COLUMNS = (
    Columns.OBS,
    Columns.REWARDS,
    Columns.LOSS_MASK,
    Columns.ACTIONS,
    Postprocessing.VALUE_TARGETS,
    Postprocessing.ADVANTAGES,
    COUNTERFACTUAL_ADVANTAGES,  # the default counterfactual_baseline="all_actions"
)
DIFF_COLUMNS = (Postprocessing.VALUE_TARGETS, Postprocessing.ADVANTAGES, COUNTERFACTUAL_ADVANTAGES)


@pytest.fixture(scope="module")
def two_learner_algo():
    """A PPO algorithm with num_learners=2 (gloo process group) and its config.

    The critic replay phase is on, so "identical parameters" covers its steps too.
    """
    torch.set_num_threads(1)
    # 2 learner actors + the env runner in the driver: logical CPUs may exceed cores.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    options = MonteCarloLearnerOptions(critic_replay_batches=1)
    config = build_ppo_config(
        {"horizon": 60, "seed": 7}, train_batch_size_per_learner=120, minibatch_size=60
    ).learners(num_learners=2, learner_config_dict=options.to_learner_config_dict())
    algo = config.build_algo()
    try:
        yield algo, config
    finally:
        algo.stop()
        ray.shutdown()


@pytest.fixture(scope="module")
def two_learner_states(two_learner_algo):
    """Three iterations with num_learners=2; every learner's module weights after each."""
    algo, _ = two_learner_algo
    per_iteration, results = [], []
    for _ in range(3):
        results.append(algo.train())
        calls = algo.learner_group.foreach_learner(
            lambda learner: {
                k: v.detach().cpu().numpy().copy()
                for k, v in learner.module["shared"].unwrapped().state_dict().items()
            }
        )
        per_iteration.append([call.get() for call in calls])
    return per_iteration, results


def test_learners_hold_identical_parameters_after_every_update(two_learner_states):
    per_iteration, _ = two_learner_states
    for weights in per_iteration:
        assert len(weights) == 2
        first, second = weights
        assert first.keys() == second.keys()
        for name in first:
            np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    # The value head was fitted from the first batch (not left at its random init).
    head_bias = [k for k in per_iteration[0][0] if k.startswith("vf.") and k.endswith("bias")]
    assert head_bias and abs(float(per_iteration[0][0][head_bias[-1]][0])) > 1.0


def test_two_learner_run_reports_value_metrics(two_learner_states):
    _, results = two_learner_states
    shared = results[-1]["learners"]["shared"]
    for key in ("value_explained_var", "value_baseline_coef", "value_loss_unclipped"):
        assert np.isfinite(shared[key]), key
    assert shared[REPLAY_ROWS_KEY] > 0  # the replay phase ran (on both learners' shards)


def test_allreduce_sum_without_a_process_group_is_identity():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(allreduce_sum(x), x)


# -- per-row targets and advantages: 2 learners on shards == 1 learner on the whole batch --
def _shard_rows(
    learner: Any, shards: list[list[Any]], reduce: bool = True
) -> tuple[int, dict[str, dict[str, np.ndarray]]]:
    """Run ``learner``'s connector pipeline on its shard (by DDP rank); the per-row columns.

    The value head is refitted on the batch (``value_head_refit``), so its all-reduced
    least-squares fit shapes the targets too. ``reduce=False`` turns the cross-learner
    sums into identities (each learner on its own shard only), to show the check bites.
    """
    import torch.distributed as dist

    from marl_bft_rllib.rllib import connector
    from marl_bft_rllib.rllib import learner as learner_module

    rank = dist.get_rank() if dist.is_initialized() else 0
    saved = connector.allreduce_sum, learner_module.allreduce_sum, learner.mc_options
    if not reduce:
        connector.allreduce_sum = learner_module.allreduce_sum = (  # this call only
            lambda rows: np.asarray(rows, dtype=np.float64)
        )
    learner.mc_options = dataclasses.replace(learner.mc_options, value_head_refit=True)
    (piece,) = [c for c in learner._learner_connector.connectors if hasattr(c, "stats_fn")]
    saved_stats_fn, stats = piece.stats_fn, {}
    piece.stats_fn = lambda mid, figures: stats.__setitem__(mid, dict(figures))
    try:
        batch = learner._learner_connector(
            rl_module=learner.module,
            batch={},
            episodes=shards[rank],
            shared_data={},
            metrics=learner.metrics,
        )
    finally:
        connector.allreduce_sum, learner_module.allreduce_sum, learner.mc_options = saved
        piece.stats_fn = saved_stats_fn
    rows = {
        mid: {col: convert_to_numpy(b[col]).copy() for col in ROW_COLUMNS}
        for mid, b in batch.items()
        if Postprocessing.VALUE_TARGETS in b
    }
    return rank, {**rows, "_value_stats": stats}


def _chunks(rows: dict[str, np.ndarray]) -> dict[bytes, dict[str, np.ndarray]]:
    """A module batch cut into its episode chunks (each ends in its phantom row), keyed by
    content (observations and rewards), since RLlib orders a batch's chunks its own way."""
    ends = np.flatnonzero(~rows[Columns.LOSS_MASK].astype(bool))
    out = {}
    for start, end in zip(np.r_[0, ends[:-1] + 1], ends + 1, strict=True):
        chunk = {col: v[start:end] for col, v in rows.items()}
        key = chunk[Columns.OBS].tobytes() + chunk[Columns.REWARDS].tobytes()
        assert key not in out, "two chunks with the same observations and rewards"
        out[key] = chunk
    return out


def _two_and_one(two_learner_algo: tuple[Any, Any], reduce: bool) -> tuple[dict, dict]:
    """Per module, the episode chunks of the 2 learners (one shard each) and those of 1
    learner (same weights, no process group) on the whole batch of the same episodes."""
    algo, config = two_learner_algo
    weights = algo.learner_group.get_weights()
    single = (
        config.copy(copy_frozen=False)
        .learners(num_learners=0)
        .build_learner_group(spaces=algo.env_runner.get_spaces())
    )
    single.set_weights(weights)
    episodes = algo.env_runner.sample(num_timesteps=200, explore=True)
    assert len(episodes) >= 2
    cut = len(episodes) // 2
    shards = [episodes[:cut], episodes[cut:]]
    try:
        calls = algo.learner_group.foreach_learner(
            lambda learner: _shard_rows(learner, shards, reduce)
        )
        per_rank = dict(call.get() for call in calls)
        assert sorted(per_rank) == [0, 1]
        (call,) = single.foreach_learner(
            lambda learner: _shard_rows(learner, [copy.deepcopy(episodes)])[1]
        )
        one = call.get()
        stats = {"one": one.pop("_value_stats")}
        stats.update((rank, per_rank[rank].pop("_value_stats")) for rank in (0, 1))
    finally:
        algo.learner_group.set_weights(weights)  # the refit moved the value head
        single.shutdown()
    two = {}
    for mid in one:
        first, second = _chunks(per_rank[0][mid]), _chunks(per_rank[1][mid])
        two[mid] = {**first, **second}
        assert len(two[mid]) == len(first) + len(second), "a chunk on both shards"
    return two, {mid: _chunks(rows) for mid, rows in one.items()}, stats


def _max_differences(two: dict, one: dict) -> dict[str, float]:
    """Largest |2 learners - 1 learner| over every row, per column (same chunks in both)."""
    out = dict.fromkeys(DIFF_COLUMNS, 0.0)
    for mid in one:
        assert two[mid].keys() == one[mid].keys(), f"{mid}: not the same episode chunks"
        for key, chunk in one[mid].items():
            for col in out:
                diff = np.abs(two[mid][key][col].astype(np.float64) - chunk[col])
                out[col] = max(out[col], float(diff.max()))
    return out


def test_two_learners_give_every_row_the_targets_and_advantages_of_one(
    two_learner_states, two_learner_algo
):
    two, one, stats = _two_and_one(two_learner_algo, reduce=True)
    # The honest value figures (and so the health monitor) are the whole batch's too.
    for key in ("value_loss", "explained_var", "target_mean", "target_std", "pred_std"):
        # EV = 1 - Var(G - V) / Var(G): float32 reduction order moves the ratio by ~1e-7,
        # a relative error of ~1e-6 on an EV near 0.1, so EV gets an absolute bound.
        abs_tol = 1e-6 if key == "explained_var" else 1e-9
        for rank in (0, 1):
            assert stats[rank]["shared"][key] == pytest.approx(
                stats["one"]["shared"][key], rel=1e-6, abs=abs_tol
            ), key
    assert stats[0]["shared"]["num_steps"] == stats["one"]["shared"]["num_steps"]
    chunks = one["shared"].values()
    mask = np.concatenate([c[Columns.LOSS_MASK] for c in chunks]).astype(bool)
    assert len(chunks) >= 4 and mask.sum() > 100
    # Some chunk was cut by the sampler: its target bootstraps with the (refitted) V(s_T).
    assert any(c[Postprocessing.VALUE_TARGETS][-1] != 0.0 for c in chunks)
    targets = np.concatenate([c[Postprocessing.VALUE_TARGETS] for c in chunks])[mask]
    adv = np.concatenate([c[Postprocessing.ADVANTAGES] for c in chunks])[mask]
    per_action = np.concatenate([c[COUNTERFACTUAL_ADVANTAGES] for c in chunks])[mask]
    actions = np.concatenate([c[Columns.ACTIONS] for c in chunks])[mask].astype(int)
    assert np.abs(per_action).max() > 0.1  # the all-actions column is filled
    # Whole-batch scale: the advantages are centred, and scaled by the std of the
    # advantages before the taken action's immediate term moved to the per-action column.
    before = adv + per_action[np.arange(actions.size), actions]
    assert abs(adv.mean()) < 1e-3 and abs(before.std() - 1.0) < 1e-3
    diff = _max_differences(two, one)
    # float32 outputs of float64 sums: noise only (targets are raw returns of size ~100).
    assert diff[Postprocessing.VALUE_TARGETS] <= 1e-4 * max(1.0, np.abs(targets).max()), diff
    assert diff[Postprocessing.ADVANTAGES] <= 1e-4, diff
    assert diff[COUNTERFACTUAL_ADVANTAGES] <= 1e-4, diff


def test_per_row_check_fails_without_the_cross_learner_reduction(
    two_learner_states, two_learner_algo
):
    """Negative control: each learner on its own shard only gives other rows."""
    two, one, stats = _two_and_one(two_learner_algo, reduce=False)
    assert stats[0]["shared"]["num_steps"] < stats["one"]["shared"]["num_steps"]
    diff = _max_differences(two, one)
    assert diff[Postprocessing.VALUE_TARGETS] > 1e-2, diff  # per-shard value-head fit
    assert diff[Postprocessing.ADVANTAGES] > 1e-2, diff  # per-shard standardisation


def test_a_module_missing_from_one_shard_keeps_the_learners_in_step(two_learner_algo) -> None:
    """adversary='mixed': a shard of scripted episodes has no attacker rows; the learner
    still joins every cross-learner reduction (the critic replay phase's too), and both
    end with the same attacker critic."""
    _, base = two_learner_algo
    options = MonteCarloLearnerOptions(standardize_advantages="module", critic_replay_batches=1)
    config = build_ppo_config(
        {"horizon": 60, "seed": 3, "adversary": "mixed"},
        train_batch_size_per_learner=120,
        minibatch_size=60,
    ).learners(num_learners=2, learner_config_dict=options.to_learner_config_dict())
    algo = config.build_algo()
    try:
        episodes = algo.env_runner.sample(num_timesteps=400, explore=True)
        scripted = [e for e in episodes if "attacker_0" not in e.agent_episodes]
        learned = [e for e in episodes if "attacker_0" in e.agent_episodes]
        assert scripted and learned
        calls = algo.learner_group.foreach_learner(
            lambda learner: _shard_rows(learner, [scripted, learned]), timeout_seconds=120
        )
        per_rank = dict(call.get() for call in calls)
        assert "attacker" not in per_rank[0] and "attacker" in per_rank[1]

        def critic_weights(learner: Any) -> dict[str, np.ndarray]:
            module = learner.module["attacker"].unwrapped()
            return {
                k: v.detach().cpu().numpy().copy()
                for k, v in module.state_dict().items()
                if k.startswith(("vf.", "encoder.critic_encoder."))
            }

        heads = [c.get() for c in algo.learner_group.foreach_learner(critic_weights)]
        # The replay phase: rank 0 has no attacker rows and steps with zero gradients.
        calls = algo.learner_group.foreach_learner(
            lambda learner: (learner._replay_critic("attacker"), critic_weights(learner))[1],
            timeout_seconds=120,
        )
        replayed = [call.get() for call in calls]
        for first, second in (heads, replayed):
            assert first.keys() == second.keys()
            for key in first:
                np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        assert any(not np.array_equal(heads[0][k], replayed[0][k]) for k in heads[0])
    finally:
        algo.stop()
