"""runsmon: TensorBoard's HParams dashboard for runs that never wrote hparams summaries."""

from runsmon.run import Run, ScalarPoint, flatten_flags

__all__ = ["Run", "ScalarPoint", "flatten_flags"]
__version__ = "0.1.0"
