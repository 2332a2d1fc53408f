"""Training: YAML configs, the AMP training loop with exact resume, LoRA runs, torchrun DDP."""

from jepa.train.config import TrainConfig, load_config
from jepa.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "load_config", "train"]
