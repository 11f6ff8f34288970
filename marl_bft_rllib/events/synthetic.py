"""Synthetic APT source: benign host telemetry with kill-chain campaigns that react to decisions.

Each episode's whole timeline (one event per slot) is drawn vectorised when the episode
starts; stepping only reads pre-built rows and updates the host-history tracker, so
``current()`` + ``respond()`` cost a few microseconds. Campaigns are drawn up front too,
but only the first is placed; a containment rewrites the contained campaign's later slots
to their pre-drawn benign alternates, reimages its hosts (their history restarts) and
places the next campaign ``relaunch_gap`` slots later. The stream is thus a
deterministic function of the rng and the decisions. See docs/features.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from marl_bft_rllib.events.base import (
    KILL_CHAIN,
    Event,
    Outcome,
    campaign_state_dim,
    campaign_state_vector,
)
from marl_bft_rllib.events.context import CONTEXT_NAMES, ContextConfig, HostContextTracker
from marl_bft_rllib.validation import check_bool, check_int, check_number

FEATURE_NAMES: tuple[str, ...] = (
    "proc_rarity",
    "cmdline_entropy",
    "bytes_out",
    "remote_conns",
    "file_writes",
    "priv_change",
    "auth_events",
    "edr_score",
)
SCORE_FEATURE = FEATURE_NAMES.index("edr_score")  # the anomaly-ish feature the tracker averages
N_STAGES = len(KILL_CHAIN)
LATERAL = KILL_CHAIN.index("lateral_movement")
EXFIL = KILL_CHAIN.index("exfiltration")


def _shift(**kw: float) -> list[float]:
    """A feature-mean shift vector from named entries (the rest 0)."""
    return [float(kw.get(name, 0.0)) for name in FEATURE_NAMES]


# Benign background: routine activity plus three legitimate-but-unusual kinds that
# overlap the campaign stages (an admin session looks like privilege escalation /
# lateral movement, a software update like persistence / exfiltration, a scanner like
# reconnaissance).
BENIGN_KINDS: tuple[str, ...] = ("routine", "admin", "update", "scanner")
BENIGN_SHIFTS = np.array(
    [
        _shift(),
        _shift(priv_change=1.4, auth_events=1.4, cmdline_entropy=0.6, edr_score=0.4),
        _shift(file_writes=1.6, bytes_out=1.0, proc_rarity=1.0, edr_score=0.4),
        _shift(remote_conns=1.6, auth_events=0.6, bytes_out=0.6, edr_score=0.4),
    ],
    np.float32,
)
# Per kill-chain stage, the mean shift of a malicious event (times SyntheticConfig.signal).
STAGE_SHIFTS = np.array(
    [
        _shift(remote_conns=1.4, cmdline_entropy=0.6, edr_score=0.8),
        _shift(proc_rarity=1.2, cmdline_entropy=1.0, edr_score=0.9),
        _shift(proc_rarity=1.0, cmdline_entropy=1.2, file_writes=0.4, edr_score=0.9),
        _shift(file_writes=1.3, priv_change=0.8, edr_score=0.8),
        _shift(priv_change=1.5, proc_rarity=0.5, auth_events=0.4, edr_score=0.9),
        _shift(auth_events=1.3, remote_conns=1.1, edr_score=0.8),
        _shift(bytes_out=1.6, remote_conns=0.7, edr_score=0.8),
    ],
    np.float32,
)
# Extra shift of a foothold event: a campaign's first event on a host (times foothold_signal).
FOOTHOLD_SHIFT = np.array(_shift(proc_rarity=1.0, edr_score=1.0), np.float32)


@dataclass(frozen=True)
class SyntheticConfig:
    """Scenario of the synthetic APT source; every field is validated."""

    n_hosts: int = 8
    threat_rate: float = 0.09  # target fraction of malicious events until breach (no containment)
    stage_events: tuple[int, int] = (1, 3)  # events per kill-chain stage burst, inclusive range
    event_spacing: float = 1.3  # mean slots between events of one stage burst (geometric, >= 1)
    stage_gap: float = 2.0  # mean slots from one stage's last event to the next stage (>= 1)
    start_jitter: float = 0.4  # lead-in before a campaign ~ U[1 - j, 1 + j] * its mean
    max_campaigns: int = 16  # campaigns drawn at a time (more are drawn as the stream needs)
    relaunch_gap: float = 20.0  # mean slots from a containment to the next campaign's start
    reimage: bool = True  # containment reimages the campaign's hosts: their history restarts
    p_contain_block: float = 0.35  # P(a BLOCK on a campaign event contains the campaign)
    p_contain_quarantine: float = 0.6  # P(a QUARANTINE on a campaign event contains it)
    signal: float = 2.0  # scale of the malicious feature shifts (difficulty knob)
    foothold_signal: float = 5.0  # scale of the extra shift of a campaign's first event on a host
    idle_factor: float = 0.15  # benign activity of a host while a campaign works on it (relative)
    context: ContextConfig = field(default_factory=ContextConfig)

    def __post_init__(self) -> None:
        """Validate every field; the first bad one raises a ValueError naming it."""
        set_ = object.__setattr__
        set_(self, "n_hosts", check_int("n_hosts", self.n_hosts, lo=2))
        set_(
            self,
            "threat_rate",
            check_number("threat_rate", self.threat_rate, lo=0.0, hi=1.0, lo_open=True),
        )
        se = self.stage_events
        if (
            not isinstance(se, (tuple, list))
            or len(se) != 2
            or any(
                isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) for x in se
            )
            or not 1 <= se[0] <= se[1]
        ):
            raise ValueError(
                f"stage_events: expected (lo, hi) integers with 1 <= lo <= hi, got {se!r}"
            )
        set_(self, "stage_events", (int(se[0]), int(se[1])))
        numbers = {
            "event_spacing": (1.0, 1e6),
            "stage_gap": (1.0, 1e6),
            "start_jitter": (0.0, 1.0),
            "relaunch_gap": (1.0, 1e6),
            "p_contain_block": (0.0, 1.0),
            "p_contain_quarantine": (0.0, 1.0),
            "signal": (0.0, 100.0),
            "foothold_signal": (0.0, 100.0),
            "idle_factor": (0.0, 1.0),
        }
        for name, (lo, hi) in numbers.items():
            set_(self, name, check_number(name, getattr(self, name), lo=lo, hi=hi))
        set_(self, "max_campaigns", check_int("max_campaigns", self.max_campaigns, lo=1))
        set_(self, "reimage", check_bool("reimage", self.reimage))
        if self.p_contain_quarantine < self.p_contain_block:
            raise ValueError(
                f"p_contain_quarantine: must be >= p_contain_block ({self.p_contain_block}), "
                f"got {self.p_contain_quarantine!r}"
            )
        set_(self, "context", ContextConfig.coerce(self.context, "context"))
        if self.mean_lead_in() < 0.0:
            raise ValueError(
                f"threat_rate: above what these campaigns can reach (about "
                f"{self.max_threat_rate():.3f}; raise event density or lower threat_rate), "
                f"got {self.threat_rate!r}"
            )

    def events_to_breach(self) -> float:
        """Expected malicious events of a campaign up to its first exfiltration event."""
        lo, hi = self.stage_events
        return (N_STAGES - 1) * (lo + hi) / 2.0 + 1.0

    def slots_to_breach(self) -> float:
        """Expected slots from a campaign's first event to its first exfiltration event."""
        lo, hi = self.stage_events
        return (N_STAGES - 1) * (((lo + hi) / 2.0 - 1.0) * self.event_spacing + self.stage_gap)

    def max_threat_rate(self) -> float:
        """The malicious fraction with no benign lead-in at all."""
        return self.events_to_breach() / (self.slots_to_breach() + 1.0)

    def mean_lead_in(self) -> float:
        """Mean benign slots before a campaign so that the threat rate hits ``threat_rate``."""
        return self.events_to_breach() / self.threat_rate - self.slots_to_breach() - 1.0


