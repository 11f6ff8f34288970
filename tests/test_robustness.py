"""The robustness report: every Byzantine behaviour pinned in turn, none, insider, learned."""

from __future__ import annotations

import numpy as np
import pytest

from marl_bft_rllib.bft import ATTACKER_STRATEGIES, BEHAVIORS, N_STRATEGIES
from marl_bft_rllib.env import BFTSecurityEnv
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.evaluation import (
    INSIDER_CASE,
    LEARNED_CASE,
    NO_BYZANTINE,
    ROBUSTNESS_METHODS,
    ThresholdDetector,
    always_allow,
    insider_attacker,
    robustness_case_config,
    robustness_cases,
    robustness_report,
    run_episodes,
    with_attackers,
)

BASE = {"horizon": 120}  # shorter: no campaign reaches the held-out episodes
SEEDS = [10**6, 10**6 + 1, 10**6 + 2]


@pytest.fixture(scope="module")
def detector() -> ThresholdDetector:
    return ThresholdDetector.fit(BASE, range(4))


def random_attacker(seed: int = 0):
    """A seeded uniformly random strategy for every attacker id."""
    rng = np.random.default_rng(seed)

    def act(obs):
        return {a: int(rng.integers(N_STRATEGIES)) for a in obs}

    return act


# -- robustness_case_config ---------------------------------------------------------------------
@pytest.mark.parametrize("case", BEHAVIORS)
def test_case_pins_one_behaviour(case) -> None:
    base = {**BASE, "byzantine_behaviors": ("silent", "random"), "decision_rule": "majority"}
    cfg = robustness_case_config(base, case)
    assert cfg["byzantine_behaviors"] == (case,)
    assert cfg["n_byzantine"] == 1 and cfg["adversary"] == "scripted"
    assert cfg["decision_rule"] == "pbft" and cfg["horizon"] == 120
    env = BFTSecurityEnv(cfg)
    env.reset(seed=3)
    assert list(env._consensus.behaviors.values()) == [case]


def test_case_none_and_learned() -> None:
    none = robustness_case_config({**BASE, "byzantine_replicas": (0,)}, NO_BYZANTINE)
    assert none["n_byzantine"] == 0 and none["byzantine_replicas"] is None
    assert len(BFTSecurityEnv(none).reset(seed=0)[0]) == 4  # every replica honest

    learned_base = {**BASE, "adversary": "learned", "attacker_reward": "negative_team"}
    learned = robustness_case_config(learned_base, LEARNED_CASE)
    assert learned["adversary"] == "learned" and learned["attacker_reward"] == "negative_mean"
    assert learned["byzantine_behaviors"] == BEHAVIORS
    env = BFTSecurityEnv(learned)
    assert env.possible_agents == ["defender_0", "defender_1", "defender_2", "attacker_0"]
    # A learned training config back to a scripted case: the adversary fields are reset.
    assert robustness_case_config(learned_base, "silent")["adversary"] == "scripted"


def test_case_attacker_strategies_kept_only_for_the_learned_case() -> None:
    votes = ATTACKER_STRATEGIES[:4]
    base = {**BASE, "adversary": "learned", "attacker_strategies": votes}
    learned = robustness_case_config(base, LEARNED_CASE)
    assert learned["attacker_strategies"] == votes  # the attacker module's actions
    assert BFTSecurityEnv(learned).action_space("attacker_0").n == 4
    insider = robustness_case_config(base, INSIDER_CASE)  # its actions index the full table
    assert insider["attacker_strategies"] == ATTACKER_STRATEGIES
    for case in ("silent", NO_BYZANTINE):
        assert robustness_case_config(base, case)["attacker_strategies"] == ATTACKER_STRATEGIES


def test_case_keeps_pinned_byzantine_ids() -> None:
    cfg = robustness_case_config({**BASE, "byzantine_replicas": (0,)}, "selective_primary")
    assert cfg["byzantine_replicas"] == (0,)


@pytest.mark.parametrize("case", ["nope", "", "LEARNED", "vote_allow"])
def test_unknown_case_is_an_error(case) -> None:
    with pytest.raises(ValueError, match="^case: "):
        robustness_case_config(BASE, case)


