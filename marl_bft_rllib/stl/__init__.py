"""Signal Temporal Logic: parser, offline and online robustness, reward shaping.

This layer imports neither the env, ray nor torch.
"""

from marl_bft_rllib.stl.ast import (
    Always,
    And,
    Eventually,
    Formula,
    Implies,
    Not,
    Or,
    Predicate,
    Until,
)
from marl_bft_rllib.stl.offline import robustness
from marl_bft_rllib.stl.online import OnlineMonitor
from marl_bft_rllib.stl.parser import parse
from marl_bft_rllib.stl.shaping import (
    DEFAULT_SPECS,
    SHAPING_MODES,
    SIGNALS,
    STLShaper,
    validate_specs,
)

__all__ = [
    "Always",
    "And",
    "DEFAULT_SPECS",
    "Eventually",
    "Formula",
    "Implies",
    "Not",
    "OnlineMonitor",
    "Or",
    "Predicate",
    "SHAPING_MODES",
    "SIGNALS",
    "STLShaper",
    "Until",
    "parse",
    "robustness",
    "validate_specs",
]
