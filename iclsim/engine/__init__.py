"""The shared engine: scanned, vmappable trainers (and, later, sweeps and stores)."""

from iclsim.engine.trainer import (
    ScheduleConfig,
    Trainer,
    TrainState,
    build_trainer,
    trace_count,
)

__all__ = ["ScheduleConfig", "Trainer", "TrainState", "build_trainer", "trace_count"]
