"""runsmon: TensorBoard's HParams dashboard for runs that never wrote hparams summaries."""

from runsmon.monitor import RunsMonitor
from runsmon.run import Run, ScalarPoint, flatten_flags
from runsmon.sources import DirRuns, GuildRuns, MLflowRuns, MLflowSQLiteRuns, WandbRuns

__all__ = [
    "DirRuns",
    "GuildRuns",
    "MLflowRuns",
    "MLflowSQLiteRuns",
    "Run",
    "RunsMonitor",
    "ScalarPoint",
    "WandbRuns",
    "flatten_flags",
]
__version__ = "0.1.0"