_OUTCOMES = {
    (c, b, e): Outcome(contained=c, breached=b, exhausted=e)
    for c in (False, True)
    for b in (False, True)
    for e in (False, True)
}


def _draw_campaigns(
    cfg: SyntheticConfig, rng: np.random.Generator, k: int
) -> tuple[np.ndarray, ...]:
    """k campaigns: events per campaign, relative slots, stages, hosts, features, jitter."""
    n_hosts, nf = cfg.n_hosts, len(FEATURE_NAMES)
    lo, hi = cfg.stage_events
    n_k = rng.integers(lo, hi + 1, (k, N_STAGES))
    n_c = n_k.sum(1)
    bounds = np.concatenate(([0], np.cumsum(n_c)))
    stage = np.repeat(np.tile(np.arange(N_STAGES), k), n_k.ravel())
    incr = rng.geometric(1.0 / cfg.event_spacing, stage.size)
    incr[np.concatenate(([0], np.cumsum(n_k.ravel())[:-1]))] = rng.geometric(
        1.0 / cfg.stage_gap, k * N_STAGES
    )
    incr[bounds[:-1]] = 0
    rel = np.cumsum(incr)
    rel -= np.repeat(rel[bounds[:-1]], n_c)
    h0 = rng.integers(0, n_hosts, k)
    h1 = (h0 + 1 + rng.integers(0, n_hosts - 1, k)) % n_hosts
    chost = np.where(stage < LATERAL, np.repeat(h0, n_c), np.repeat(h1, n_c))
    mal = rng.standard_normal((stage.size, nf), dtype=np.float32)
    mal += np.float32(cfg.signal) * STAGE_SHIFTS[stage]
    # Footholds: each campaign's first event and its first event on the second host.
    foothold = np.flatnonzero((np.diff(chost, prepend=-1) != 0) | (rel == 0))
    mal[foothold] += np.float32(cfg.foothold_signal) * FOOTHOLD_SHIFT
    j = cfg.start_jitter
    jitter = rng.uniform(1.0 - j, 1.0 + j, k)
    return n_c, rel, stage, chost, mal, jitter


