"""BFT consensus layer: a fast PBFT simulation deciding each step's response."""

from marl_bft_rllib.bft.aggregate import robust_aggregate
from marl_bft_rllib.bft.baselines import DECISION_RULES, NaiveMajority, RandomReplica
from marl_bft_rllib.bft.byzantine import (
    ATTACKER_STRATEGIES,
    BEHAVIOR_REGISTRY,
    LEARNED,
    N_STRATEGIES,
    STRATEGY_REGISTRY,
    VOTE_STRATEGIES,
    ByzantineBehavior,
)
from marl_bft_rllib.bft.config import BEHAVIORS, CERTIFICATES, BFTConfig
from marl_bft_rllib.bft.messages import MsgType, SignedMessage, proves_fault
from marl_bft_rllib.bft.protocol import ConsensusResult, PBFTConsensus

__all__ = [
    "ATTACKER_STRATEGIES",
    "BEHAVIORS",
    "BEHAVIOR_REGISTRY",
    "BFTConfig",
    "CERTIFICATES",
    "ByzantineBehavior",
    "ConsensusResult",
    "DECISION_RULES",
    "LEARNED",
    "MsgType",
    "N_STRATEGIES",
    "NaiveMajority",
    "PBFTConsensus",
    "RandomReplica",
    "STRATEGY_REGISTRY",
    "VOTE_STRATEGIES",
    "SignedMessage",
    "proves_fault",
    "robust_aggregate",
]
