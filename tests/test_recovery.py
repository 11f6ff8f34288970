"""Fault recovery: a training run survives the death of its env-runner actor."""

from __future__ import annotations

import math
import os
import sys
import time

import pytest
import ray
import torch

from marl_bft_rllib.rllib import build_ppo_config
from marl_bft_rllib.tune import TuneSummaryCallbacks


def _crash(env_runner) -> None:
    os._exit(1)  # the actor's process dies, as on a lost node


# The actor cannot import this test module: ship _crash by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_session():
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_training_survives_a_killed_env_runner(ray_session):
    summary = TuneSummaryCallbacks()

    def summarize(*, algorithm, result):
        summary.on_train_result(algorithm=algorithm, result=result)

    config = build_ppo_config(
        {"horizon": 50, "seed": 1},
        train_batch_size_per_learner=100,
        minibatch_size=50,
        num_epochs=1,
    ).env_runners(num_env_runners=1, num_envs_per_env_runner=1)
    algo = config.build_algo()
    try:
        summarize(algorithm=algo, result=algo.train())
        # RLlib reports the lost actor and takes it out of service (no exception here).
        algo.env_runner_group.foreach_env_runner(_crash, local_env_runner=False)
        results = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the replacement runner samples again
            results.append(algo.train())
            summarize(algorithm=algo, result=results[-1])  # NaN-safe while nothing is sampled
            if results[-1]["env_runners"].get("num_env_steps_sampled_lifetime", 0) >= 300:
                break
            time.sleep(0.5)
    finally:
        algo.stop()
    assert results[-1]["env_runners"]["num_env_steps_sampled_lifetime"] >= 300
    steps = [r["env_runners"].get("num_env_steps_sampled_lifetime", 0) for r in results]
    assert steps[0] <= 100, steps  # right after the kill nothing new was sampled: it was dead
    assert all(r["value_health"] in ("ok", "stuck", "exploding", "n/a") for r in results)
    assert math.isfinite(results[-1]["learners"]["shared"]["value_loss_unclipped"])