def test_behaviour_case_without_byzantine_is_an_error() -> None:
    with pytest.raises(ValueError, match="^case: .*n_byzantine 0"):
        robustness_case_config({**BASE, "n_byzantine": 0}, "silent")
    assert robustness_cases({"n_byzantine": 0}, learned=True) == [NO_BYZANTINE]
    assert robustness_cases(BASE) == [*BEHAVIORS, NO_BYZANTINE, INSIDER_CASE]
    assert robustness_cases(BASE, insider=False) == [*BEHAVIORS, NO_BYZANTINE]
    assert robustness_cases(BASE, learned=True)[-2:] == [INSIDER_CASE, LEARNED_CASE]
    with pytest.raises(ValueError, match="^case: .*n_byzantine 0"):
        robustness_case_config({**BASE, "n_byzantine": 0}, INSIDER_CASE)


# -- the scripted insider ---------------------------------------------------------------------
def test_insider_votes_against_the_label_in_the_attacker_seat() -> None:
    cfg = robustness_case_config({}, INSIDER_CASE)  # the default horizon: campaigns come
    assert cfg["adversary"] == "learned"
    env = BFTSecurityEnv(cfg)
    assert env.observation_layout("attacker_0")["label"] == slice(env.obs_dim, env.obs_dim + 1)
    own_last = env.observation_layout("attacker_0")["own_votes"].start  # its last signed vote
    obs, _ = env.reset(seed=5)
    play = with_attackers(always_allow, insider_attacker)
    signed, labels = [], []
    while env.agents:
        labels.append(int(obs["attacker_0"][-1]))
        obs, *_ = env.step(play(obs))
        if env.agents:
            signed.append(round(float(obs["attacker_0"][own_last]) * 3))
    labels, signed = np.array(labels[: len(signed)]), np.array(signed)
    assert 0 < labels.sum() < len(labels)  # both kinds of event seen
    assert (signed[labels == 1] == 0).all() and (signed[labels == 0] == 3).all()
    assert (
        ATTACKER_STRATEGIES[insider_attacker({"attacker_0": np.array([0.3, 1.0])})["attacker_0"]]
        == "vote_allow"
    )


# -- with_attackers --------------------------------------------------------------------------
def test_with_attackers_routes_ids() -> None:
    seen: dict[str, list[str]] = {"def": [], "att": []}

    def defenders(obs):
        seen["def"].extend(obs)
        return dict.fromkeys(obs, 2)

    def attackers(obs):
        seen["att"].extend(obs)
        return dict.fromkeys(obs, 7)

    obs = {a: np.zeros(3) for a in ("defender_0", "defender_1", "attacker_0", "attacker_1")}
    acts = with_attackers(defenders, attackers)(obs)
    assert acts == {"defender_0": 2, "defender_1": 2, "attacker_0": 7, "attacker_1": 7}
    assert seen == {"def": ["defender_0", "defender_1"], "att": ["attacker_0", "attacker_1"]}
    # scripted ids: all defenders, no attacker policy needed
    assert with_attackers(defenders, None)({"replica_2": np.zeros(3)}) == {"replica_2": 2}


def test_with_attackers_without_attacker_policy_is_an_error() -> None:
    play = with_attackers(always_allow, None)
    with pytest.raises(ValueError, match="^attackers: "):
        play({"defender_0": np.zeros(3), "attacker_0": np.zeros(4)})


# -- robustness_report -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(detector) -> dict:
    cases = ["always_quarantine", "equivocate", NO_BYZANTINE, LEARNED_CASE]
    return robustness_report(
        detector, BASE, SEEDS, threshold=detector, attacker=random_attacker(), cases=cases
    )


def test_report_structure(report) -> None:
    assert set(report) == {"cases", "worst", "bft_at_least"}
    assert list(report["cases"]) == ["always_quarantine", "equivocate", NO_BYZANTINE, LEARNED_CASE]
    for case, scores in report["cases"].items():
        assert list(scores) == list(ROBUSTNESS_METHODS), case
        for method, s in scores.items():
            assert set(s) == {"f1", "breach_rate", "episodes"}
            assert s["episodes"] == len(SEEDS)
            assert 0.0 <= s["f1"] <= 1.0 and 0.0 <= s["breach_rate"] <= 1.0, (case, method)
    assert set(report["worst"]) == set(ROBUSTNESS_METHODS)
    assert set(report["bft_at_least"]) == set(report["cases"])


def test_always_allow_detects_nothing_in_every_case(report) -> None:
    for case, scores in report["cases"].items():
        assert scores["always_allow"]["f1"] == 0.0, case
    # and something else does detect: the F1 values are not all zero
    assert max(s["threshold"]["f1"] for s in report["cases"].values()) > 0.0


