"""Greedy evaluation rollouts and baselines on ``BFTSecurityEnv``, without Ray or torch.

A *policy* here is any function from the live agents' observations to their actions,
``policy(obs: dict[str, np.ndarray]) -> dict[str, int]``. ``run_episodes`` plays it on
fixed seeds (held-out ones by default) and aggregates the env's episode-end metrics with
``marl_bft_rllib.metrics``. Baselines:

- ``always_allow``: every honest replica votes Allow.
- ``ThresholdDetector``: a per-event linear detector over a replica's noisy view of the
  current event (Fisher discriminant direction, threshold chosen to maximise F1), fitted
  on training seeds; each honest replica applies it to its own sensor and votes.
- ``SupervisedDetector`` (``supervised``): the "what is learnable" reference: an
  L2-regularised logistic regression on a replica's whole observation (event features,
  host context, vote and decision history, protocol view), trained on the true labels of
  training episodes, its data gathered DAgger-style in closed loop with its own votes;
  each honest replica applies it to its own observation and votes.
- ``single_replica``: one replica decides alone: every honest replica votes that
  replica's greedy action, so the committed decision is that replica's action (b <= f);
  consensus still runs, so an undecided step still falls back to the fail-safe action.

Robustness (``robustness_report``): every row of ``ROBUSTNESS_METHODS`` (the BFT
ensemble, the naive majority vote, one random replica, one honest replica,
always-allow, the threshold detector) under every Byzantine behaviour pinned in turn,
no Byzantine replica, the scripted ``insider_attacker`` and a learned attacker, on the
same episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from marl_bft_rllib.actions import Action
from marl_bft_rllib.bft import ATTACKER_STRATEGIES, BEHAVIORS
from marl_bft_rllib.env import ATTACKER_PREFIX, BFTSecurityEnv
from marl_bft_rllib.env_config import (
    ADVERSARIES,
    ATTACKER_REWARDS,
    HELD_OUT_SEED_OFFSET,
    EnvConfig,
)
from marl_bft_rllib.metrics import (
    CONFUSION_KEYS,
    add_counts,
    detection_report,
    mean_reports,
)

Policy = Callable[[Mapping[str, np.ndarray]], Mapping[str, int]]
LogitsFn = Callable[[np.ndarray], np.ndarray]

_SCORE_KEYS = ("precision", "recall", "f1", "accuracy")


def held_out_seeds(episodes: int, offset: int = HELD_OUT_SEED_OFFSET) -> list[int]:
    """The reset seeds of ``episodes`` evaluation episodes, starting at ``offset``."""
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {episodes}")
    if offset < 0:
        raise ValueError(f"seed_offset: must be >= 0, got {offset}")
    return list(range(offset, offset + episodes))


@dataclass
class EvalResult:
    """Per-episode metrics of one policy, and their aggregate."""

    name: str
    episodes: list[dict[str, float]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """TP / TN / FP / FN summed over all episodes."""
        total: dict[str, int] = {}
        for ep in self.episodes:
            total = add_counts(total, {k: int(ep[k]) for k in CONFUSION_KEYS})
        return total

    def summary(self) -> dict[str, float]:
        """Pooled detection scores (from summed counts) and episode means of everything else.

        ``precision`` / ``recall`` / ``f1`` / ``accuracy`` are computed from the pooled
        confusion counts; ``episode_f1_mean`` is the mean of the per-episode F1 (what RLlib's
        episode metrics average). ``episodes`` is the number of episodes.
        """
        means = mean_reports(self.episodes)
        out = {k: v for k, v in means.items() if k not in CONFUSION_KEYS + _SCORE_KEYS}
        out.update(detection_report(self.counts()))
        out["episode_f1_mean"] = means.get("f1", 0.0)
        out["episodes"] = float(len(self.episodes))
        return out


def run_episodes(
    policy: Policy,
    env_config: EnvConfig | Mapping[str, Any] | None,
    seeds: Sequence[int],
    name: str = "policy",
) -> EvalResult:
    """Play one episode per seed with ``policy`` and collect each episode's end metrics.

    Each episode's entry holds the env's ``episode_metrics`` plus ``return`` (the mean over
    honest replicas of their summed rewards).
    """
    env = BFTSecurityEnv(env_config)
    result = EvalResult(name)
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        returns = dict.fromkeys(env.agents, 0.0)
        metrics: dict[str, float] | None = None
        while env.agents:
            obs, rewards, _, _, infos = env.step(dict(policy(obs)))
            for agent, r in rewards.items():
                returns[agent] += r
            if not env.agents:
                metrics = next(iter(infos.values()))["episode_metrics"]
        assert metrics is not None
        ep = {k: float(v) for k, v in metrics.items()}
        ep["return"] = float(np.mean(list(returns.values()))) if returns else 0.0
        result.episodes.append(ep)
    env.close()
    return result


# -- policies ------------------------------------------------------------------------------
def always_allow(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Baseline: every replica votes Allow on every event."""
    return dict.fromkeys(obs, int(Action.ALLOW))


