"""A toy training script for runsmon's demo: no ML, real TensorBoard event files.

It writes `loss` and `accuracy` to `train/` and `val/` event files in the
current directory (the run directory) and prints `loss: ...` lines, which a
Guild-style runner turns into root scalars.

Two settings come from the environment, not flags, so they stay out of the
hparams: `DEMO_EPOCH_SECONDS` (how long an epoch takes, default 0) and
`DEMO_FAIL_AT` (the epoch at which the run fails, default never).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def boolean(text: str) -> bool:
    return text.lower() in ("true", "yes", "1")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--augment", type=boolean, default=False)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch_norm", type=boolean, default=False)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    epoch_seconds = float(os.environ.get("DEMO_EPOCH_SECONDS", "0"))
    fail_at = int(os.environ.get("DEMO_FAIL_AT", "-1"))

    rng = random.Random(
        f"{args.lr}{args.optimizer}{args.layers}{args.dropout}{args.augment}{args.activation}"
    )
    quality = (
        1.0
        - abs(math.log10(args.lr) + 2.5) / 4
        - abs(args.dropout - 0.2)
        + (0.05 if args.augment else 0.0)
        + (0.03 if args.optimizer == "adam" else 0.0)
        + 0.02 * min(args.layers, 4)
        + (0.02 if args.batch_norm else 0.0)
        + (0.02 if args.activation == "gelu" else 0.0)
        - 0.01 * abs(math.log2(args.batch_size / 64))
    )
    writers = {g: EventFileWriter(g, flush_secs=1) for g in ("train", "val")}
    for epoch in range(args.epochs):
        if epoch == fail_at:
            print(f"error: loss diverged at epoch {epoch}", file=sys.stderr)
            return 1
        progress = (epoch + 1) / args.epochs
        train_loss = 2.5 * math.exp(-3 * progress * max(quality, 0.1)) + rng.uniform(0, 0.05)
        val_loss = train_loss * (1.1 + rng.uniform(0, 0.1))
        for group, loss in (("train", train_loss), ("val", val_loss)):
            accuracy = max(0.0, min(1.0, 1 - loss / 2.5))
            writer = writers[group]
            for tag, value in (("loss", loss), ("accuracy", accuracy)):
                summary = summary_pb2.Summary(
                    value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
                )
                writer.add_event(
                    event_pb2.Event(wall_time=time.time(), step=epoch, summary=summary)
                )
            writer.flush()
        print(f"step: {epoch}")
        print(f"loss: {val_loss:.4f}")
        print(f"accuracy: {max(0.0, 1 - val_loss / 2.5):.4f}")
        time.sleep(epoch_seconds)
    for writer in writers.values():
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