def test_worst_case_bookkeeping(report) -> None:
    cases = report["cases"]
    for method, worst in report["worst"].items():
        f1s = {c: cases[c][method]["f1"] for c in cases}
        breaches = {c: cases[c][method]["breach_rate"] for c in cases}
        assert worst["f1"] == min(f1s.values()), method
        assert f1s[worst["case"]] == worst["f1"]
        assert worst["breach_rate"] == max(breaches.values())
        assert breaches[worst["breach_case"]] == worst["breach_rate"]
    for case, ok in report["bft_at_least"].items():
        s = cases[case]
        assert ok == (
            s["bft_policy"]["f1"] >= max(s["naive_majority"]["f1"], s["random_replica"]["f1"])
        )


def vote_by_index(obs):
    """replica_i votes severity i % 4: the honest votes split, a Byzantine vote tips the tally."""
    return {a: int(a.rsplit("_", 1)[1]) % 4 for a in obs}


def test_cases_really_differ(report) -> None:
    # The same policy on the same seeds decides differently with another behaviour pinned.
    quarantine, none = report["cases"]["always_quarantine"], report["cases"][NO_BYZANTINE]
    assert quarantine != none

    def restrictive(case: str) -> tuple[int, int]:
        config = {**robustness_case_config(BASE, case), "decision_rule": "majority"}
        counts = run_episodes(vote_by_index, config, SEEDS).counts()
        return counts["tp"] + counts["fp"], sum(counts.values())

    # A naive plurality follows the Byzantine vote when the honest votes split.
    n_restrictive, steps = restrictive("always_quarantine")
    assert n_restrictive == steps > 0
    assert restrictive("always_allow")[0] == 0


def test_rows_use_their_decision_rules(detector) -> None:
    case = "always_quarantine"
    rep = robustness_report(vote_by_index, BASE, SEEDS, threshold=detector, cases=[case])
    scores = rep["cases"][case]
    config = robustness_case_config(BASE, case)
    for method, rule in (
        ("bft_policy", "pbft"),
        ("naive_majority", "majority"),
        ("random_replica", "random_replica"),
    ):
        direct = run_episodes(vote_by_index, {**config, "decision_rule": rule}, SEEDS).summary()
        assert scores[method]["f1"] == direct["f1"], method
    # the three rules really decide differently on these votes
    assert len({scores[m]["f1"] for m in ("bft_policy", "naive_majority", "random_replica")}) == 3


def test_learned_case_with_random_attacker(report, detector) -> None:
    learned = report["cases"][LEARNED_CASE]
    assert learned["always_allow"]["f1"] == 0.0
    # the attacker policy acts: a different attacker changes the outcome of some row
    other = robustness_report(
        detector,
        BASE,
        SEEDS,
        threshold=detector,
        attacker=lambda obs: dict.fromkeys(obs, 3),  # always vote Quarantine
        cases=[LEARNED_CASE],
    )
    assert other["cases"][LEARNED_CASE] != learned


def test_report_errors(detector) -> None:
    with pytest.raises(ValueError, match="^cases: 'learned' needs an attacker"):
        robustness_report(detector, BASE, SEEDS, threshold=detector, cases=[LEARNED_CASE])
    with pytest.raises(ValueError, match="^case: "):  # validated before any episode runs
        robustness_report(detector, BASE, SEEDS, threshold=detector, cases=["silent", "nope"])
    with pytest.raises(ValueError, match="^cases: duplicates"):
        robustness_report(detector, BASE, SEEDS, threshold=detector, cases=["silent", "silent"])
    with pytest.raises(ValueError, match="^seeds: "):
        robustness_report(detector, BASE, [], threshold=detector)


def test_default_cases_without_attacker(detector) -> None:
    rep = robustness_report(detector, {**BASE, "horizon": 10}, SEEDS[:1], threshold=detector)
    assert list(rep["cases"]) == [*BEHAVIORS, NO_BYZANTINE, INSIDER_CASE]
    assert EnvConfig.from_any(BASE).adversary == "scripted"


