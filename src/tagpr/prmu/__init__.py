"""PRMU: the personalization reward model with user embeddings (model, training, reward)."""

from tagpr.prmu.model import PRMU, PRMUConfig, TextEmbedder
from tagpr.prmu.reward import PRMUReward, PRMUScorer

__all__ = ["PRMU", "PRMUConfig", "PRMUReward", "PRMUScorer", "TextEmbedder"]