def random_policy(seed: int = 0) -> Policy:
    """Every replica votes a uniformly random action (seeded)."""
    rng = np.random.default_rng(seed)

    def act(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """A uniformly random action for every replica in ``obs``."""
        acts = rng.integers(0, len(Action), len(obs))
        return {a: int(x) for a, x in zip(obs, acts, strict=True)}

    return act


def greedy_policy(
    logits_fns: Mapping[str, LogitsFn], module_for_agent: Callable[[str], str]
) -> Policy:
    """Argmax of each module's action logits; agents sharing a module are batched together.

    ``logits_fns[module_id](obs_batch) -> logits`` with shapes ``(B, obs_dim) -> (B, 4)``.
    """

    def act(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """The argmax action of its module's logits for every replica in ``obs``."""
        groups: dict[str, list[str]] = {}
        for agent in obs:
            groups.setdefault(module_for_agent(agent), []).append(agent)
        actions: dict[str, int] = {}
        for module_id, agents in groups.items():
            batch = np.stack([obs[a] for a in agents])
            best = np.asarray(logits_fns[module_id](batch)).argmax(axis=-1)
            actions.update(zip(agents, best.tolist(), strict=True))
        return actions

    return act


def single_replica(policy: Policy, replica: str | None = None) -> Policy:
    """One replica decides alone: every honest replica votes that replica's action.

    ``replica`` is the deciding agent when it is honest in the episode; otherwise (or when
    ``None``) the first honest replica decides.
    """

    def act(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """The deciding replica's action, given to every replica in ``obs``."""
        who = replica if replica in obs else next(iter(obs))
        action = int(policy({who: obs[who]})[who])
        return dict.fromkeys(obs, action)

    return act


# -- detectors trained on labels ----------------------------------------------------------
def threshold_votes(
    scores: Callable[[np.ndarray], np.ndarray], threshold: float, obs: Mapping[str, np.ndarray]
) -> dict[str, int]:
    """Block for each replica whose observation scores above ``threshold``, else Allow."""
    agents = list(obs)
    hit = scores(np.stack([obs[a] for a in agents])) > threshold
    return {a: int(Action.BLOCK if h else Action.ALLOW) for a, h in zip(agents, hit, strict=True)}


def _collect(
    env: BFTSecurityEnv, seeds: Sequence[int], policy: Policy
) -> tuple[np.ndarray, np.ndarray]:
    """Every honest replica's observation and its event's true label, over episodes ``seeds``.

    ``policy`` votes at every step, so the history slices of the observations are those it
    produces. Returns ``(obs, labels)`` of shapes ``(N, obs_dim)`` (float64) and ``(N,)``
    (bool), one row per replica and step.
    """
    xs: list[np.ndarray] = [np.empty((0, env.obs_dim), np.float32)]
    ys: list[np.ndarray] = [np.empty(0, np.int8)]
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        while env.agents:
            batch = np.stack(list(obs.values()))
            obs_next, _, _, _, infos = env.step(dict(policy(obs)))
            label = next(iter(infos.values()))["label"]  # the label of the event just decided
            xs.append(batch)
            ys.append(np.full(len(batch), label, np.int8))
            obs = obs_next
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(bool)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method: ``(mean, scale, weights, bias)``.

    Inputs are standardised (``(x - mean) / scale``; a constant column keeps scale 1 and
    gets weight 0), the logit is ``standardised @ weights + bias``, and the penalty
    ``l2 / 2 * |weights|^2`` leaves the bias free. Deterministic.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.ndim != 2 or len(x) == 0 or len(x) != len(y):
        raise ValueError("x and y must be a non-empty (N, D) matrix and N labels")
    if l2 <= 0:
        raise ValueError(f"l2: must be > 0, got {l2!r}")
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 1e-9  # the bias: unpenalised, up to a ridge that keeps the Hessian invertible
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * (z @ w)))  # the logistic function, without overflow
        grad = z.T @ (p - y) / len(y) + penalty * w
        # einsum, not a BLAS matmul: multithreaded OpenBLAS GEMM on a busy machine was ~100x
        # slower than this single-threaded loop for these (N, ~30) matrices.
        gram = np.einsum("ni,nj->ij", z * (p * (1.0 - p))[:, None], z, optimize=False)
        hess = gram / len(y) + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return mean, scale, w[:-1], float(w[-1])


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold ``t`` maximising the F1 of ``scores > t`` against ``labels``, and that F1."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.size == 0 or s.shape != y.shape:
        raise ValueError("scores and labels must be non-empty and of equal shape")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Predicting positive for the top k scores, for every k at a change of score.
    tp = np.cumsum(y_sorted)
    k = np.arange(1, s.size + 1)
    last_of_tie = np.append(s_sorted[1:] != s_sorted[:-1], True)
    f1 = np.where(last_of_tie, 2 * tp / (k + y.sum()), -1.0)
    i = int(f1.argmax())
    if f1[i] <= 0.0:  # no positives among the scores: detect nothing
        return float(s_sorted[0]), 0.0
    nxt = s_sorted[i + 1] if i + 1 < s.size else s_sorted[i] - 1.0
    return float(0.5 * (s_sorted[i] + nxt)), float(f1[i])


@dataclass
class ThresholdDetector:
    """Per-event linear detector: vote Block where ``features @ weights > threshold``."""

    weights: np.ndarray
    threshold: float
    feature_slice: slice
    train_f1: float = 0.0

    def scores(self, obs_batch: np.ndarray) -> np.ndarray:
        """Linear scores of a batch of observations."""
        return np.asarray(obs_batch)[..., self.feature_slice] @ self.weights

    def __call__(self, obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Each replica votes Block when its own noisy view of the event scores high."""
        return threshold_votes(self.scores, self.threshold, obs)

    @classmethod
    def fit(
        cls,
        env_config: EnvConfig | Mapping[str, Any] | None,
        seeds: Sequence[int],
        collect: Policy | None = None,
    ) -> ThresholdDetector:
        """Fit on the replicas' observations of the events of training episodes ``seeds``.

        Data are collected under ``collect`` (default: uniformly random votes, so campaigns
        are sometimes contained and sometimes not). The direction is Fisher's discriminant
        of the noisy event features; the threshold maximises F1 over all collected samples.
        """
        env = BFTSecurityEnv(env_config)
        feats = env.observation_layout()["features"]
        x, y = _collect(env, seeds, collect or random_policy(0))
        env.close()
        if not len(x):
            raise ValueError("seeds: no training episodes to fit the threshold detector on")
        x = x[:, feats]
        if y.all() or not y.any():
            raise ValueError("seeds: training episodes need both benign and malicious events")
        mu0, mu1 = x[~y].mean(0), x[y].mean(0)
        cov = np.cov(x[~y], rowvar=False) + np.cov(x[y], rowvar=False)
        cov = np.atleast_2d(cov) + 1e-6 * np.eye(x.shape[1])
        w = np.linalg.solve(cov, mu1 - mu0)
        w /= np.linalg.norm(w) or 1.0
        threshold, f1 = best_f1_threshold(x @ w, y)
        return cls(weights=w, threshold=threshold, feature_slice=feats, train_f1=f1)


@dataclass
class SupervisedDetector:
    """Logistic regression on a replica's whole observation: vote Block where the logit is high.

    The "what is learnable" reference: trained on the true labels, it sees everything the
    RL policy sees (event features, host context, history, protocol view) and nothing more.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    train_f1: float = 0.0
    rounds: int = 1
    train_episodes: int = 0

    def scores(self, obs_batch: np.ndarray) -> np.ndarray:
        """Logits (log-odds of a malicious event) of a batch of observations."""
        x = np.asarray(obs_batch, dtype=np.float64)
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def __call__(self, obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Each replica votes Block when its own observation scores above the threshold."""
        return threshold_votes(self.scores, self.threshold, obs)

    @classmethod
    def fit(
        cls,
        env_config: EnvConfig | Mapping[str, Any] | None,
        seeds: Sequence[int],
        rounds: int = 3,
        l2: float = 1e-3,
        collect: Policy | None = None,
    ) -> SupervisedDetector:
        """Fit on the labelled observations of training episodes ``seeds``, DAgger-style.

        Round 1 collects data under ``collect`` (default: uniformly random votes); every
        later round replays ``seeds`` with the detector fitted so far voting, so the history
        slices of its observations (own votes, decisions, peers' votes) are those it causes
        itself. Each fit uses the data of all rounds so far; the threshold on the logit
        maximises F1 over them.
        """
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds: must be an integer >= 1, got {rounds!r}")
        seeds = list(seeds)
        env = BFTSecurityEnv(env_config)
        policy: Policy = collect or random_policy(0)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        detector: SupervisedDetector | None = None
        for _ in range(rounds):
            x_round, y_round = _collect(env, seeds, policy)
            if not len(x_round):
                raise ValueError("seeds: no training episodes to fit the supervised detector on")
            xs.append(x_round)
            ys.append(y_round)
            x, y = np.concatenate(xs), np.concatenate(ys)
            if y.all() or not y.any():
                raise ValueError("seeds: training episodes need both benign and malicious events")
            mean, scale, weights, bias = fit_logistic(x, y, l2)
            logits = ((x - mean) / scale) @ weights + bias
            threshold, f1 = best_f1_threshold(logits, y)
            detector = cls(mean, scale, weights, bias, threshold, f1, len(xs), len(seeds))
            policy = detector
        env.close()
        assert detector is not None
        return detector


def evaluate_baselines(
    env_config: EnvConfig | Mapping[str, Any] | None,
    seeds: Sequence[int],
    *,
    train_env_config: EnvConfig | Mapping[str, Any] | None = None,
    train_seeds: Sequence[int] = range(20),
    supervised_seeds: Sequence[int] | None = None,
    supervised_rounds: int = 3,
    greedy: Policy | None = None,
) -> tuple[dict[str, EvalResult], dict[str, ThresholdDetector | SupervisedDetector]]:
    """Run the baselines on ``seeds``; the detectors are fitted on training seeds.

    Returns the results by name (``always_allow``, ``threshold``, ``supervised`` and, when
    a trained ``greedy`` policy is given, ``single_replica``) and the fitted detectors by
    name (``threshold``, ``supervised``). The threshold detector trains on ``train_seeds``;
    the supervised one on ``supervised_seeds`` (default: ``train_seeds``) for
    ``supervised_rounds`` DAgger rounds. ``train_env_config`` defaults to ``env_config``
    (for a table, pass its train split).
    """
    train_config = env_config if train_env_config is None else train_env_config
    threshold = ThresholdDetector.fit(train_config, train_seeds)
    supervised = SupervisedDetector.fit(
        train_config,
        train_seeds if supervised_seeds is None else supervised_seeds,
        rounds=supervised_rounds,
    )
    results = {
        "always_allow": run_episodes(always_allow, env_config, seeds, "always_allow"),
        "threshold": run_episodes(threshold, env_config, seeds, "threshold"),
        "supervised": run_episodes(supervised, env_config, seeds, "supervised"),
    }
    if greedy is not None:
        results["single_replica"] = run_episodes(
            single_replica(greedy), env_config, seeds, "single_replica"
        )
    return results, {"threshold": threshold, "supervised": supervised}


# -- robustness: every Byzantine behaviour in turn ------------------------------------------
NO_BYZANTINE = "none"  # robustness case without a Byzantine replica
LEARNED_CASE = "learned"  # robustness case with a learned attacker module acting
INSIDER_CASE = "insider"  # robustness case with the scripted insider_attacker acting
# the insider's strategy (an attacker action) on a benign (0) and a malicious (1) event
INSIDER_STRATEGIES = (
    ATTACKER_STRATEGIES.index("vote_quarantine"),
    ATTACKER_STRATEGIES.index("vote_allow"),
)
# Rows of the robustness report: how the defenders' votes become a decision.
ROBUSTNESS_METHODS: dict[str, str] = {
    "bft_policy": "the trained policy's votes through PBFT (the BFT ensemble)",
    "naive_majority": "the same votes, plurality of all replicas' votes, no BFT (the lineage)",
    "random_replica": "the vote of one replica drawn per episode (Byzantine w.p. b / n)",
    "honest_replica": "one honest replica's greedy action decides alone",
    "always_allow": "every replica votes Allow",
    "threshold": "the per-event threshold detector's votes through PBFT",
}


def insider_attacker(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """A scripted label-aware attacker: votes Allow on malicious events, Quarantine on benign.

    It acts for ``attacker_j`` ids of ``adversary="learned"`` (the last entry of an
    attacker's observation is the true label, ``observation_layout(id)["label"]``), so it
    sits in the learned attacker's seat with its knowledge: a reference for how much a
    learned attacker could take, and what the defenders must survive.
    """
    return {a: INSIDER_STRATEGIES[int(o[-1] > 0.5)] for a, o in obs.items()}


def with_attackers(defenders: Policy, attackers: Policy | None) -> Policy:
    """One policy for an env with learned attackers: ``attacker_j`` ids go to ``attackers``."""

    def act(obs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Defenders' and attackers' actions, each side from its own policy."""
        attack = {a: o for a, o in obs.items() if a.startswith(ATTACKER_PREFIX)}
        defend = {a: o for a, o in obs.items() if a not in attack}
        actions = dict(defenders(defend)) if defend else {}
        if attack:
            if attackers is None:
                raise ValueError("attackers: the env has learned attackers but no policy for them")
            actions.update(attackers(attack))
        return actions

    return act


def robustness_cases(
    env_config: EnvConfig | Mapping[str, Any] | None,
    learned: bool = False,
    insider: bool = True,
) -> list[str]:
    """The default robustness cases: each scripted behaviour, ``none``, ``insider``, ``learned``.

    ``insider`` (the scripted ``insider_attacker``) is left out with ``insider=False``
    and ``learned`` is played only with ``learned=True``. Without a Byzantine replica in
    ``env_config`` (``n_byzantine`` 0) only ``none`` is played: there is no Byzantine
    replica to pin a behaviour on or to hand to an attacker.
    """
    if EnvConfig.from_any(env_config).n_byzantine == 0:
        return [NO_BYZANTINE]
    extra = ([INSIDER_CASE] if insider else []) + ([LEARNED_CASE] if learned else [])
    return [*BEHAVIORS, NO_BYZANTINE, *extra]


def robustness_case_config(
    env_config: EnvConfig | Mapping[str, Any] | None, case: str
) -> dict[str, Any]:
    """The env config of one robustness case: a behaviour pinned, none, insider or learned.

    Everything else of ``env_config`` is kept (``n_byzantine``, pinned Byzantine ids, the
    network); the adversary, attacker reward, decision rule and attacker strategies are
    reset to their defaults (``robustness_report`` sets the decision rule per row), except
    that the ``learned`` case keeps ``attacker_strategies``: the attacker module's actions.
    """
    cfg = EnvConfig.from_any(env_config)
    base = cfg.to_dict()
    base.update(
        adversary=ADVERSARIES[0],
        attacker_reward=ATTACKER_REWARDS[0],
        learned_share=EnvConfig.learned_share,
        decision_rule="pbft",
        byzantine_behaviors=BEHAVIORS,
        attacker_strategies=ATTACKER_STRATEGIES,
    )
    if case == NO_BYZANTINE:
        base.update(n_byzantine=0, byzantine_replicas=None)
    elif case in (LEARNED_CASE, INSIDER_CASE) or case in BEHAVIORS:
        if cfg.n_byzantine == 0:
            raise ValueError(
                f"case: {case!r} needs a Byzantine replica, but env_config has n_byzantine 0"
            )
        if case in (LEARNED_CASE, INSIDER_CASE):  # both act in the attacker_j seats
            base["adversary"] = "learned"
            if case == LEARNED_CASE:
                base["attacker_strategies"] = cfg.attacker_strategies
        else:
            base["byzantine_behaviors"] = (case,)
    else:
        raise ValueError(
            f"case: expected a behaviour of {BEHAVIORS}, {NO_BYZANTINE!r}, {INSIDER_CASE!r} "
            f"or {LEARNED_CASE!r}, got {case!r}"
        )
    return EnvConfig.from_any(base).to_dict()


def robustness_report(
    policy: Policy,
    env_config: EnvConfig | Mapping[str, Any] | None,
    seeds: Sequence[int],
    *,
    threshold: Policy,
    attacker: Policy | None = None,
    cases: Sequence[str] | None = None,
) -> dict[str, Any]:
    """F1 and breach rate of every ``ROBUSTNESS_METHODS`` row under every Byzantine case.

    Cases (default, ``robustness_cases``): each scripted behaviour pinned in turn, ``none``
    (no Byzantine replica), ``insider`` (``insider_attacker`` acts for the ``attacker_j``
    ids) and, when an ``attacker`` policy is given, ``learned`` (it acts for them). Every row of every case plays the same episodes ``seeds``.
    ``policy`` and ``threshold`` act for any defender id (``replica_i``, ``defender_k``).
    Returns ``{"cases": {case: {method: {f1, breach_rate, episodes}}}, "worst": {method:
    {f1, case, breach_rate, breach_case}}, "bft_at_least": {case: bool}}``: ``worst`` holds
    the lowest F1 over cases and the case it came from, and the highest breach rate over
    cases and its case (the first case on ties); ``bft_at_least`` says whether the BFT
    ensemble's F1 is at least the naive majority's and the random replica's.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: need at least one episode")
    cases = robustness_cases(env_config, attacker is not None) if cases is None else list(cases)
    if not cases:
        raise ValueError("cases: need at least one case")
    if len(set(cases)) != len(cases):
        raise ValueError(f"cases: duplicates in {cases}")
    if LEARNED_CASE in cases and attacker is None:
        raise ValueError("cases: 'learned' needs an attacker policy")
    configs = {case: robustness_case_config(env_config, case) for case in cases}  # validate all
    rows: dict[str, tuple[Policy, str]] = {
        "bft_policy": (policy, "pbft"),
        "naive_majority": (policy, "majority"),
        "random_replica": (policy, "random_replica"),
        "honest_replica": (single_replica(policy), "pbft"),
        "always_allow": (always_allow, "pbft"),
        "threshold": (threshold, "pbft"),
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    attackers = {INSIDER_CASE: insider_attacker, LEARNED_CASE: attacker}
    for case, config in configs.items():
        scores: dict[str, dict[str, float]] = {}
        for method, (defenders, rule) in rows.items():
            play = with_attackers(defenders, attackers.get(case))
            summary = run_episodes(play, {**config, "decision_rule": rule}, seeds, method).summary()
            scores[method] = {
                "f1": float(summary["f1"]),
                "breach_rate": float(summary["breached"]),
                "episodes": int(summary["episodes"]),
            }
        out[case] = scores
    worst: dict[str, dict[str, Any]] = {}
    for method in rows:
        f1_case = min(cases, key=lambda c, m=method: out[c][m]["f1"])
        breach_case = max(cases, key=lambda c, m=method: out[c][m]["breach_rate"])
        worst[method] = {
            "f1": out[f1_case][method]["f1"],
            "case": f1_case,
            "breach_rate": out[breach_case][method]["breach_rate"],
            "breach_case": breach_case,
        }
    at_least = {
        c: out[c]["bft_policy"]["f1"]
        >= max(out[c]["naive_majority"]["f1"], out[c]["random_replica"]["f1"])
        for c in cases
    }
    return {"cases": out, "worst": worst, "bft_at_least": at_least}