# -- experiments/evaluate.py: learned checkpoints -------------------------------------------------
@pytest.fixture(scope="module")
def eval_mod():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_mapping_with_attacker_module(eval_mod) -> None:
    scripted = [f"replica_{i}" for i in range(4)]
    learned = ["defender_0", "defender_1", "defender_2", "attacker_0"]
    mapping = eval_mod.module_mapping(["shared", "attacker"], scripted + learned)
    assert {a: mapping(a) for a in scripted + learned} == {
        **dict.fromkeys(scripted + learned[:3], "shared"),
        "attacker_0": "attacker",
    }
    own = eval_mod.module_mapping(scripted, scripted)
    assert own("replica_2") == "replica_2"
    with pytest.raises(eval_mod.EvaluationError, match="no 'attacker' module"):
        eval_mod.module_mapping(["shared"], learned)
    with pytest.raises(eval_mod.EvaluationError, match="do not cover"):
        eval_mod.module_mapping(scripted, learned[:3])
    with pytest.raises(eval_mod.EvaluationError, match="no defender module"):
        eval_mod.split_modules({"attacker": object()})


def test_scripted_env_config_of_learned_training(eval_mod) -> None:
    trained = {"horizon": 60, "adversary": "learned", "attacker_reward": "negative_team"}
    cfg = eval_mod.scripted_env_config(trained)
    assert cfg == {"horizon": 60, "adversary": "scripted"}
    assert BFTSecurityEnv(cfg).possible_agents[0] == "replica_0"
    assert eval_mod.scripted_env_config({"horizon": 60}) == {"horizon": 60}


def test_attacker_module_id_and_space_check(eval_mod) -> None:
    from types import SimpleNamespace

    from gymnasium import spaces

    from marl_bft_rllib.rllib.config import ATTACKER_POLICY

    assert eval_mod.ATTACKER_MODULE == ATTACKER_POLICY
    env = BFTSecurityEnv(robustness_case_config(BASE, LEARNED_CASE))
    box = env.observation_space("attacker_0")
    good = SimpleNamespace(observation_space=box, action_space=spaces.Discrete(N_STRATEGIES))
    eval_mod.check_spaces({"attacker": good}, env, "--scenario", agent="attacker_0")
    with pytest.raises(eval_mod.EvaluationError, match="observation shape"):  # a defender's
        eval_mod.check_spaces({"attacker": good}, env, "--scenario")
    bad = SimpleNamespace(observation_space=box, action_space=spaces.Discrete(4))
    with pytest.raises(eval_mod.EvaluationError, match="action space"):
        eval_mod.check_spaces({"attacker": bad}, env, "--scenario", agent="attacker_0")


@pytest.mark.parametrize("value", ["-1", "two"])
def test_robustness_episodes_flag_is_validated(eval_mod, capsys, value) -> None:
    with pytest.raises(SystemExit) as exc:
        eval_mod.main(["--checkpoint", "/nonexistent", "--robustness-episodes", value])
    assert exc.value.code == 2
    assert "--robustness-episodes" in capsys.readouterr().err


def test_robustness_section_learned_case_or_why_not(eval_mod, detector, tmp_path) -> None:
    from types import SimpleNamespace

    from gymnasium import spaces

    short = {**BASE, "horizon": 20}
    env = BFTSecurityEnv(robustness_case_config(short, LEARNED_CASE))
    attacker = SimpleNamespace(
        observation_space=env.observation_space("attacker_0"),
        action_space=spaces.Discrete(N_STRATEGIES),
    )
    play = with_attackers(always_allow, random_attacker())
    run = eval_mod.robustness_section
    shared = run(play, {"shared": None}, attacker, short, SEEDS[:1], detector, "--scenario")
    assert list(shared["cases"])[-2:] == [INSIDER_CASE, LEARNED_CASE]
    assert shared["skipped"] == {}
    assert shared["episodes"] == 1 and shared["seeds"] == [SEEDS[0], SEEDS[0]]
    per_replica = dict.fromkeys((f"replica_{i}" for i in range(4)), None)
    own = run(play, per_replica, attacker, short, SEEDS[:1], detector, "--scenario")
    for case in (LEARNED_CASE, INSIDER_CASE):
        assert case not in own["cases"] and "one module per replica" in own["skipped"][case]
    scripted = run(play, {"shared": None}, None, short, SEEDS[:1], detector, "--scenario")
    assert LEARNED_CASE not in scripted["cases"] and INSIDER_CASE in scripted["cases"]
    assert "no 'attacker' module" in scripted["skipped"][LEARNED_CASE]
    text = eval_mod.format_robustness(shared)
    assert text.splitlines()[-1].startswith("worst") and LEARNED_CASE in text
    import matplotlib

    matplotlib.use("Agg")
    eval_mod.plot_robustness(shared, tmp_path / "robustness.png")
    assert (tmp_path / "robustness.png").stat().st_size > 10_000
