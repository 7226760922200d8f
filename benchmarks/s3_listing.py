"""What one listing of a prefix costs the S3 client: moto's S3 server on 127.0.0.1.

15,000 empty objects with the keys of Guild runs (10 a run) are uploaded to
moto's S3 server, in three prefixes of 5,000; then each prefix, and all of
them, are listed ``--repeat`` times. Per listing, the median wall time and
this process's CPU time (the client's: moto runs in a process of its own):

- ``find``: s3fs's ``find(prefix, detail=True)``, botocore's timestamps
  (what runsmon listed with before);
- ``pages``: ``ListObjectsV2``'s pages alone (runsmon.s3client.list_objects),
  botocore's timestamps, then runsmon's quick ones;
- ``refresh``: a whole ``ObjectStoreFileSystem.refresh()`` as a poll makes
  it (the listing compared with the last one), the old way (``find``) and
  the new one.

    python benchmarks/s3_listing.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runsmon import s3client  # noqa: E402
from runsmon.remotefs import ObjectStoreFileSystem  # noqa: E402
from runsmon.testing import MotoServer  # noqa: E402

RUN_KEYS = (
    ".guild/opref",
    ".guild/attrs/flags",
    ".guild/attrs/started",
    ".guild/attrs/stopped",
    ".guild/attrs/exit_status",
    ".guild/attrs/label",
    ".guild/attrs/initialized",
    ".guild/attrs/sourcecode_digest",
    "train/events.out.tfevents.1700000000.host.123.0",
    "val/events.out.tfevents.1700000000.host.123.1",
)
PARTS = 3
RUNS_PER_PART = 500


def upload(client: Any, bucket: str) -> float:
    """The objects, ``pipe`` d many at a time; seconds taken."""
    t0 = time.perf_counter()
    for part in range(PARTS):
        objects = {
            f"{bucket}/home/p{part}/runs/{uuid.UUID(int=part * 10**6 + r).hex}/{k}": b""
            for r in range(RUNS_PER_PART)
            for k in RUN_KEYS
        }
        client.pipe(objects)
    return time.perf_counter() - t0


def measure(fn: Callable[[], Any], repeat: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of ``fn`` (after one call to warm up), and its size."""
    size = len(fn())
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), size


def old_way(fs: ObjectStoreFileSystem) -> ObjectStoreFileSystem:
    """``fs`` listing through ``find``, as runsmon did before."""
    fs._find = lambda prefix: fs.store.find(prefix, detail=True).items()  # type: ignore[method-assign]
    return fs


def cases(prefix: str, plain: Any, quick: Any) -> dict[str, Callable[[], Any]]:
    """The ways of listing ``prefix`` (``bucket/key``) measured."""
    import s3fs
    from fsspec.asyn import sync

    bucket, _, key = prefix.partition("/")
    url = f"s3://{prefix}"
    old_fs = old_way(ObjectStoreFileSystem(url, store=s3fs.S3FileSystem(skip_instance_cache=True)))
    new_fs = ObjectStoreFileSystem(url)

    def pages(client: Any) -> Callable[[], Any]:
        return lambda: sync(client.loop, s3client.list_objects, client, bucket, key + "/")

    def refresh(fs: ObjectStoreFileSystem) -> Callable[[], Any]:
        return lambda: (fs._list(), fs._objects)[1]

    return {
        "find": lambda: plain.find(prefix, detail=True),
        "pages (botocore times)": pages(plain),
        "pages (quick times)": pages(quick),
        "refresh, before (find)": refresh(old_fs),
        "refresh, now": refresh(new_fs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import s3fs

    with MotoServer() as server:
        server.apply()
        bucket = f"b{uuid.uuid4().hex[:8]}"
        plain = s3fs.S3FileSystem(skip_instance_cache=True)
        plain.mkdir(bucket)
        quick = s3fs.S3FileSystem(skip_instance_cache=True)
        s3client.use_quick_timestamps(quick)
        took = upload(plain, bucket)
        print(f"uploaded {PARTS * RUNS_PER_PART * len(RUN_KEYS)} objects in {took:.1f} s")
        print(f"per listing, median of {args.repeat}: wall / client CPU")
        for prefix in (f"{bucket}/home/p0", f"{bucket}/home"):
            for name, fn in cases(prefix, plain, quick).items():
                wall, cpu, size = measure(fn, args.repeat)
                load = os.getloadavg()[0]
                print(
                    f"{size:>6} keys  {name:<24} {wall:6.2f} s  {cpu:6.2f} s CPU (load {load:.1f})",
                    flush=True,
                )


if __name__ == "__main__":
    main()
