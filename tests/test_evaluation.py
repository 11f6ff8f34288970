"""The Ray-free evaluation library: rollouts, aggregation and baselines on the real env."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.actions import Action
from marl_bft_rllib.env import BFTSecurityEnv
from marl_bft_rllib.evaluation import (
    EvalResult,
    ThresholdDetector,
    always_allow,
    best_f1_threshold,
    evaluate_baselines,
    greedy_policy,
    held_out_seeds,
    random_policy,
    run_episodes,
    single_replica,
)
from marl_bft_rllib.metrics import detection_scores
from marl_bft_rllib.scenarios import scenario_config

SHORT = scenario_config("default", horizon=150)
HONEST = scenario_config("no_byzantine", horizon=100)


def test_held_out_seeds() -> None:
    assert held_out_seeds(3, 10) == [10, 11, 12]
    assert held_out_seeds(2)[0] == 10**6
    with pytest.raises(ValueError, match="episodes"):
        held_out_seeds(0)
    with pytest.raises(ValueError, match="seed_offset"):
        held_out_seeds(2, -1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=1, max_size=40),
)
def test_best_f1_threshold_matches_brute_force(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([p[0] for p in pairs], dtype=float)
    labels = np.array([p[1] for p in pairs])
    t, f1 = best_f1_threshold(scores, labels)
    # Brute force over every distinct cut, including "detect nothing".
    cuts = np.concatenate([np.unique(scores) - 0.5, [scores.max() + 0.5]])
    best = 0.0
    for c in cuts:
        d = scores > c
        tp = int(np.sum(d & labels))
        fp = int(np.sum(d & ~labels))
        fn = int(np.sum(~d & labels))
        best = max(best, detection_scores({"tp": tp, "fp": fp, "fn": fn, "tn": 0})["f1"])
    assert f1 == pytest.approx(best)
    # The returned threshold really achieves it.
    d = scores > t
    counts = {
        "tp": int(np.sum(d & labels)),
        "fp": int(np.sum(d & ~labels)),
        "fn": int(np.sum(~d & labels)),
        "tn": 0,
    }
    assert detection_scores(counts)["f1"] == pytest.approx(f1)


def test_summary_pools_counts_and_keeps_episode_mean() -> None:
    res = EvalResult("x")
    res.episodes.append({"tp": 9, "tn": 1, "fp": 0, "fn": 0, "f1": 1.0, "views": 2.0})
    res.episodes.append({"tp": 0, "tn": 0, "fp": 0, "fn": 1, "f1": 0.0, "views": 4.0})
    s = res.summary()
    assert s["tp"] == 9 and s["fn"] == 1 and s["tn"] == 1
    assert s["f1"] == pytest.approx(2 * 9 / (2 * 9 + 1))  # pooled
    assert s["episode_f1_mean"] == pytest.approx(0.5)
    assert s["views"] == pytest.approx(3.0)
    assert s["episodes"] == 2


def test_run_episodes_always_allow_is_deterministic_and_detects_nothing() -> None:
    seeds = held_out_seeds(3)
    a = run_episodes(always_allow, SHORT, seeds)
    b = run_episodes(always_allow, SHORT, seeds)
    assert a.episodes == b.episodes
    s = a.summary()
    assert s["tp"] == 0 and s["fp"] == 0
    assert s["recall"] == 0.0 and s["f1"] == 0.0
    assert s["tn"] + s["fn"] == sum(ep["length"] for ep in a.episodes)
    for key in ("precision", "recall", "f1", "views", "messages", "return", "breached"):
        assert key in s
    assert any(k.startswith("stl_") and k.endswith("_satisfied") for k in s)


def test_greedy_policy_batches_per_module_and_takes_argmax() -> None:
    calls: list[tuple[str, int]] = []

    def make(mid: str, best: int):
        def logits(batch: np.ndarray) -> np.ndarray:
            calls.append((mid, len(batch)))
            out = np.zeros((len(batch), 4), np.float32)
            out[:, best] = 1.0
            return out

        return logits

    fns = {"a": make("a", 2), "b": make("b", 1)}
    policy = greedy_policy(fns, lambda agent: "a" if agent in ("r0", "r1") else "b")
    obs = {f"r{i}": np.zeros(3, np.float32) for i in range(3)}
    assert policy(obs) == {"r0": 2, "r1": 2, "r2": 1}
    assert sorted(calls) == [("a", 2), ("b", 1)]


def test_single_replica_votes_one_replicas_action_everywhere() -> None:
    def by_agent(obs):
        return {a: int(a[-1]) % 4 for a in obs}

    policy = single_replica(by_agent, "replica_2")
    obs = {f"replica_{i}": np.zeros(2) for i in (1, 2, 3)}
    assert policy(obs) == dict.fromkeys(obs, 2)
    # The named replica is Byzantine (not live) this episode: the first live one decides.
    obs = {f"replica_{i}": np.zeros(2) for i in (0, 1, 3)}
    assert single_replica(by_agent, "replica_2")(obs) == dict.fromkeys(obs, 0)


def test_single_replica_decision_is_that_replicas_action() -> None:
    env = BFTSecurityEnv(HONEST)
    obs, _ = env.reset(seed=5)
    policy = single_replica(random_policy(3))
    while env.agents:
        actions = policy(obs)
        assert len(set(actions.values())) == 1
        obs, _, _, _, infos = env.step(actions)
        info = next(iter(infos.values()))
        if info["committed"]:
            assert info["decision"] == next(iter(actions.values()))


def test_threshold_detector_fits_on_training_seeds_and_beats_always_allow() -> None:
    det = ThresholdDetector.fit(SHORT, range(6))
    assert np.all(np.isfinite(det.weights)) and np.isfinite(det.threshold)
    assert 0.0 < det.train_f1 <= 1.0
    env = BFTSecurityEnv(SHORT)
    obs, _ = env.reset(seed=0)
    acts = det(obs)
    assert set(acts) == set(obs)
    assert set(acts.values()) <= {int(Action.ALLOW), int(Action.BLOCK)}
    seeds = held_out_seeds(3)
    results, _ = evaluate_baselines(SHORT, seeds, train_seeds=range(6))
    assert set(results) == {"always_allow", "threshold"}
    assert results["threshold"].summary()["f1"] > results["always_allow"].summary()["f1"]


def test_fit_rejects_empty_seeds() -> None:
    with pytest.raises(ValueError, match="seeds"):
        ThresholdDetector.fit(SHORT, [])
