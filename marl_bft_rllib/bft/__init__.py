"""BFT consensus layer: a fast PBFT simulation deciding each step's response."""

from marl_bft_rllib.bft.aggregate import robust_aggregate
from marl_bft_rllib.bft.byzantine import BEHAVIOR_REGISTRY, ByzantineBehavior
from marl_bft_rllib.bft.config import BEHAVIORS, BFTConfig
from marl_bft_rllib.bft.messages import MsgType, SignedMessage, proves_fault
from marl_bft_rllib.bft.protocol import ConsensusResult, PBFTConsensus

__all__ = [
    "BEHAVIORS",
    "BEHAVIOR_REGISTRY",
    "BFTConfig",
    "ByzantineBehavior",
    "ConsensusResult",
    "MsgType",
    "PBFTConsensus",
    "SignedMessage",
    "proves_fault",
    "robust_aggregate",
]
