"""Host-history context: online per-host telemetry computed from the event stream itself.

The tracker sees each event once, in stream order, and writes the context of that
event *before* folding it into the history, so an event's context depends only on
the events that came before it (on its host, and network-wide). Time is the event's
slot index in the episode (one event per slot), so every decay constant is in events.
The same tracker serves synthetic and tabular sources.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from marl_bft_rllib.validation import check_int, check_number, check_options

CONTEXT_NAMES: tuple[str, ...] = (
    "host_rate",
    "host_score_mean",
    "host_suspicious_recency",
    "net_suspicious",
)


@dataclass(frozen=True)
class ContextConfig:
    """Decay constants (in events) and scales of the host-history features."""

    tau_rate: float = 6.0  # decay of the host's recent event count
    rate_scale: float = 3.0  # host_rate = decayed count / rate_scale
    tau_score: float = 10.0  # decay of the host's running mean score
    score_prior: float = 1.0  # pseudo-count pulling the mean towards 0 on short histories
    tau_suspicious: float = 12.0  # decay of the time since the host's last suspicious event
    suspicious_threshold: float = 1.5  # an event whose score exceeds this looks suspicious
    tau_net: float = 12.0  # decay of the network-wide suspicious count
    net_scale: float = 3.0  # net_suspicious = decayed count / net_scale

    def __post_init__(self) -> None:
        """Every constant must be a positive finite number (the threshold any finite one)."""
        positive = ("tau_rate", "rate_scale", "tau_score", "tau_suspicious", "tau_net", "net_scale")
        for name in positive:
            v = check_number(name, getattr(self, name), lo=0.0, lo_open=True)
            object.__setattr__(self, name, v)
        object.__setattr__(
            self, "score_prior", check_number("score_prior", self.score_prior, lo=0.0)
        )
        object.__setattr__(
            self,
            "suspicious_threshold",
            check_number("suspicious_threshold", self.suspicious_threshold),
        )

    @classmethod
    def coerce(cls, value: object, name: str = "context") -> ContextConfig:
        """``value`` if a ContextConfig, else one built from a dict of its fields."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"{name}: expected a ContextConfig or a dict of its fields, got {value!r}"
            )
        options = check_options(name, value, [f.name for f in dataclasses.fields(cls)])
        try:
            return cls(**options)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None


class HostContextTracker:
    """Online per-host history: recent rate, mean score, suspicious recency, network alert level."""

    def __init__(self, n_hosts: int, config: ContextConfig | None = None) -> None:
        self.n_hosts = check_int("n_hosts", n_hosts, lo=1)
        self.config = config or ContextConfig()
        c = self.config
        self._k_rate = -1.0 / c.tau_rate
        self._k_score = -1.0 / c.tau_score
        self._k_susp = -1.0 / c.tau_suspicious
        self._k_net = -1.0 / c.tau_net
        self._inv_rate_scale = 1.0 / c.rate_scale
        self._inv_net_scale = 1.0 / c.net_scale
        self.reset()

    def reset(self) -> None:
        """Forget every host's history."""
        n = self.n_hosts
        self._last = [-math.inf] * n  # time of the host's previous event
        self._rate = [0.0] * n  # decayed event count at self._last
        self._num = [0.0] * n  # decayed score sum at self._last
        self._den = [0.0] * n  # decayed weight at self._last
        self._susp = [-math.inf] * n  # time of the host's last suspicious event
        self._net = 0.0  # network-wide decayed suspicious count at self._net_t
        self._net_t = 0.0

    def forget(self, host: int) -> None:
        """Forget one host's history (it was reimaged); the network-wide level is kept."""
        self._last[host] = -math.inf
        self._rate[host] = self._num[host] = self._den[host] = 0.0
        self._susp[host] = -math.inf

    def step(self, host: int, t: float, score: float, out: np.ndarray) -> None:
        """Write the context of an event (host, time, score) into ``out``, then record the event."""
        c = self.config
        last = self._last[host]
        if last == -math.inf:
            rate = num = den = 0.0
        else:
            dt = t - last
            rate = self._rate[host] * math.exp(dt * self._k_rate)
            d = math.exp(dt * self._k_score)
            num = self._num[host] * d
            den = self._den[host] * d
        susp_t = self._susp[host]
        recency = 0.0 if susp_t == -math.inf else math.exp((t - susp_t) * self._k_susp)
        net = self._net * math.exp((t - self._net_t) * self._k_net)
        out[0] = rate * self._inv_rate_scale
        out[1] = num / (den + c.score_prior) if den + c.score_prior > 0.0 else 0.0
        out[2] = recency
        out[3] = net * self._inv_net_scale
        self._last[host] = t
        self._rate[host] = rate + 1.0
        self._num[host] = num + score
        self._den[host] = den + 1.0
        if score > c.suspicious_threshold:
            self._susp[host] = t
            net += 1.0
        self._net = net
        self._net_t = t

    def run(self, hosts: np.ndarray, times: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Context of a whole fixed stream (from a fresh history), shape (n, 4) float32."""
        hosts = np.asarray(hosts, dtype=np.int64)
        n = hosts.shape[0]
        if np.asarray(times).shape[0] != n or np.asarray(scores).shape[0] != n:
            raise ValueError("hosts, times and scores must have the same length")
        out = np.zeros((n, len(CONTEXT_NAMES)), np.float32)
        self.reset()
        step = self.step
        for i, (h, t, s) in enumerate(
            zip(
                hosts.tolist(),
                np.asarray(times, np.float64).tolist(),
                np.asarray(scores).tolist(),
                strict=True,
            )
        ):
            step(h, t, s, out[i])
        return out