def _relaunch_gaps(cfg: SyntheticConfig, jitter: np.ndarray) -> list[int]:
    """Slots from a containment to the next campaign's start, per drawn campaign."""
    return np.maximum(1, np.rint(cfg.relaunch_gap * jitter)).astype(int).tolist()


class SyntheticEpisode:
    """One synthetic episode: pre-drawn timeline, online context, reactive to containment."""

    __slots__ = (
        "horizon",
        "_n_hosts",
        "_idle",
        "_feat",
        "_bfeat",
        "_ctx",
        "_host",
        "_bhost",
        "_label",
        "_camp",
        "_stage",
        "_score",
        "_u",
        "_p",
        "_idle_u",
        "_idle_dst",
        "_bounds",
        "_rel",
        "_cstage",
        "_chost",
        "_mal",
        "_relaunch",
        "_reimage",
        "_slots",
        "_contained",
        "_tracker",
        "_t",
        "_event",
        "_done",
        "_cfg",
        "_more",
    )

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator, horizon: int) -> None:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon: must be a positive integer, got {horizon!r}")
        H = int(horizon)
        n_hosts = cfg.n_hosts
        self.horizon = H
        self._n_hosts = n_hosts
        self._idle = cfg.idle_factor
        nf = len(FEATURE_NAMES)
        kind = rng.choice(len(BENIGN_KINDS), size=H, p=(0.64, 0.12, 0.12, 0.12))
        bfeat = rng.standard_normal((H, nf), dtype=np.float32)
        bfeat += BENIGN_SHIFTS[kind]
        self._bhost = rng.integers(0, n_hosts, H)
        self._u = rng.random(H).tolist()
        self._idle_u = rng.random(H)
        self._idle_dst = rng.integers(0, n_hosts - 1, H)

        # Campaigns drawn a block at a time (relative slots, stages, hosts, features);
        # campaign c + 1 is only launched once campaign c is contained, and another
        # block is drawn whenever the stream needs one, so campaigns keep coming at any
        # horizon with the same statistics.
        self._cfg = cfg
        n_c, self._rel, self._cstage, self._chost, self._mal, jitter = _draw_campaigns(
            cfg, rng, cfg.max_campaigns
        )
        self._bounds = np.concatenate(([0], np.cumsum(n_c))).tolist()
        self._relaunch = _relaunch_gaps(cfg, jitter)

        self._feat = bfeat.copy()
        self._bfeat = bfeat
        self._ctx = np.zeros((H, len(CONTEXT_NAMES)), np.float32)
        self._host = self._bhost.tolist()
        self._label = [0] * H
        self._camp = [-1] * H
        self._stage = [-1] * H
        self._score = bfeat[:, SCORE_FEATURE].tolist()
        self._p = (0.0, 0.0, cfg.p_contain_block, cfg.p_contain_quarantine)
        self._reimage = cfg.reimage
        self._slots: list[np.ndarray] = []
        self._contained: list[bool] = []
        self._more = np.random.default_rng(int(rng.integers(2**63)))  # later blocks
        self._launch(int(round(cfg.mean_lead_in() * jitter[0])))
        self._tracker = HostContextTracker(n_hosts, cfg.context)
        self._t = 0
        self._done = False
        self._event = self._build(0)

    def _launch(self, start: int) -> None:
        """Write the next pre-drawn campaign into the timeline from slot ``start`` on."""
        c = len(self._slots)
        if start >= self.horizon:
            return
        self._ensure_drawn(c + 1)
        b0, b1 = self._bounds[c], self._bounds[c + 1]
        slots = start + self._rel[b0:b1]
        n = int(np.searchsorted(slots, self.horizon))
        slots, b1 = slots[:n], b0 + n
        hosts = self._chost[b0:b1]
        # The attacker works while its host is idle: thin that host's benign activity over
        # the campaign's span on it (moved to another host, so totals are unchanged).
        bhost, n_hosts = self._bhost, self._n_hosts
        for h in np.unique(hosts).tolist():
            on = slots[hosts == h]
            span = np.arange(on[0], on[-1] + 1)
            move = span[(bhost[span] == h) & (self._idle_u[span] >= self._idle)]
            bhost[move] = (h + 1 + self._idle_dst[move]) % n_hosts
            for s, bh in zip(move.tolist(), bhost[move].tolist(), strict=True):
                self._host[s] = bh
        mal = self._mal[b0:b1]
        self._feat[slots] = mal
        for s, h, st, v in zip(
            slots.tolist(),
            hosts.tolist(),
            self._cstage[b0:b1].tolist(),
            mal[:, SCORE_FEATURE].tolist(),
            strict=True,
        ):
            self._host[s] = h
            self._label[s] = 1
            self._camp[s] = c
            self._stage[s] = st
            self._score[s] = v
        self._slots.append(slots)
        self._contained.append(False)

    def _ensure_drawn(self, n: int) -> None:
        """Draw blocks of campaigns until at least ``n`` campaigns exist."""
        while len(self._relaunch) < n:
            n_c, rel, stage, chost, mal, jitter = _draw_campaigns(
                self._cfg, self._more, self._cfg.max_campaigns
            )
            self._bounds += (self._bounds[-1] + np.cumsum(n_c)).tolist()
            self._rel = np.concatenate([self._rel, rel])
            self._cstage = np.concatenate([self._cstage, stage])
            self._chost = np.concatenate([self._chost, chost])
            self._mal = np.concatenate([self._mal, mal])
            self._relaunch += _relaunch_gaps(self._cfg, jitter)

    def _build(self, t: int) -> Event:
        """Compute the context of slot t and wrap the slot as an Event."""
        ctx = self._ctx[t]
        host = self._host[t]
        self._tracker.step(host, t, self._score[t], ctx)
        return Event(self._feat[t], ctx, self._label[t], host, self._camp[t], self._stage[t])

    def current(self) -> Event:
        """The event awaiting a decision."""
        if self._done:
            raise RuntimeError("episode is over: no current event")
        return self._event

    def respond(self, decision: int) -> Outcome:
        """Apply the committed decision to the current event and advance one slot."""
        if self._done:
            raise RuntimeError("episode is over: respond() after breach or exhaustion")
        if not 0 <= decision <= 3:
            raise ValueError(f"decision: expected an action in 0..3, got {decision!r}")
        t = self._t
        c = self._camp[t]
        contained = breached = False
        if c >= 0:
            if self._u[t] < self._p[decision]:
                contained = True
                self._contain(c, t)
            elif self._stage[t] == EXFIL:
                breached = True
        t += 1
        self._t = t
        exhausted = t >= self.horizon
        if breached or exhausted:
            self._done = True
            self._event = None
        else:
            self._event = self._build(t)
        return _OUTCOMES[contained, breached, exhausted]

    def _contain(self, c: int, t: int) -> None:
        """Turn campaign c's slots after t benign and schedule the next campaign's launch."""
        self._contained[c] = True
        if self._reimage:
            done = self._slots[c]
            for h in np.unique(
                self._chost[self._bounds[c] : self._bounds[c] + done.size][done <= t]
            ).tolist():
                self._tracker.forget(h)
        later = self._slots[c]
        later = later[later > t]
        if later.size:
            self._revert(later)
        if c + 1 == len(self._slots):
            self._ensure_drawn(c + 2)
            self._launch(t + self._relaunch[c + 1])

    def _revert(self, later: np.ndarray) -> None:
        """Turn the given (campaign) slots back into their benign alternates."""
        self._feat[later] = self._bfeat[later]
        bh = self._bhost[later].tolist()
        sc = self._bfeat[later, SCORE_FEATURE].tolist()
        for s, h, v in zip(later.tolist(), bh, sc, strict=True):
            self._host[s] = h
            self._label[s] = 0
            self._camp[s] = -1
            self._stage[s] = -1
            self._score[s] = v

    def campaign_state(self) -> np.ndarray:
        """Hidden state of the latest campaign (``events.base`` layout; zeros if none active)."""
        c = len(self._slots) - 1
        if c < 0 or self._contained[c] or self._done:
            return np.zeros(campaign_state_dim(self._n_hosts), np.float32)
        slots = self._slots[c]
        i = int(np.searchsorted(slots, self._t))  # first of its events not yet decided
        if i >= slots.size:
            return np.zeros(campaign_state_dim(self._n_hosts), np.float32)
        j = self._bounds[c] + i
        return campaign_state_vector(
            self._n_hosts,
            progress=i / slots.size,
            slots_to_next=int(slots[i]) - self._t,
            stage=int(self._cstage[j]),
            host=int(self._chost[j]),
        )

    @property
    def t(self) -> int:
        """Index of the current slot."""
        return self._t

    @property
    def n_campaigns(self) -> int:
        """Campaigns launched so far (at least partly inside the horizon)."""
        return len(self._slots)

    @property
    def contained(self) -> tuple[bool, ...]:
        """Per launched campaign, whether it has been contained."""
        return tuple(self._contained)


class SyntheticAPTSource:
    """Synthetic APT event source (``EventSource``) with kill-chain campaigns."""

    feature_names: tuple[str, ...] = FEATURE_NAMES
    context_names: tuple[str, ...] = CONTEXT_NAMES

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config if config is not None else SyntheticConfig()
        if not isinstance(self.config, SyntheticConfig):
            raise ValueError(f"config: expected a SyntheticConfig, got {config!r}")
        self.n_hosts = self.config.n_hosts

    def episode(self, rng: np.random.Generator, horizon: int) -> SyntheticEpisode:
        """Start an episode of at most ``horizon`` events, fully determined by ``rng``."""
        return SyntheticEpisode(self.config, rng, horizon)
