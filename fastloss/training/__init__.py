"""Training single networks: the seeded training loop the other tools start from, and the
learning-rate schedules it shares with curve fitting."""

from fastloss.training.loop import evaluate_model, train
from fastloss.training.schedules import (
    FIT_SCHEDULES,
    SCHEDULES,
    TRAIN_SCHEDULES,
    check_schedule,
    lr_factor,
)

__all__ = [
    "FIT_SCHEDULES",
    "SCHEDULES",
    "TRAIN_SCHEDULES",
    "check_schedule",
    "evaluate_model",
    "lr_factor",
    "train",
]
