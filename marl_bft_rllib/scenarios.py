"""Named scenario presets: env_config dicts for ``BFTSecurityEnv`` and RLlib, in one place."""

from __future__ import annotations

from typing import Any

from marl_bft_rllib.bft import BEHAVIORS

SCENARIOS: dict[str, dict[str, Any]] = {
    # n = 4 replicas, one Byzantine replica with a behaviour sampled per episode.
    "default": {},
    # All four replicas honest: the BFT machinery runs but nobody attacks it.
    "no_byzantine": {"n_byzantine": 0},
    # Replica 0, the primary of view 0, equivocates: conflicting certificates and votes.
    "equivocating_primary": {
        "n_byzantine": 1,
        "byzantine_replicas": (0,),
        "byzantine_behaviors": ("equivocate",),
    },
    # b = 2 > f = 1: safety is not guaranteed; the env keeps running and reports violations.
    "beyond_f": {"n_byzantine": 2},
    # n = 16 replicas, f = 5 Byzantine, every behaviour in play, 5% message drops.
    "large": {"n_replicas": 16, "n_byzantine": 5, "byzantine_behaviors": BEHAVIORS, "p_drop": 0.05},
}

SCENARIO_DOCS: dict[str, str] = {
    "default": "n=4, b=1, behaviour sampled per episode from all eight",
    "no_byzantine": "n=4, b=0: all replicas honest",
    "equivocating_primary": "n=4, b=1: replica 0 (first primary) equivocates",
    "beyond_f": "n=4, b=2 > f=1: safety can break; violations are reported in infos",
    "large": "n=16, b=5, all behaviours, p_drop=0.05",
}


def scenario_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The env_config dict of a named scenario, with field overrides applied."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown preset {name!r}; expected one of {sorted(SCENARIOS)}")
    return {**SCENARIOS[name], **overrides}
