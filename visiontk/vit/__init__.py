"""Vision Transformers (DINO) in the project's array module: weights, forward pass, attention."""

from .checkpoints import WeightsError, find_weights, read_weights
from .model import ViT, ViTConfig

__all__ = ["ViT", "ViTConfig", "WeightsError", "find_weights", "read_weights"]
