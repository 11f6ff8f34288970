"""The difficulty contract of the default synthetic scenario.

A per-event detector on the clean current-event features must stay at F1 <= 0.75 on
held-out episodes, while a logistic regression that also sees the host context must
reach F1 >= 0.9. Open-loop data: 300 episodes under a never-containing (ALLOW) policy,
so every campaign runs until its breach; detectors are fit on 200 episodes and scored
on 100. Closed-loop: the same detectors, fit open-loop, then decide held-out episodes
themselves (a detection answers BLOCK or QUARANTINE, which may contain the campaign and
bring the next one), as the env's agents do; the contract must hold there too.
"""

from __future__ import annotations

import numpy as np
import pytest

from marl_bft_rllib.actions import Action
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.events import ReplicaSensors, SyntheticAPTSource
from marl_bft_rllib.metrics import confusion_counts, detection_scores

N_EPISODES, N_TRAIN, HORIZON = 300, 200, 200
N_CLOSED = 100  # closed-loop held-out episodes
NOISE = EnvConfig().sensor_noise  # the env's default, read, never copied


def f1(labels: np.ndarray, detected: np.ndarray) -> float:
    """F1 via the project's metrics module."""
    return detection_scores(confusion_counts(labels, detected))["f1"]


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3):
    """A tiny L2-regularised logistic regression fit by Newton's method; returns predict_proba."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    eye = l2 * np.eye(len(w))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) / len(y) + l2 * w
        hess = (z * (p * (1 - p))[:, None]).T @ z / len(y) + eye
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break

    def predict(x2: np.ndarray) -> np.ndarray:
        z2 = np.hstack([(x2 - mu) / sd, np.ones((len(x2), 1))])
        return 1.0 / (1.0 + np.exp(-(z2 @ w)))

    return predict


def best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    """The threshold on ``score`` with the best training F1."""
    cands = np.unique(np.quantile(score, np.linspace(0.5, 0.999, 300)))
    return float(max(cands, key=lambda t: f1(y, score >= t)))


@pytest.fixture(scope="module")
def data():
    """Features, context, labels and episode ids of the never-containing rollouts."""
    src = SyntheticAPTSource()
    feats, ctx, labels, eps = [], [], [], []
    for seed in range(N_EPISODES):
        ep = src.episode(np.random.default_rng(seed), HORIZON)
        while True:
            ev = ep.current()
            feats.append(ev.features)
            ctx.append(ev.context)
            labels.append(ev.label)
            eps.append(seed)
            out = ep.respond(0)
            if out.breached or out.exhausted:
                break
    return (
        np.array(feats, np.float64),
        np.array(ctx, np.float64),
        np.array(labels),
        np.array(eps),
    )


def held_out_f1(x: np.ndarray, y: np.ndarray, eps: np.ndarray) -> float:
    """Fit on the training episodes (threshold included), score on the held-out ones."""
    tr, te = eps < N_TRAIN, eps >= N_TRAIN
    model = fit_logistic(x[tr], y[tr])
    thr = best_threshold(model(x[tr]), y[tr])
    return f1(y[te], model(x[te]) >= thr)


def test_positives_are_a_minority_in_both_halves(data):
    _, _, y, eps = data
    assert 0.05 < y[eps < N_TRAIN].mean() < 0.13 and 0.05 < y[eps >= N_TRAIN].mean() < 0.13


def test_current_event_features_alone_stay_hard(data):
    x, _, y, eps = data
    score = held_out_f1(x, y, eps)
    assert 0.4 < score <= 0.75, score  # measured 0.634: learnable but far from solved
    tr, te = eps < N_TRAIN, eps >= N_TRAIN
    for j in range(x.shape[1]):  # no single feature threshold does better
        thr = best_threshold(x[tr, j], y[tr])
        assert f1(y[te], x[te, j] >= thr) <= 0.75


def test_features_plus_context_reach_high_f1(data):
    x, c, y, eps = data
    score = held_out_f1(np.hstack([x, c]), y, eps)
    assert score >= 0.9, score  # measured 0.973


def test_one_noisy_replica_plus_context_still_reaches_high_f1(data):
    x, c, y, eps = data
    noisy = ReplicaSensors(1, NOISE, np.random.default_rng(0))
    xn = np.stack([noisy.observe(f.astype(np.float32))[0] for f in x])
    score = held_out_f1(np.hstack([xn, c]), y, eps)
    assert score >= 0.9, score  # measured 0.966 at the env's default sensor noise 0.5


def test_context_is_what_makes_the_difference(data):
    x, c, y, eps = data
    assert held_out_f1(np.hstack([x, c]), y, eps) - held_out_f1(x, y, eps) >= 0.15


def fit_on_train(x: np.ndarray, y: np.ndarray, eps: np.ndarray):
    """Fit the logistic regression and its best-F1 threshold on the training episodes."""
    tr = eps < N_TRAIN
    model = fit_logistic(x[tr], y[tr])
    return model, best_threshold(model(x[tr]), y[tr])


def closed_loop(model, thr: float, action: int, *, context: bool, noisy: bool):
    """Let the detector decide held-out episodes: pooled F1 and the number of breaches.

    With ``noisy``, three replicas see the event through independent sensors and the
    median of their scores decides (a stand-in for the BFT vote); otherwise the clean
    features are scored once. A detection answers ``action``, anything else ALLOW.
    """
    src = SyntheticAPTSource()
    labels, detected, breaches = [], [], 0
    for seed in range(10_000, 10_000 + N_CLOSED):
        ep = src.episode(np.random.default_rng(seed), HORIZON)
        sensors = ReplicaSensors(3, NOISE, np.random.default_rng(seed + 1))
        while True:
            ev = ep.current()
            obs = sensors.observe(ev.features) if noisy else ev.features[None]
            if context:
                obs = np.hstack([obs, np.broadcast_to(ev.context, (len(obs), ev.context.size))])
            hit = bool(np.median(model(obs.astype(np.float64))) >= thr)
            labels.append(ev.label)
            detected.append(hit)
            out = ep.respond(action if hit else int(Action.ALLOW))
            breaches += out.breached
            if out.breached or out.exhausted:
                break
    return f1(np.array(labels), np.array(detected)), breaches


@pytest.mark.parametrize("action", [Action.BLOCK, Action.QUARANTINE])
def test_context_detector_in_the_loop_reaches_high_f1(data, action):
    x, c, y, eps = data
    noisy = ReplicaSensors(1, NOISE, np.random.default_rng(0))
    xn = np.stack([noisy.observe(f.astype(np.float32))[0] for f in x])
    model, thr = fit_on_train(np.hstack([xn, c]), y, eps)
    score, breaches = closed_loop(model, thr, int(action), context=True, noisy=True)
    assert score >= 0.9, score  # measured 0.977 (BLOCK), 0.971 (QUARANTINE)
    assert breaches <= 5, breaches  # measured 2 (BLOCK), 0 (QUARANTINE) of 100 episodes


@pytest.mark.parametrize("action", [Action.BLOCK, Action.QUARANTINE])
def test_clean_feature_detector_in_the_loop_stays_weak(data, action):
    x, _, y, eps = data
    model, thr = fit_on_train(x, y, eps)
    score, _ = closed_loop(model, thr, int(action), context=False, noisy=False)
    assert score <= 0.75, score  # measured 0.675 (BLOCK), 0.631 (QUARANTINE): footholds only
