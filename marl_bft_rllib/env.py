"""The BFT security environment: replicated detectors voting through PBFT consensus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl_bft_rllib.actions import ACTION_NAMES, N_ACTIONS, Action, is_restrictive
from marl_bft_rllib.bft import BEHAVIORS, PBFTConsensus
from marl_bft_rllib.env_config import EnvConfig
from marl_bft_rllib.events import ReplicaSensors, make_source
from marl_bft_rllib.events.base import campaign_state_dim
from marl_bft_rllib.metrics import detection_report, stl_report
from marl_bft_rllib.stl.shaping import STLShaper

_SEVERITY = np.float32(1.0 / (N_ACTIONS - 1))
VIEW_CHANGE_TAU = 10.0  # steps: view_change_recency = exp(-(steps since view change) / tau)
STATE_INFO_KEY = "state"  # infos[agent][STATE_INFO_KEY] is state() at that observation


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
    that reaches exfiltration uncontained is a breach. Byzantine replicas, sampled per
    episode, are scripted by the adversary and are not agents.

    ## Action Space
    ``Discrete(4)`` per agent: 0 Allow, 1 Alert, 2 Block, 3 Quarantine (severity order).
    Block and Quarantine are restrictive and count as detecting a threat.

    ## Observation Space
    ``Box(-inf, inf, (obs_dim,), float32)``, roughly unit scale, laid out as
    ``[features (F): noisy event features | context (C): host context |
    own_votes (history) | decisions (history): last committed decisions |
    is_primary (1) | view_change_recency (1): exp(-steps since the last view change / 10) |
    progress (1, only with time_limit="episodic"): t / horizon |
    peer_votes (n): peers' last revealed votes | convicted (n): convicted peers]``.
    Votes and decisions are severity / 3, with -1 for "none yet / not revealed".
    ``observation_layout()`` names every slice.

    ## State
    ``state()`` / ``state_space``: ``Box(0, 1, (state_dim,), float32)``, what the
    defenders cannot see, for a centralised critic (CTDE) at training time only; the
    policy never reads it. Every step's infos carry it too, under ``"state"``.
    ``state_layout()`` names the slices: ``byzantine`` (n, 1 for a Byzantine replica),
    ``behavior`` (n x 8, one-hot of each Byzantine replica's behaviour in
    ``bft.BEHAVIORS`` order, zeros for honest ones), ``primary`` (n, one-hot of the
    current view's primary), ``campaign`` (the event source's ``campaign_state()``:
    active, progress, next_event_recency, kill-chain stage one-hot (7), host one-hot
    (n_hosts); zeros for a table source).

    ## Rewards
    Per honest replica and step: the reward table applied to the committed decision
    (team part), plus ``vote_weight`` times the table applied to the replica's own vote,
    plus ``stl_weight`` times the STL shaping reward. Default table: TP +10, TN +1,
    FP -8, FN -10, and -1.5 per restrictive decision. A breach adds ``-breach_penalty``.

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
        self.possible_agents = [f"replica_{i}" for i in range(self.n)]
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
        self._consensus = PBFTConsensus(cfg.bft)
        self._shaper = STLShaper(
            cfg.stl_specs, cfg.shaping, gamma=cfg.gamma, clip=cfg.stl_clip, horizon=cfg.horizon
        )
        self._layout = self._build_layout()
        self.obs_dim = self._layout["convicted"].stop
        self._obs_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self._state_layout = self._build_state_layout()
        self.state_dim = self._state_layout["campaign"].stop
        self.state_space = spaces.Box(0.0, 1.0, (self.state_dim,), np.float32)
        self._behavior_index = {name: i for i, name in enumerate(BEHAVIORS)}
        self._act_space = spaces.Discrete(N_ACTIONS)
        self._seed_seq = np.random.SeedSequence(cfg.seed)
        self._episode = None
        self._render_lines: list[str] = []

    # -- spaces -------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Box:
        """The shared observation space of every replica (the same object every call)."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """Discrete(4): Allow, Alert, Block, Quarantine."""
        return self._act_space

    def observation_layout(self) -> dict[str, slice]:
        """Name of every slice of the observation vector."""
        return dict(self._layout)

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
        self._consensus.reset(np.random.default_rng(bft_seq), byzantine=cfg.byzantine_replicas)
        self._events = self._source.episode(np.random.default_rng(ev_seq), cfg.horizon)
        self._sensors = ReplicaSensors(self.n, cfg.sensor_noise, np.random.default_rng(sensor_seq))
        self._shaper.reset()
        self.honest = np.array(self._consensus.honest, dtype=np.int64)
        self._adversary_state = self._build_adversary_state()
        self.agents = [self.possible_agents[i] for i in self.honest]
        self.t = 0
        self._own_votes = np.full((self.n, cfg.history), -1.0, np.float32)
        self._decisions = np.full(cfg.history, -1.0, np.float32)
        self._peer_votes = np.full(self.n, -1.0, np.float32)
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
        return obs, infos

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
        self._record_history(votes, result)
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
        if last:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _collect_votes(self, actions: Mapping[str, int]) -> np.ndarray:
        """Every replica's vote (Byzantine slots are filled in by the protocol)."""
        votes = np.full(self.n, int(Action.ALLOW), np.int64)
        for agent in self.agents:
            if agent not in actions:
                raise ValueError(f"actions: no action for live agent {agent!r}")
            a = actions[agent]
            if not 0 <= a < N_ACTIONS:
                raise ValueError(f"actions: {agent!r} sent {a!r}, expected 0..{N_ACTIONS - 1}")
            votes[self.agent_index[agent]] = a
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
        return {
            a: float(
                team
                + cfg.vote_weight
                * outcome_reward(cfg.reward_table, label, int(votes[self.agent_index[a]]))
                + shaping
                + penalty
            )
            for a in self.agents
        }

    def _record_history(self, votes: np.ndarray, result: Any) -> None:
        """Shift the own-vote, decision, peer-vote and view-change history."""
        self._own_votes[:, 1:] = self._own_votes[:, :-1]
        self._own_votes[:, 0] = votes * _SEVERITY
        self._decisions[1:] = self._decisions[:-1]
        self._decisions[0] = int(result.decision) * _SEVERITY
        revealed = result.revealed_votes
        self._peer_votes = np.where(revealed >= 0, revealed * _SEVERITY, -1.0).astype(np.float32)
        if result.view_changes:
            self._last_view_change = self.t

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
        obs[:, lay["convicted"]] = self._consensus.convicted
        return {self.possible_agents[i]: obs[i] for i in self.honest}

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
        names = "".join(ACTION_NAMES[int(v)][0].upper() for v in votes)
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
