"""Stage 2, training: the loop (:mod:`.loop`), the engines behind one interface (:mod:`.engine`),
optimisers, schedules, criteria, weight averaging and DDP."""

from .loop import TrainingDiverged, train

__all__ = ["TrainingDiverged", "train"]
