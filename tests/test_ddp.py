"""Two real DDP learners (torch gloo on CPU): identical parameters, whole-batch statistics."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from marl_bft_rllib.rllib import build_ppo_config
from marl_bft_rllib.rllib.connector import allreduce_sum


@pytest.fixture(scope="module")
def two_learner_states():
    """Three iterations with num_learners=2; every learner's module weights after each."""
    torch.set_num_threads(1)
    # 2 learner actors + the env runner in the driver: logical CPUs may exceed cores.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    config = build_ppo_config(
        {"horizon": 60, "seed": 7}, train_batch_size_per_learner=120, minibatch_size=60
    ).learners(num_learners=2)
    algo = config.build_algo()
    try:
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
        yield per_iteration, results
    finally:
        algo.stop()
        ray.shutdown()


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


def test_allreduce_sum_without_a_process_group_is_identity():
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(allreduce_sum(x), x)
