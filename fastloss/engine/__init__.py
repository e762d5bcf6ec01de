"""The evaluation engine: the one loop that runs a model at many points of a subspace.

`prepare` checks the inputs and builds an `Evaluation` (batched model, data on the device);
`run` evaluates points chunk by chunk (tile planning, BN recompute, out-of-memory retry,
progress, resume) into a sink. What is computed per point is a reducer (`reducers`); where
results go is a sink (`sinks`). `evaluate_serial` is the plain loop it is checked against;
`profile_run` shows where a run's time goes; `sharding` runs it on several processes.
"""

from fastloss.engine.inputs import (
    Data,
    as_tensors,
    batches,
    check_batch_size,
    check_bn,
    check_data_fits,
    collect_splits,
    default_batch_size,
    default_device,
    has_batch_norm,
)
from fastloss.engine.loop import (
    Evaluation,
    RunInfo,
    evaluate_chunk,
    prepare,
    recompute_bn,
    run,
    run_in_memory,
)
from fastloss.engine.memory import keep_freed_memory
from fastloss.engine.profile import OpTime, RunProfile, profile_run
from fastloss.engine.progress import progress_bar
from fastloss.engine.reducers import (
    EnsembleWithReference,
    LossMetrics,
    Predictions,
    Probabilities,
    Reducer,
    check_metrics,
)
from fastloss.engine.serial import evaluate_serial
from fastloss.engine.sharding import (
    ShardedSink,
    init_from_environment,
    leave,
    shard_folder,
    world,
)
from fastloss.engine.sinks import MemorySink, Sink
from fastloss.engine.tiles import CPU_TILE_BYTES, largest_activation_bytes, plan_tiles

__all__ = [
    "CPU_TILE_BYTES",
    "Data",
    "EnsembleWithReference",
    "Evaluation",
    "LossMetrics",
    "MemorySink",
    "OpTime",
    "Predictions",
    "Probabilities",
    "Reducer",
    "RunInfo",
    "RunProfile",
    "ShardedSink",
    "Sink",
    "as_tensors",
    "batches",
    "check_batch_size",
    "check_bn",
    "check_data_fits",
    "check_metrics",
    "collect_splits",
    "default_batch_size",
    "default_device",
    "evaluate_chunk",
    "evaluate_serial",
    "init_from_environment",
    "leave",
    "has_batch_norm",
    "keep_freed_memory",
    "largest_activation_bytes",
    "plan_tiles",
    "prepare",
    "profile_run",
    "progress_bar",
    "recompute_bn",
    "run",
    "run_in_memory",
    "shard_folder",
    "world",
]
