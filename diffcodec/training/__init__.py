"""Training at scale: LightningCLI recipes, stage initialisation, schedules, validation callbacks, export.

Submodules import Lightning; ``diffcodec.training.cli.run_argv`` is what ``diffcodec fit|validate|export``
calls.
"""

from diffcodec.training.accumulation import GradientAccumulation
from diffcodec.training.callbacks import RealCodingValidation, images_in_batch
from diffcodec.training.checkpoint import (
    SafeCheckpointIO,
    TrainableCheckpoint,
    load_training_state,
    strip_base_weights,
)
from diffcodec.training.export import codec_from_checkpoint, export_checkpoint
from diffcodec.training.init import InitFrom, freeze_modules
from diffcodec.training.schedules import (
    Constant,
    Cosine,
    HyperparameterSchedule,
    LearningRateSchedule,
    LinearWarmup,
    Piecewise,
    Schedule,
)

__all__ = [
    "Constant",
    "Cosine",
    "GradientAccumulation",
    "HyperparameterSchedule",
    "InitFrom",
    "LearningRateSchedule",
    "LinearWarmup",
    "Piecewise",
    "RealCodingValidation",
    "SafeCheckpointIO",
    "Schedule",
    "TrainableCheckpoint",
    "codec_from_checkpoint",
    "export_checkpoint",
    "freeze_modules",
    "images_in_batch",
    "load_training_state",
    "strip_base_weights",
]
