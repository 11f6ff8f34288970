"""marl_bft_rllib: multi-agent intrusion response through BFT consensus on Ray RLlib.

The env (``marl_bft_rllib.env``), the event sources, the BFT protocol and the STL
engine work without Ray; ``register()`` and ``marl_bft_rllib.rllib`` need it.
"""

from __future__ import annotations

__version__ = "0.1.0"

ENV_NAME = "marl_bft"


def register(name: str = ENV_NAME) -> str:
    """Register the env with Ray Tune under ``name`` (default ``marl_bft``) and return it."""
    from marl_bft_rllib.rllib.registration import register as _register

    return _register(name)


__all__ = ["ENV_NAME", "__version__", "register"]
