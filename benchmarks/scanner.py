"""Scalar tags and last values of one event file: TensorBoard's loader vs runsmon.

Writes a seeded event file with tensorboard's ``EventFileWriter`` (by default
200,000 events, each holding one ``simple_value`` for each of 10 tags: about
28 MB), then times, best of ``repeat``:

- TensorBoard's ``EventFileLoader`` collecting the scalar tags (from each
  tag's first occurrence) and the last value of each;
- ``runsmon.events.FileScan`` doing the same;
- with ``--best SPEC`` (repeatable, as ``runsmon serve --best``), FileScan
  also keeping those running reductions (``--best 'm*=min'`` reduces every tag).

Usage: ``python benchmarks/scanner.py [--events 200000] [--tags 10] [--best 'm*=min']``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runsmon import events as rs_events  # noqa: E402
from runsmon.fs import LOCAL  # noqa: E402


def write_file(directory: str, events: int, tags: int, seed: int = 0) -> str:
    """Write the benchmark's event file into ``directory``; returns its path."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    rng = random.Random(seed)
    names = [f"m{i}" for i in range(tags)]
    writer = EventFileWriter(directory, max_queue_size=1000)
    for i in range(events):
        event = event_pb2.Event(wall_time=1.7e9 + i * 0.01, step=i)
        for name in names:
            event.summary.value.add(tag=name, simple_value=rng.random())
        writer.add_event(event)
    writer.close()
    (name,) = [n for n in os.listdir(directory) if "tfevents" in n]
    return os.path.join(directory, name)


def tensorboard_scan(path: str) -> dict[str, tuple[int, float]]:
    """Scalar tags and last (step, value) per tag with TensorBoard's loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    kinds: dict[str, bool] = {}
    last: dict[str, tuple[int, Any]] = {}
    scalar_class = summary_pb2.DATA_CLASS_SCALAR
    for event in EventFileLoader(path).Load():
        for value in event.summary.value:
            tag = value.tag
            scalar = kinds.get(tag)
            if scalar is None:
                scalar = kinds[tag] = value.metadata.data_class == scalar_class
            if scalar:
                last[tag] = (event.step, value.tensor)
    return {
        tag: (step, float(tensor_util.make_ndarray(tensor).item()))
        for tag, (step, tensor) in last.items()
    }


def runsmon_scan(path: str) -> dict[str, tuple[int, float]]:
    """The same with runsmon's scanner."""
    scan = rs_events.scan_file(LOCAL, path)
    return {tag: (v.step, v.value) for tag, v in scan.scalars.items()}


def runsmon_scan_reducing(path: str, specs: tuple[Any, ...]) -> dict[str, tuple[int, float]]:
    """:func:`runsmon_scan` with running reductions of the tags ``specs`` name."""
    from runsmon.reduce import tag_specs

    scan = rs_events.FileScan()
    scan.reduce_for = tag_specs(specs, "")
    scan.update(LOCAL, path)
    return {tag: (v.step, v.value) for tag, v in scan.scalars.items()}


def _best(fn, path: str, repeat: int) -> tuple[float, Any]:
    """The shortest of ``repeat`` runs of ``fn(path)``, and its result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(path)
        best = min(best, time.perf_counter() - start)
    return best, result


def run(
    events: int = 200_000,
    tags: int = 10,
    repeat: int = 3,
    seed: int = 0,
    best: tuple = (),
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; returns its measurements."""
    with tempfile.TemporaryDirectory(prefix="runsmon-bench-") as directory:
        path = write_file(directory, events, tags, seed)
        size = os.path.getsize(path)
        rs_seconds, rs_result = _best(runsmon_scan, path, repeat)
        tb_seconds, tb_result = _best(tensorboard_scan, path, repeat if tensorboard else 0)
        if not tensorboard:
            tb_seconds, tb_result = math.nan, rs_result
        reducing = None
        if best:
            reducing, _ = _best(lambda p: runsmon_scan_reducing(p, best), path, repeat)
    return {
        "reducing_seconds": reducing,
        "reducing_mb_s": size / reducing / 1e6 if reducing else None,
        "events": events,
        "tags": tags,
        "file_bytes": size,
        "tensorboard_seconds": tb_seconds,
        "tensorboard_mb_s": size / tb_seconds / 1e6,
        "runsmon_seconds": rs_seconds,
        "runsmon_mb_s": size / rs_seconds / 1e6,
        "ratio": tb_seconds / rs_seconds,
        "checksums_verified": rs_events.CHECKSUMS_VERIFIED,
        "results_match": tb_result == rs_result,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--best", action="append", default=[], metavar="TAG=min|max|last-mean:K")
    parser.add_argument(
        "--skip-tensorboard", action="store_true", help="time runsmon's scanner alone"
    )
    args = parser.parse_args(argv)
    specs: tuple = ()
    if args.best:
        from runsmon.reduce import parse_best

        specs = tuple(map(parse_best, args.best))
    r = run(args.events, args.tags, args.repeat, args.seed, specs, not args.skip_tensorboard)
    print(f"event file: {r['file_bytes'] / 1e6:.1f} MB, {r['events']} events x {r['tags']} tags")
    print(f"tensorboard EventFileLoader: {r['tensorboard_mb_s']:8.1f} MB/s")
    print(f"runsmon FileScan:            {r['runsmon_mb_s']:8.1f} MB/s")
    if r["reducing_mb_s"]:
        print(f"runsmon FileScan, --best:    {r['reducing_mb_s']:8.1f} MB/s")
    print(f"ratio: {r['ratio']:.1f}x; checksums verified: {r['checksums_verified']}")
    print(f"same tags and last values: {r['results_match']}")
    return 0 if r["results_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
