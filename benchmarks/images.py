"""What run images cost runsmon: syncs with images and with ``--skip-images``.

``python benchmarks/images.py 200 10`` makes 200 Guild-layout runs (``run.py``'s
generator, under ``.bench/``), copies them with 10 PNG images each (64x64,
noise: about 12 KB) into a scratch directory, and times in-process
``RunsMonitor.run_once()`` calls on a logdir in memory: the first sync, an
unchanged one, the first sync of a restart on the same logdir, and the sync
after one image of one run changed; each with images and without. It also
counts the image files read (a restart and an unchanged sync must read none).
``--write-results`` puts the table in ``RESULTS.md`` (section "images").
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import run as bench  # noqa: E402  (benchmarks/run.py: the generator, RESULTS.md)

from runsmon import images  # noqa: E402
from runsmon.monitor import RunsMonitor  # noqa: E402
from runsmon.sources.guild import GuildRuns  # noqa: E402

RESULTS = os.path.join(HERE, "RESULTS.md")


def noise_png(rng: random.Random, size: int = 64) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def timed(monitor: RunsMonitor) -> float:
    t0 = time.perf_counter()
    monitor.run_once()
    return time.perf_counter() - t0


def measure(runs_dir: str, with_images: bool, changed: str) -> dict[str, float]:
    reads = [0]
    real = images.encode

    def counting(data: bytes, name: str) -> images.Encoded:
        reads[0] += 1
        return real(data, name)

    images.encode = counting  # type: ignore[assignment]
    logdir = tempfile.mkdtemp(prefix="runsmon-images-", dir=bench.logdir_base("memory"))
    try:
        out: dict[str, float] = {}
        source = GuildRuns(runs_dir)
        monitor = RunsMonitor(logdir, source, watch=False, images=with_images)
        out["first sync"] = timed(monitor)
        out["first sync: images read"] = reads[0]
        out["unchanged sync"] = timed(monitor)
        before = reads[0]
        monitor = RunsMonitor(logdir, GuildRuns(runs_dir), watch=False, images=with_images)
        out["restart: first sync"] = timed(monitor)
        out["restart: images read"] = reads[0] - before
        with open(changed, "wb") as f:
            f.write(noise_png(random.Random(1)))
        before = reads[0]
        out["one image changed: sync"] = timed(monitor)
        out["one image changed: images read"] = reads[0] - before
        return out
    finally:
        images.encode = real  # type: ignore[assignment]
        shutil.rmtree(logdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=int, nargs="?", default=200)
    parser.add_argument("per_run", type=int, nargs="?", default=10)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    base = bench.generated_runs(args.runs, 0)
    scratch = tempfile.mkdtemp(prefix="runsmon-images-runs-")
    runs_dir = os.path.join(scratch, "runs")
    shutil.copytree(base, runs_dir, symlinks=True)
    rng = random.Random(0)
    names = sorted(os.listdir(runs_dir))
    for name in names:
        os.makedirs(os.path.join(runs_dir, name, "plots"))
        for i in range(args.per_run):
            with open(os.path.join(runs_dir, name, "plots", f"p{i}.png"), "wb") as f:
                f.write(noise_png(rng))
    changed = os.path.join(runs_dir, names[0], "plots", "p0.png")
    try:
        rows = {
            "images": measure(runs_dir, True, changed),
            "--skip-images": measure(runs_dir, False, changed),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    head = f"{args.runs} runs x {args.per_run} PNG images (64x64, ~12 KB)"
    lines = [
        "<!-- images -->",
        f"## Run images ({head})",
        "",
        "In-process `RunsMonitor.run_once()`, logdir in memory, no watches"
        " (`benchmarks/images.py`). PNGs go in as they are: an image is read once,"
        " when it is new or changed, never at an unchanged sync or a restart."
        " Times vary by half from one try to the next on this shared 2-core"
        " machine; the counts are exact.",
        "",
        "| | images | `--skip-images` |",
        "|---|---|---|",
    ]
    for key in rows["images"]:
        cells = []
        for mode in ("images", "--skip-images"):
            value = rows[mode][key]
            cells.append(f"{value:.0f}" if "read" in key else f"{value * 1000:.0f} ms")
        lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
    lines.append("<!-- /images -->")
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write_results:
        with open(RESULTS, encoding="utf-8") as f:
            text = f.read()
        start, end = text.find("<!-- images -->"), text.find("<!-- /images -->")
        if start >= 0 and end > start:
            text = text[:start] + section + text[end + len("<!-- /images -->\n") :]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        with open(RESULTS, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
