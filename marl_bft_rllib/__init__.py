"""marl_bft_rllib: multi-agent intrusion response through BFT consensus on Ray RLlib.

The env (``marl_bft_rllib.env``), the event sources, the BFT protocol and the STL
engine work without Ray; ``register()``, ``ENV_NAME`` and ``marl_bft_rllib.rllib`` need it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def register(name: str | None = None) -> str:
    """Register the env with Ray Tune under ``name`` (default ``marl_bft``) and return it."""
    from marl_bft_rllib.rllib.registration import ENV_NAME
    from marl_bft_rllib.rllib.registration import register as _register

    return _register(ENV_NAME if name is None else name)


def __getattr__(name: str) -> Any:
    """``ENV_NAME`` (``marl_bft``), defined by the Ray layer that registers it."""
    if name == "ENV_NAME":
        from marl_bft_rllib.rllib.registration import ENV_NAME

        return ENV_NAME
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENV_NAME", "__version__", "register"]
