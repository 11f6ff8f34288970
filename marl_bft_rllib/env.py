"""The BFT security environment: replicated detectors voting through PBFT consensus."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl_bft_rllib.actions import ACTION_NAMES, N_ACTIONS, Action, is_restrictive
from marl_bft_rllib.bft import (
    ATTACKER_STRATEGIES,
    BEHAVIORS,
    DECISION_RULES,
    LEARNED,
)
from marl_bft_rllib.bft.aggregate import robust_aggregate
from marl_bft_rllib.bft.byzantine import strategy_table
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.events import ReplicaSensors, make_source
from marl_bft_rllib.events.base import campaign_state_dim
from marl_bft_rllib.metrics import detection_report, stl_report
from marl_bft_rllib.stl.shaping import STLShaper

_SEVERITY = np.float32(1.0 / (N_ACTIONS - 1))
VIEW_CHANGE_TAU = 10.0  # steps: view_change_recency = exp(-(steps since view change) / tau)
STATE_INFO_KEY = "state"  # infos[agent][STATE_INFO_KEY] is state() at that observation
# infos[attacker][INERT_INFO_KEY]: True when its replica is convicted, so that nothing it
# does at that observation can change a decision, a reward or anyone else's observation
INERT_INFO_KEY = "inert"
# infos[defender][COUNTERFACTUAL_INFO_KEY]: (4,) float32, the step's team + vote reward had
# this defender voted each action, everything else fixed (see "Rewards" below)
COUNTERFACTUAL_INFO_KEY = "counterfactual_rewards"
DEFENDER_PREFIX = "defender_"  # agent ids with adversary="learned": defender_k, attacker_j
ATTACKER_PREFIX = "attacker_"


def outcome_reward(table: Mapping[str, float], label: int, action: int) -> float:
    """Reward-table value of responding with ``action`` to an event with ``label``."""
    restrictive = is_restrictive(action)
    if label:
        r = table["tp"] if restrictive else table["fn"]
    else:
        r = table["fp"] if restrictive else table["tn"]
    return r + table["restrictive_cost"] if restrictive else r


def confusion_key(label: int, action: int) -> str:
    """Which confusion cell (tp / tn / fp / fn) a decision on a labelled event falls in."""
    restrictive = is_restrictive(action)
    if label:
        return "tp" if restrictive else "fn"
    return "fp" if restrictive else "tn"


def _slices(sizes: Mapping[str, int]) -> dict[str, slice]:
    """Consecutive named slices of the given sizes."""
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = slice(start, start + size)
        start += size
    return layout


class BFTSecurityEnv(ParallelEnv):
    """Replicated intrusion detectors whose responses are decided by PBFT consensus.

    ## Description
    Each step a security event arrives (a synthetic APT campaign walking the kill chain
    over benign background traffic, or a row of a labelled event table). Every replica
    sees it through its own noisy sensor and votes a response. The votes go through one
    PBFT consensus instance (vote certificate, pre-prepare, prepare, commit); the
    committed decision, a Byzantine-robust aggregate of the certified votes, is applied.
    A restrictive decision on a campaign's event may contain the campaign; a campaign
    that reaches exfiltration uncontained is a breach. With ``adversary="scripted"``
    (default) the Byzantine replicas, sampled per episode, run a scripted behaviour and
    are not agents; the agents are the honest replicas, ``replica_i``. With
    ``adversary="learned"`` the Byzantine replicas are agents too: ``attacker_j`` for
    the Byzantine ones and ``defender_k`` for the honest ones, which replica index each
    holds drawn per episode (``agent_index``). With ``adversary="mixed"`` an episode
    has learned attackers with probability ``learned_share`` (drawn per episode) and
    scripted ones otherwise; ``attacker_j`` are then not among its ``agents``.

    ## Action Space
    Defenders (and ``replica_i``): ``Discrete(4)``: 0 Allow, 1 Alert, 2 Block,
    3 Quarantine (severity order). Block and Quarantine are restrictive and count as
    detecting a threat. An attacker: ``Discrete(len(attacker_strategies))``, one message
    strategy per step, inside the authenticated-message model (it cannot forge an honest
    replica's signature); action k is ``attacker_strategies[k]``, by default all nine in
    ``bft.ATTACKER_STRATEGIES`` order:

    {strategy_table}

    ## Observation Space
    ``Box(-inf, inf, (obs_dim,), float32)``, roughly unit scale, laid out as
    ``[features (F): noisy event features | context (C): host context |
    own_votes (history) | decisions (history): last committed decisions |
    is_primary (1) | view_change_recency (1): exp(-steps since the last view change / 10) |
    progress (1, only with time_limit="episodic"): t / horizon |
    peer_votes (n): peers' last revealed votes | peer_lenient (n) | peer_severe (n)
    (both only with peer_stats_window > 0; off by default) | convicted (n): convicted
    peers]``.
    Votes and decisions are severity / 3, with -1 for "none yet / not revealed".
    ``peer_lenient`` / ``peer_severe`` (each replica's own slot included) are each peer's
    running dissent from the committed decisions, a mean over its last
    ``peer_stats_window`` revealed votes (0 before any): how far (severity / 3) its vote
    was below a restrictive decision, and above a non-restrictive one. An insider who
    always allows shows up in the first, a denial-of-service replica in the second, so a
    memoryless policy can tell which behaviour it faces; ``peer_stats_window=0`` leaves
    both slices out.
    An attacker's observation is a defender's of its own replica (its own sensor and
    the protocol view) followed by ``label`` (1): the current event's true label (an
    insider knows its campaign). ``observation_layout(agent)`` names every slice.

    ## State
    ``state()`` / ``state_space``: ``Box(0, 1, (state_dim,), float32)``, what the
    defenders cannot see, for a centralised critic (CTDE) at training time only; the
    policy never reads it. Every step's infos carry it too, under ``"state"``.
    ``state_layout()`` names the slices: ``byzantine`` (n, 1 for a Byzantine replica),
    ``behavior`` (n x 8, one-hot of each Byzantine replica's behaviour in
    ``bft.BEHAVIORS`` order, zeros for honest and learned ones), ``primary`` (n, one-hot of the
    current view's primary), ``campaign`` (the event source's ``campaign_state()``:
    active, progress, next_event_recency, kill-chain stage one-hot (7), host one-hot
    (n_hosts); zeros for a table source).

    ## Rewards
    Per honest replica and step: the reward table applied to the committed decision
    (team part), plus ``vote_weight`` times the table applied to the replica's own vote,
    plus ``stl_weight`` times the STL shaping reward. Default table: TP +10, TN +1,
    FP -8, FN -10, and -1.5 per restrictive decision. A breach adds ``-breach_penalty``.
    A learned attacker gets minus the defenders' mean reward (``attacker_reward=
    "negative_mean"``, default) or minus their shared part, the committed decision's
    table value plus the breach penalty (``"negative_team"``).
    Every step's infos give each defender ``"counterfactual_rewards"``: a ``(4,)``
    vector, the team + vote part of its reward had it voted each action, with the other
    votes of the committed certificate, the label and the protocol run held fixed (a
    vote outside the certificate changes only the vote part). STL shaping and the
    breach penalty are left out (they depend on the future). NaN where the committed
    decision cannot be rebuilt from the certificate. The learner's counterfactual
    baseline (COMA-style) reads it. Each learned attacker's infos carry ``"inert"``:
    True once its replica is convicted (from the observation after the conviction on),
    when its messages are ignored and a view it would lead is skipped, so its action
    changes nothing; the learner leaves those steps out of its policy loss.

    ## Starting State
    ``reset(seed)`` seeds everything of the episode: the event stream, which replicas
    are Byzantine and how they behave, the sensors and message drops.

    ## Episode End
    ``terminated`` on a breach; at ``horizon`` steps (or at the end of a table window)
    ``terminated`` with ``time_limit="episodic"`` (default: the horizon is part of the
    task and ``progress`` is observed; measured best, see the README) or ``truncated``
    with ``time_limit="unbounded"`` (the stream goes on, the learner bootstraps V(s_T),
    and no time feature is observed). All agents end together; ``agents`` is then empty.

    ## Arguments
    ``config``: an ``EnvConfig`` or a plain dict of its fields (RLlib's ``env_config``).
    ``render_mode``: ``None`` or ``"ansi"`` (one readable line per step).
    """

    if __doc__:  # None under python -OO
        __doc__ = __doc__.replace(
            "{strategy_table}", textwrap.indent(strategy_table(), " " * 4).lstrip()
        )

    metadata = {"name": "marl_bft_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(
        self, config: EnvConfig | Mapping[str, Any] | None = None, render_mode: str | None = None
    ) -> None:
        """Build the env from a validated config."""
        self.config = EnvConfig.from_any(config)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode: expected None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        cfg = self.config
        self.n = cfg.n_replicas
        self.learned = cfg.adversary != "scripted"  # attacker_j agents exist (in some episodes)
        self._attacking = self.learned  # this episode's Byzantine replicas are learned agents
        if self.learned:
            n_honest = self.n - cfg.n_byzantine
            self.possible_agents = [f"{DEFENDER_PREFIX}{k}" for k in range(n_honest)] + [
                f"{ATTACKER_PREFIX}{j}" for j in range(cfg.n_byzantine)
            ]
        else:
            self.possible_agents = [f"replica_{i}" for i in range(self.n)]
        # agent id -> replica index it holds (drawn per episode with adversary="learned")
        self.agent_index = {a: i for i, a in enumerate(self.possible_agents)}
        self.agents: list[str] = []

        if cfg.source == "synthetic":
            self._source = make_source(
                "synthetic",
                n_hosts=cfg.n_hosts,
                threat_rate=cfg.threat_rate,
                **cfg.synthetic_options,
            )
        else:
            self._source = make_source(
                cfg.source, split=cfg.split, episode_length=cfg.horizon, **cfg.table_options
            )
        self.n_features = len(self._source.feature_names)
        self.n_context = len(self._source.context_names)
        self.n_hosts = self._source.n_hosts
        self._consensus = DECISION_RULES[cfg.decision_rule](cfg.bft)
        self._team_rewards = np.array(  # [label, decision]: the team part of the reward
            [[outcome_reward(cfg.reward_table, y, a) for a in range(N_ACTIONS)] for y in (0, 1)]
        )
        self._cf_tables, self._cf_rows = self._build_counterfactual_tables()
        self._cf_nan = np.full(N_ACTIONS, np.nan, np.float32)
        # action k of an attacker -> its index in ATTACKER_STRATEGIES (what the protocol takes)
        self._strategy_ids = np.array(
            [ATTACKER_STRATEGIES.index(name) for name in cfg.attacker_strategies], np.int64
        )
        self._attacker_cf_nan = np.full(len(self._strategy_ids), np.nan, np.float32)
        self._rebuilds_decisions = cfg.decision_rule == "pbft"  # counterfactuals: pbft only
        self._shaper = STLShaper(
            cfg.stl_specs, cfg.shaping, gamma=cfg.gamma, clip=cfg.stl_clip, horizon=cfg.horizon
        )
        self._layout = self._build_layout()
        self.obs_dim = self._layout["convicted"].stop
        self._obs_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        # an attacker also sees the current event's true label (an insider)
        self._attacker_obs_space = spaces.Box(-np.inf, np.inf, (self.obs_dim + 1,), np.float32)
        self._attacker_act_space = spaces.Discrete(len(self._strategy_ids))
        self._state_layout = self._build_state_layout()
        self.state_dim = self._state_layout["campaign"].stop
        self.state_space = spaces.Box(0.0, 1.0, (self.state_dim,), np.float32)
        self._behavior_index = {name: i for i, name in enumerate(BEHAVIORS)}
        self._act_space = spaces.Discrete(N_ACTIONS)
        self._seed_seq = np.random.SeedSequence(cfg.seed)
        self._episode = None
        self._render_lines: list[str] = []

    # -- spaces -------------------------------------------------------------------------
    def is_attacker(self, agent: str) -> bool:
        """True for a learned attacker's id (``attacker_j``)."""
        return self.learned and agent.startswith(ATTACKER_PREFIX)

    def observation_space(self, agent: str) -> spaces.Box:
        """An agent's observation space (one object per role, the same every call)."""
        return self._attacker_obs_space if self.is_attacker(agent) else self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """Discrete(4) (Allow .. Quarantine); an attacker's: one action per strategy."""
        return self._attacker_act_space if self.is_attacker(agent) else self._act_space

    def observation_layout(self, agent: str | None = None) -> dict[str, slice]:
        """Name of every slice of an agent's observation vector (default: a defender's)."""
        layout = dict(self._layout)
        if agent is not None and self.is_attacker(agent):
            layout["label"] = slice(self.obs_dim, self.obs_dim + 1)
        return layout

    def state_layout(self) -> dict[str, slice]:
        """Name of every slice of the ``state()`` vector."""
        return dict(self._state_layout)

    def _build_layout(self) -> dict[str, slice]:
        sizes = {
            "features": self.n_features,
            "context": self.n_context,
            "own_votes": self.config.history,
            "decisions": self.config.history,
            "is_primary": 1,
            "view_change_recency": 1,
            "progress": 1 if self.config.time_limit == "episodic" else 0,
            "peer_votes": self.n,
            "peer_lenient": self.n if self.config.peer_stats_window else 0,
            "peer_severe": self.n if self.config.peer_stats_window else 0,
            "convicted": self.n,
        }
        return _slices(sizes)

    def _build_state_layout(self) -> dict[str, slice]:
        sizes = {
            "byzantine": self.n,
            "behavior": self.n * len(BEHAVIORS),
            "primary": self.n,
            "campaign": campaign_state_dim(self.n_hosts),
        }
        return _slices(sizes)

    def _build_counterfactual_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Team + vote reward by [label, decision, own vote], and by [label, lo, hi, own vote]
        with the decision = the own vote clamped to [lo, hi]."""
        table = self._team_rewards
        by_decision = (table[:, :, None] + self.config.vote_weight * table[:, None]).astype(
            np.float32
        )
        votes = np.arange(N_ACTIONS)
        clamped = np.clip(votes, *np.indices((N_ACTIONS, N_ACTIONS))[..., None])
        return by_decision, by_decision[:, clamped, votes]

    def state(self) -> np.ndarray:
        """The global hidden state (``state_space``) at the current observation."""
        lay = self._state_layout
        out = self._adversary_state.copy()  # Byzantine ids and behaviours: fixed per episode
        out[lay["primary"].start + self._consensus.primary] = 1.0
        out[lay["campaign"]] = self._events.campaign_state()
        return out

    def _build_adversary_state(self) -> np.ndarray:
        """The state vector with only this episode's Byzantine flags and behaviours set."""
        lay = self._state_layout
        out = np.zeros(self.state_dim, np.float32)
        behavior = np.zeros((self.n, len(BEHAVIORS)), np.float32)
        for i, name in self._consensus.behaviors.items():
            out[lay["byzantine"].start + i] = 1.0
            if name != LEARNED:  # a learned attacker has no fixed behaviour: zeros
                behavior[i, self._behavior_index[name]] = 1.0
        out[lay["behavior"]] = behavior.ravel()
        return out

    # -- episode ------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode; ``seed`` fixes everything in it."""
        if seed is not None:
            self._seed_seq = np.random.SeedSequence(seed)
        ev_seq, bft_seq, sensor_seq, self._seed_seq = self._seed_seq.spawn(4)
        cfg = self.config
        role_rng = np.random.default_rng(bft_seq.spawn(1)[0])  # learned modes only
        if cfg.adversary == "mixed":
            self._attacking = bool(role_rng.random() < cfg.learned_share)
        self._consensus.reset(
            np.random.default_rng(bft_seq),
            byzantine=cfg.byzantine_replicas,
            behaviors=LEARNED if self._attacking else None,
        )
        self._events = self._source.episode(np.random.default_rng(ev_seq), cfg.horizon)
        self._sensors = ReplicaSensors(self.n, cfg.sensor_noise, np.random.default_rng(sensor_seq))
        self._shaper.reset()
        self.honest = np.array(self._consensus.honest, dtype=np.int64)
        self._adversary_state = self._build_adversary_state()
        if self.learned:
            self._assign_roles(role_rng)
            self.agents = [
                a for a in self.possible_agents if self._attacking or not self.is_attacker(a)
            ]
        else:
            self.agents = [self.possible_agents[i] for i in self.honest]
        self._defenders = [a for a in self.agents if not self.is_attacker(a)]
        self.t = 0
        self._own_votes = np.full((self.n, cfg.history), -1.0, np.float32)
        self._decisions = np.full(cfg.history, -1.0, np.float32)
        self._peer_votes = np.full(self.n, -1.0, np.float32)
        tracked = self.n if cfg.peer_stats_window else 0  # matches the observation slices
        self._dissent = np.zeros((2, tracked), np.float32)  # (lenient, severe) running means
        self._dissent_count = np.zeros((2, tracked), np.int64)
        self._last_view_change = -(10**9)  # never: recency 0
        self._fp_hist = np.zeros((cfg.fp_window, 2), np.int64)  # (false positive, benign)
        self._quarantine_until = np.zeros(self.n_hosts, np.int64)
        self._counts = {"tp": 0, "tn": 0, "fp": 0, "fn": 0}
        self._breached = False
        self._render_lines = []
        self._event = self._events.current()
        obs = self._observe()
        state = self.state()
        infos = {a: {"label": int(self._event.label), STATE_INFO_KEY: state} for a in self.agents}
        self._mark_inert(infos)
        return obs, infos

    def _assign_roles(self, rng: np.random.Generator) -> None:
        """Learned mode: give defender_k / attacker_j this episode's replica indices (shuffled)."""
        honest = rng.permutation(self.honest).tolist()
        byzantine = rng.permutation(self._consensus.byzantine).tolist()
        n_honest = len(honest)
        self.agent_index = {
            a: (honest[k] if k < n_honest else byzantine[k - n_honest])
            for k, a in enumerate(self.possible_agents)
        }

    def step(self, actions: Mapping[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        """Vote, reach consensus on the current event, apply the decision, advance."""
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        votes = self._collect_votes(actions)
        event = self._event
        result = self._consensus.decide(votes)
        outcome = self._apply_decision(event, int(result.decision))
        last = outcome.breached or outcome.exhausted or self.t >= self.config.horizon
        rewards = self._rewards(int(event.label), votes, result, outcome.breached, last)
        self._record_history(result)
        # Breach: terminal. Horizon: terminal only when time is part of the task.
        terminated = bool(outcome.breached) or (last and self.config.time_limit == "episodic")
        terms = dict.fromkeys(self.agents, terminated)
        truncs = dict.fromkeys(self.agents, not terminated and last)
        if self.render_mode == "ansi":
            self._render_lines.append(self._render_line(event, votes, result, rewards))
        if not last:
            self._event = self._events.current()
        obs = self._observe()
        infos = self._step_infos(int(event.label), result, last)
        for agent, cf in self._counterfactual_rewards(int(event.label), result).items():
            infos[agent][COUNTERFACTUAL_INFO_KEY] = cf
        if self._attacking:
            cfs = self._attacker_counterfactuals(int(event.label), result, actions)
            for agent, cf in cfs.items():
                infos[agent][COUNTERFACTUAL_INFO_KEY] = cf
        self._mark_inert(infos)
        if last:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _collect_votes(self, actions: Mapping[str, int]) -> np.ndarray:
        """Every defender's vote (Byzantine slots are filled in by the protocol).

        With learned attackers, their strategies for this instance go to the protocol.
        """
        votes = np.full(self.n, int(Action.ALLOW), np.int64)
        strategies: dict[int, int] = {}
        for agent in self.agents:
            if agent not in actions:
                raise ValueError(f"actions: no action for live agent {agent!r}")
            a = actions[agent]
            if self.is_attacker(agent):
                k = len(self._strategy_ids)
                if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not 0 <= a < k:
                    raise ValueError(
                        f"actions: {agent!r} sent {a!r}, expected a strategy index "
                        f"0..{k - 1} of attacker_strategies {self.config.attacker_strategies}"
                    )
                strategies[self.agent_index[agent]] = int(self._strategy_ids[a])
            else:
                if not 0 <= a < N_ACTIONS:
                    raise ValueError(f"actions: {agent!r} sent {a!r}, expected 0..{N_ACTIONS - 1}")
                votes[self.agent_index[agent]] = a
        if self._attacking:
            self._consensus.act_as(strategies)
        return votes

    def _apply_decision(self, event: Any, decision: int) -> Any:
        """Count the decision, apply it to the world and advance time by one step."""
        label = int(event.label)
        self._counts[confusion_key(label, decision)] += 1
        outcome = self._events.respond(decision)
        if decision == Action.QUARANTINE:
            self._quarantine_until[event.host] = self.t + 1 + self.config.quarantine_steps
        self.t += 1
        self._fp_hist[self.t % len(self._fp_hist)] = (
            int(is_restrictive(decision) and not label),
            int(not label),
        )
        self._breached = bool(outcome.breached)
        return outcome

    def _rewards(
        self, label: int, votes: np.ndarray, result: Any, breached: bool, last: bool
    ) -> dict[str, float]:
        """Team reward + vote_weight x own-vote reward + STL shaping (+ breach penalty)."""
        cfg = self.config
        decision = int(result.decision)
        team = outcome_reward(cfg.reward_table, label, decision)
        signals = self._signals(label, bool(is_restrictive(decision)), result)
        shaping = cfg.stl_weight * self._shaper.step(signals, last=last)
        penalty = -cfg.breach_penalty if breached else 0.0
        rewards = {
            a: float(
                team
                + cfg.vote_weight
                * outcome_reward(cfg.reward_table, label, int(votes[self.agent_index[a]]))
                + shaping
                + penalty
            )
            for a in self._defenders
        }
        if self._attacking:  # zero-sum against the defenders' mean, or their shared part only
            if cfg.attacker_reward == "negative_mean":
                attacker = -float(np.mean(list(rewards.values())))
            else:
                attacker = -float(team + penalty)
            rewards.update((a, attacker) for a in self.agents if self.is_attacker(a))
        return rewards

    def _vote_bounds(self, result: Any) -> dict[int, tuple[int, int]] | None:
        """Per certified replica, the interval [lo, hi] that its vote is clamped to.

        The decision with one certified vote set to a is the certificate's trimmed pick
        with that vote replaced: the k-th smallest of the others and a, which is a
        clamped between the others' (k-1)-th and k-th smallest (k = size - 1 - f). A
        replica missing from the result has no say (its vote is not in the certificate,
        or nothing committed). None when the decision cannot be rebuilt this way.
        """
        members = result.certificate.nonzero()[0].tolist() if result.committed else []
        votes = result.revealed_votes[members].tolist()
        f = self.config.bft.f
        if not self._rebuilds_decisions or (
            votes and robust_aggregate(votes, f) != int(result.decision)
        ):
            return None
        k, top = len(votes) - 1 - f, N_ACTIONS - 1
        bounds = {}
        for i in members:
            others = sorted(v for j, v in zip(members, votes, strict=True) if j != i)
            bounds[i] = (others[k - 1] if k >= 1 else 0, others[k] if k < len(others) else top)
        return bounds

    def _counterfactual_rewards(self, label: int, result: Any) -> dict[str, np.ndarray]:
        """Per defender, the team + vote reward had it voted each action (others fixed)."""
        bounds = self._vote_bounds(result)
        if bounds is None:
            return {agent: self._cf_nan.copy() for agent in self._defenders}
        rows = self._cf_rows[label]  # [lo, hi] -> the (4,) rewards of votes clamped to [lo, hi]
        out = {}
        for agent in self._defenders:
            b = bounds.get(self.agent_index[agent])
            out[agent] = (
                self._cf_tables[label, int(result.decision)] if b is None else rows[b]
            ).copy()
        return out

    def _attacker_counterfactuals(
        self, label: int, result: Any, actions: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        """Per learned attacker that cast a plain vote: its reward had it voted each severity.

        One entry per action (``attacker_strategies``). A plain vote's entry
        (``vote_allow`` .. ``vote_quarantine``) is minus the team reward of the decision
        with its certified vote set to that severity (as for a defender; a vote outside
        the certificate changes nothing), up to a constant that is the same for every
        entry; the other strategies' entries are NaN (their effect is not a vote's). All
        NaN after another strategy, once convicted, or when the decision cannot be rebuilt
        from the certificate.
        """
        bounds = self._vote_bounds(result)
        team = -self._team_rewards[label]
        ids = self._strategy_ids
        voting = ids < N_ACTIONS  # the actions that are plain votes; their severity is the id
        out = {}
        for agent in self.agents:
            if not self.is_attacker(agent):
                continue
            i, vec = self.agent_index[agent], self._attacker_cf_nan.copy()
            if bounds is not None and voting[actions[agent]] and not self._consensus.convicted[i]:
                b = bounds.get(i)
                vec[voting] = (
                    team[int(result.decision)] if b is None else team[np.clip(ids[voting], *b)]
                )
            out[agent] = vec
        return out

    def _record_history(self, result: Any) -> None:
        """Shift the own-vote, decision, peer-vote and view-change history."""
        self._own_votes[:, 1:] = self._own_votes[:, :-1]
        signed = result.signed_votes  # what each replica signed, Byzantine ones included
        self._own_votes[:, 0] = np.where(signed >= 0, signed * _SEVERITY, -1.0)
        self._decisions[1:] = self._decisions[:-1]
        self._decisions[0] = int(result.decision) * _SEVERITY
        revealed = result.revealed_votes
        self._peer_votes = np.where(revealed >= 0, revealed * _SEVERITY, -1.0).astype(np.float32)
        if result.committed and self.config.peer_stats_window:
            self._record_dissent(int(result.decision), revealed)
        if result.view_changes:
            self._last_view_change = self.t

    def _record_dissent(self, decision: int, revealed: np.ndarray) -> None:
        """Fold one committed decision into every revealed peer's running dissent."""
        seen = revealed >= 0
        if is_restrictive(decision):  # how far below the decision (lenient)
            row, gap = 0, np.maximum(decision - revealed, 0)
        else:  # how far above it (severe)
            row, gap = 1, np.maximum(revealed - decision, 0)
        count = self._dissent_count[row]
        count[seen] = np.minimum(count[seen] + 1, self.config.peer_stats_window)
        mean = self._dissent[row]
        mean[seen] += (gap[seen] * _SEVERITY - mean[seen]) / count[seen]

    def _step_infos(self, label: int, result: Any, last: bool) -> dict[str, dict]:
        """Per-agent infos: label, decision, committed, view, the new state (+ episode end)."""
        info = {
            "label": label,
            "decision": int(result.decision),
            "committed": bool(result.committed),
            "view": int(result.view),
        }
        if last:
            info["episode_metrics"] = self.episode_metrics()
        info[STATE_INFO_KEY] = self.state()
        return {a: dict(info) for a in self.agents}

    def _mark_inert(self, infos: dict[str, dict]) -> None:
        """Flag each learned attacker whose replica is convicted (its action is void)."""
        convicted = self._consensus.convicted
        for a in self.agents:
            if self.is_attacker(a):
                infos[a][INERT_INFO_KEY] = bool(convicted[self.agent_index[a]])

    # -- pieces -------------------------------------------------------------------------
    def _observe(self) -> dict[str, np.ndarray]:
        """Every honest replica's observation of the current event and protocol state."""
        lay = self._layout
        obs = np.empty((self.n, self.obs_dim), np.float32)
        obs[:, lay["features"]] = self._sensors.observe(self._event.features)
        obs[:, lay["context"]] = self._event.context
        obs[:, lay["own_votes"]] = self._own_votes
        obs[:, lay["decisions"]] = self._decisions
        obs[:, lay["is_primary"]] = 0.0
        obs[self._consensus.primary, lay["is_primary"]] = 1.0
        obs[:, lay["view_change_recency"]] = np.exp(
            -(self.t - self._last_view_change) / VIEW_CHANGE_TAU
        )
        obs[:, lay["progress"]] = self.t / self.config.horizon  # empty slice if unbounded
        obs[:, lay["peer_votes"]] = self._peer_votes
        obs[:, lay["peer_lenient"]] = self._dissent[0]  # empty slices if peer_stats_window=0
        obs[:, lay["peer_severe"]] = self._dissent[1]
        obs[:, lay["convicted"]] = self._consensus.convicted
        if not self.learned:
            return {self.possible_agents[i]: obs[i] for i in self.honest}
        label = np.float32(self._event.label)
        index = self.agent_index
        return {
            a: np.append(obs[index[a]], label) if self.is_attacker(a) else obs[index[a]]
            for a in self.agents
        }

    def _signals(self, label: int, restrictive: bool, result: Any) -> dict[str, float]:
        """The per-step STL signals named in the design (reads the state, writes nothing)."""
        hist = self._fp_hist
        benign = hist[:, 1].sum()
        honest_commits = result.honest_commits[self.honest]
        agreement = float(np.count_nonzero(honest_commits == result.decision)) / len(self.honest)
        return {
            "threat": float(label),
            "restrictive": float(restrictive),
            "decided": float(result.committed),
            "agreement": agreement,
            "fp_window": float(hist[:, 0].sum() / benign) if benign else 0.0,
            "quarantined": float(np.count_nonzero(self._quarantine_until > self.t)) / self.n_hosts,
        }

    def episode_metrics(self) -> dict[str, float]:
        """Confusion counts, F1, STL robustness per spec and BFT statistics so far."""
        out = detection_report(self._counts)
        out.update(stl_report(self._shaper.episode_robustness()))
        out.update({k: float(v) for k, v in self._consensus.stats().items()})
        out["breached"] = float(self._breached)
        out["length"] = float(self.t)
        return out

    def _render_line(self, event: Any, votes: np.ndarray, result: Any, rewards: dict) -> str:
        names = "".join(
            ACTION_NAMES[int(v)][0].upper() if v >= 0 else "-" for v in result.signed_votes
        )
        mark = "MAL" if event.label else "ben"
        status = "commit" if result.committed else "UNDECIDED"
        r = next(iter(rewards.values())) if rewards else 0.0
        return (
            f"t={self.t:4d} host={event.host:2d} {mark} votes={names} "
            f"-> {ACTION_NAMES[int(result.decision)]:<10s} {status:<9s} view={result.view} "
            f"primary={result.primary} reward={r:+.2f}"
        )

    def render(self) -> str | None:
        """The last step as one readable line (``render_mode="ansi"``)."""
        if self.render_mode != "ansi":
            return None
        return self._render_lines[-1] if self._render_lines else "t=   0 (reset)"

    def close(self) -> None:
        """Nothing to release."""
