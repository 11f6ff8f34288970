"""Synthetic APT source: determinism, threat rate, containment, breach, sensors, factory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl_bft_rllib.actions import Action
from marl_bft_rllib.events import (
    CONTEXT_NAMES,
    FEATURE_NAMES,
    KILL_CHAIN,
    ReplicaSensors,
    SyntheticAPTSource,
    SyntheticConfig,
    make_source,
)


def run(src, seed, horizon=200, policy=lambda ev, r: int(Action.ALLOW)):
    """Play one episode; return the events, outcomes and the episode object."""
    ep = src.episode(np.random.default_rng(seed), horizon)
    r = np.random.default_rng(seed + 12345)
    events, outcomes = [], []
    while True:
        ev = ep.current()
        events.append(ev)
        out = ep.respond(policy(ev, r))
        outcomes.append(out)
        if out.breached or out.exhausted:
            return events, outcomes, ep


def stream(events):
    """The stream as arrays (features, context, labels, hosts)."""
    return (
        np.stack([e.features for e in events]),
        np.stack([e.context for e in events]),
        np.array([e.label for e in events]),
        np.array([e.host for e in events]),
    )


def test_event_layout_and_types():
    src = SyntheticAPTSource()
    events, _, _ = run(src, 0)
    ev = events[0]
    assert src.feature_names == FEATURE_NAMES and src.context_names == CONTEXT_NAMES
    assert ev.features.shape == (len(FEATURE_NAMES),) and ev.features.dtype == np.float32
    assert ev.context.shape == (len(CONTEXT_NAMES),) and ev.context.dtype == np.float32
    for e in events:
        assert 0 <= e.host < src.n_hosts
        assert (e.label == 1) == (e.campaign >= 0) == (e.stage >= 0)
        assert -1 <= e.stage < len(KILL_CHAIN)
    f, c, _, _ = stream(events)
    assert np.all(np.isfinite(f)) and np.all(np.isfinite(c))
    assert np.abs(f).mean() < 2.0 and np.abs(c).mean() < 2.0  # roughly unit scale


@pytest.mark.parametrize("policy", [lambda ev, r: 0, lambda ev, r: int(r.integers(4))])
def test_same_seed_same_stream_different_seed_differs(policy):
    src = SyntheticAPTSource()
    a = stream(run(src, 7, policy=policy)[0])
    b = stream(run(src, 7, policy=policy)[0])
    c = stream(run(src, 8, policy=policy)[0])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    n = min(len(a[2]), len(c[2]))
    assert not np.array_equal(a[0][:n], c[0][:n])


def test_threat_rate_near_target_and_scales_with_config():
    def rate(cfg, seeds=range(150)):
        src = SyntheticAPTSource(cfg)
        mal = tot = 0
        for s in seeds:
            _, _, y, _ = stream(run(src, s)[0])
            mal, tot = mal + y.sum(), tot + y.size
        return mal / tot

    r = rate(SyntheticConfig())
    assert 0.07 <= r <= 0.11
    assert rate(SyntheticConfig(threat_rate=0.18)) > 1.5 * r


def test_campaign_walks_kill_chain_in_order_and_moves_laterally():
    events, outcomes, _ = run(SyntheticAPTSource(), 3, horizon=400)
    mal = [e for e in events if e.campaign == 0]
    stages = [e.stage for e in mal]
    assert stages == sorted(stages) and stages[0] == 0
    assert outcomes[-1].breached and events[-1].stage == KILL_CHAIN.index("exfiltration")
    lateral = KILL_CHAIN.index("lateral_movement")
    before = {e.host for e in mal if e.stage < lateral}
    after = {e.host for e in mal if e.stage >= lateral}
    assert len(before) == 1 and len(after) == 1 and before != after


def test_always_allow_breaches_and_terminates():
    src = SyntheticAPTSource()
    for seed in range(20):
        events, outcomes, ep = run(src, seed, horizon=400)  # room for the longest lead-in
        assert outcomes[-1].breached, seed
        assert ep.n_campaigns == 1 and ep.contained == (False,)
        assert not any(o.breached for o in outcomes[:-1])
        assert not any(o.contained for o in outcomes)
        with pytest.raises(RuntimeError):
            ep.current()
        with pytest.raises(RuntimeError):
            ep.respond(0)


def test_alert_never_contains():
    src = SyntheticAPTSource()
    _, outcomes, _ = run(src, 4, policy=lambda ev, r: int(Action.ALERT))
    assert outcomes[-1].breached and not any(o.contained for o in outcomes)


def test_quarantine_contains_campaign_and_turns_later_slots_benign():
    src = SyntheticAPTSource()
    events, outcomes, ep = run(src, 5, policy=lambda ev, r: int(Action.QUARANTINE))
    assert not any(o.breached for o in outcomes) and outcomes[-1].exhausted
    assert len(events) == 200
    first = [i for i, o in enumerate(outcomes) if o.contained]
    assert first, "a campaign must have been contained"
    c = events[first[0]].campaign
    assert all(e.campaign != c for e in events[first[0] + 1 :])
    assert ep.contained[c]
    # the same seed under ALLOW shows that campaign's later events do exist
    allow_events, _, _ = run(src, 5)
    assert sum(e.campaign == c for e in allow_events) > sum(e.campaign == c for e in events)


def test_quarantine_contains_more_often_than_block():
    def contained_on_first(action, p_b, p_q):
        src = SyntheticAPTSource(SyntheticConfig(p_contain_block=p_b, p_contain_quarantine=p_q))
        hits = n = 0
        for seed in range(200):
            ep = src.episode(np.random.default_rng(seed), 200)
            while ep.current().label == 0:
                ep.respond(0)
            hits += ep.respond(action).contained
            n += 1
        return hits / n

    qa = contained_on_first(int(Action.QUARANTINE), 0.4, 0.9)
    bl = contained_on_first(int(Action.BLOCK), 0.4, 0.9)
    assert 0.8 <= qa <= 0.97 and 0.28 <= bl <= 0.52


def test_containment_launches_the_next_campaign_after_the_relaunch_gap():
    cfg = SyntheticConfig(p_contain_quarantine=1.0, relaunch_gap=10.0, start_jitter=0.0)
    events, outcomes, ep = run(SyntheticAPTSource(cfg), 2, horizon=400, policy=quarantine_mal)
    contained_at = [i for i, o in enumerate(outcomes) if o.contained]
    assert ep.n_campaigns >= 3 and all(ep.contained[: len(contained_at)])
    assert len(contained_at) >= ep.n_campaigns - 1
    for k, t in enumerate(contained_at[: ep.n_campaigns - 1]):
        first_next = next(i for i, e in enumerate(events) if e.campaign == k + 1)
        assert first_next == t + 10  # no jitter: exactly relaunch_gap slots later
        assert events[first_next].stage == 0
    assert not any(o.breached for o in outcomes)


def quarantine_mal(ev, r):
    """Oracle policy: quarantine exactly the malicious events."""
    return int(Action.QUARANTINE) if ev.label else int(Action.ALLOW)


def test_footholds_are_conspicuous_for_every_campaign():
    src = SyntheticAPTSource()  # default containment odds: campaigns outlive some detections
    first, rest = [], []
    for seed in range(40):
        events, _, _ = run(src, seed, policy=quarantine_mal)
        seen = set()
        for e in events:
            if e.label:
                (rest if e.campaign in seen else first).append(e.features)
                seen.add(e.campaign)
    score = FEATURE_NAMES.index("edr_score")
    assert len(first) > 80  # many campaigns per episode once they are contained
    assert np.mean(first, 0)[score] > np.mean(rest, 0)[score] + 3.0


@pytest.mark.parametrize("reimage", [True, False])
def test_containment_reimages_the_campaign_host(reimage):
    cfg = SyntheticConfig(p_contain_quarantine=1.0, reimage=reimage)
    hits = 0
    for seed in range(10):
        events, outcomes, _ = run(SyntheticAPTSource(cfg), seed, policy=quarantine_mal)
        for i, o in enumerate(outcomes):
            if o.contained:
                h = events[i].host
                nxt = next((e for e in events[i + 1 :] if e.host == h), None)
                if nxt is not None:
                    hits += 1
                    fresh = nxt.context[0] == 0.0 and nxt.context[1] == 0.0
                    assert fresh == reimage
    assert hits > 5


def test_restrictive_on_benign_changes_nothing():
    src = SyntheticAPTSource()
    a, _, _ = run(src, 9, policy=lambda ev, r: 3 if ev.label == 0 else 0)
    b, _, _ = run(src, 9)
    for x, y in zip(stream(a), stream(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_context_is_host_history_before_the_event():
    events, _, _ = run(SyntheticAPTSource(), 11)
    seen: set[int] = set()
    for e in events:
        if e.host not in seen:
            assert e.context[0] == 0.0 and e.context[1] == 0.0  # no history on this host yet
        seen.add(e.host)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_hosts": 1}, "n_hosts"),
        ({"threat_rate": 0.0}, "threat_rate"),
        ({"threat_rate": 0.9}, "threat_rate"),
        ({"stage_events": (3, 1)}, "stage_events"),
        ({"event_spacing": 0.5}, "event_spacing"),
        ({"stage_gap": float("nan")}, "stage_gap"),
        ({"p_contain_block": 1.5}, "p_contain_block"),
        ({"p_contain_block": 0.9, "p_contain_quarantine": 0.5}, "p_contain_quarantine"),
        ({"signal": -1.0}, "signal"),
        ({"max_campaigns": 0}, "max_campaigns"),
        ({"idle_factor": 2.0}, "idle_factor"),
        ({"relaunch_gap": 0.5}, "relaunch_gap"),
        ({"reimage": 1}, "reimage"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**kwargs)


def test_bad_decision_and_horizon_rejected():
    src = SyntheticAPTSource()
    with pytest.raises(ValueError, match="horizon"):
        src.episode(np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match="decision"):
        src.episode(np.random.default_rng(0), 10).respond(4)


def test_make_source():
    src = make_source("synthetic", n_hosts=5, threat_rate=0.12)
    assert isinstance(src, SyntheticAPTSource) and src.n_hosts == 5
    assert src.config.threat_rate == 0.12
    with pytest.raises(ValueError, match="bogus"):
        make_source("synthetic", bogus=1)
    with pytest.raises(ValueError, match="path"):
        make_source("/nonexistent/table.csv")


# -- sensors --------------------------------------------------------------------------------
def test_sensor_scales_and_independence():
    sensors = ReplicaSensors(4, 0.5, np.random.default_rng(0))
    np.testing.assert_allclose(sensors.scales, 0.5 * (1 + 0.2 * np.arange(4)), rtol=1e-6)
    f = np.linspace(-1, 1, 8).astype(np.float32)
    obs = np.stack([sensors.observe(f) for _ in range(4000)])  # (T, 4, 8)
    assert obs.dtype == np.float32 and obs.shape == (4000, 4, 8)
    noise = obs - f
    np.testing.assert_allclose(noise.mean(axis=(0, 2)), 0.0, atol=0.03)
    np.testing.assert_allclose(noise.std(axis=(0, 2)), sensors.scales, rtol=0.05)
    corr = np.corrcoef(noise.transpose(1, 0, 2).reshape(4, -1))
    assert np.abs(corr[~np.eye(4, dtype=bool)]).max() < 0.05


def test_sensor_explicit_scales_zero_noise_and_determinism():
    s = ReplicaSensors(3, [0.0, 1.0, 2.0], np.random.default_rng(1))
    f = np.ones(5, np.float32)
    obs = s.observe(f)
    np.testing.assert_array_equal(obs[0], f)
    assert not np.array_equal(obs[1], f)
    a = ReplicaSensors(3, 0.3, np.random.default_rng(2)).observe(f)
    b = ReplicaSensors(3, 0.3, np.random.default_rng(2)).observe(f)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 0.5), "n_replicas"),
        ((3, -0.1), "noise_scale"),
        ((3, [0.1, 0.2]), "noise_scale"),
        ((3, [0.1, float("inf"), 0.2]), "noise_scale"),
        ((3, "loud"), "noise_scale"),
    ],
)
def test_sensor_errors(args, field):
    with pytest.raises(ValueError, match=field):
        ReplicaSensors(*args, np.random.default_rng(0))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 8),
    scale=st.floats(0.0, 3.0),
    nf=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_sensor_shape_property(n, scale, nf, seed):
    s = ReplicaSensors(n, scale, np.random.default_rng(seed))
    f = np.random.default_rng(seed).standard_normal(nf).astype(np.float32)
    out = s.observe(f)
    assert out.shape == (n, nf) and out.dtype == np.float32
    if scale == 0.0:
        np.testing.assert_array_equal(out, np.broadcast_to(f, (n, nf)))


def test_campaigns_keep_coming_at_long_horizons():
    """Under a detector that contains every campaign, attacks arrive at the same rate late."""
    horizon = 6000
    src = SyntheticAPTSource()
    late_rates, early_rates = [], []
    for seed in range(3):
        ep = src.episode(np.random.default_rng(seed), horizon)
        labels = []
        for _ in range(horizon):
            event = ep.current()
            labels.append(event.label)
            outcome = ep.respond(int(Action.QUARANTINE) if event.label else int(Action.ALLOW))
            if outcome.breached or outcome.exhausted:
                break
        labels = np.array(labels)
        assert labels.size == horizon  # never breached: every campaign was contained
        assert ep.n_campaigns > src.config.max_campaigns  # more than one block was drawn
        early_rates.append(labels[: horizon // 2].mean())
        late_rates.append(labels[horizon // 2 :].mean())
    early, late = np.mean(early_rates), np.mean(late_rates)
    assert late > 0.5 * early > 0, (early, late)
