"""Value-health monitor on synthetic series, and its Tune stopper."""

from __future__ import annotations

import math

import pytest

from marl_bft_rllib.rllib.health import (
    EXPLODING,
    OK,
    STUCK,
    HealthConfig,
    ValueHealthMonitor,
    ValueHealthStopper,
    classify_series,
    health_status_name,
)


def test_normalised_targets_stuck_at_loss_one_is_flagged():
    # Lineage run 2: normalised targets, value loss exactly 1.0, EV 0.
    window = HealthConfig().window
    statuses = classify_series([(1.0, 1.0, 0.0)] * (window + 4))
    assert statuses[: window - 1] == [OK] * (window - 1)  # needs a full window first
    assert statuses[window - 1 :] == [STUCK] * 5


def test_noisy_early_phase_of_a_healthy_run_is_not_stuck():
    # (value loss, target std, EV) of iterations 6-16 of a default-scenario run whose EV
    # later reached 0.6-0.8: EV hovers near 0 for a few iterations while the policy moves.
    run = [
        (5552, 69.2, 0.084),
        (5672, 71.6, 0.335),
        (9158, 93.3, 0.32),
        (5537, 57.6, -0.236),
        (3167, 42.6, 0.13),
        (3027, 36.2, -0.058),
        (1890, 35.3, -0.026),
        (2445, 35.1, 0.021),
        (1724, 35.0, 0.006),
        (1191, 30.6, -0.082),
        (2059, 40.1, 0.153),
    ]
    assert set(classify_series([(loss, std**2, ev) for loss, std, ev in run])) == {OK}


def test_raw_targets_crawling_is_flagged_stuck():
    # Lineage run 3: raw targets, loss far above the target variance, EV ~ 0.
    series = [(998_829.0 - 1000 * i, 150_000.0, 0.01 * (i % 2)) for i in range(10)]
    assert classify_series(series)[-1] == STUCK


def test_exploding_loss_is_flagged():
    # Lineage run 1: loss growing by orders of magnitude.
    series = [(4e4, 1e4, -0.5), (5e4, 1e4, -1.0), (4e5, 1e4, -10.0), (9e6, 1e4, -500.0)]
    statuses = classify_series(series)
    assert statuses[-1] == EXPLODING
    assert classify_series([(1.0, 1.0, 0.0), (math.nan, 1.0, math.nan)])[-1] == EXPLODING


def test_healthy_series_left_alone():
    # Loss drops from the target variance towards 0 while EV rises.
    series = [(1e4 * 0.5**i, 1e4, 1 - 0.5**i) for i in range(12)]
    assert set(classify_series(series)) == {OK}
    # A small loss that grows 100x but stays far below the variance is not an explosion.
    series = [(1.0, 1e4, 0.99), (10.0, 1e4, 0.99), (150.0, 1e4, 0.98)]
    assert set(classify_series(series)) == {OK}


def test_recovers_after_stuck():
    monitor = ValueHealthMonitor(HealthConfig(window=3))
    for _ in range(3):
        monitor.update(100.0, 100.0, 0.0)
    assert monitor.status_name == "stuck"
    assert monitor.update(10.0, 100.0, 0.9) == OK


def test_config_validation():
    with pytest.raises(ValueError, match="window"):
        HealthConfig(window=0)
    with pytest.raises(ValueError, match="explode_factor"):
        HealthConfig(explode_factor=1.0)
    with pytest.raises(ValueError, match="stop_on"):
        ValueHealthStopper(stop_on=("ok",))


def test_stopper_reads_rllib_results():
    stopper = ValueHealthStopper(grace_iterations=5)
    result = {
        "training_iteration": 6,
        "learners": {"a": {"value_health": 0.0}, "b": {"value_health": 1.0}},
    }
    assert stopper("t", result)
    assert not stopper("t", {**result, "training_iteration": 4})
    assert not stopper("t", {"training_iteration": 9, "learners": {"a": {"value_health": 0.0}}})
    assert not ValueHealthStopper(stop_on=("exploding",))("t", result)
    assert not stopper.stop_all()
    assert health_status_name(2.0) == "exploding"
    assert health_status_name(float("nan")) == "n/a"  # a metric missing after a runner restart
