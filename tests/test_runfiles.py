"""RunFiles on its own: which event files a run has, where they go, what they hold."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from runsmon.fs import LOCAL, Entry, Stat
from runsmon.runfiles import FILTER, LINK, SKIP, RunFiles
from runsmon.testing import write_event_file


class ListingFS:
    """The local filesystem, counting directory listings by path."""

    def __init__(self) -> None:
        self.listed: Counter[str] = Counter()

    def scandir(self, path: str) -> list[Entry]:
        self.listed[path] += 1
        return LOCAL.scandir(path)

    def stat(self, path: str) -> Stat | None:
        return LOCAL.stat(path)

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        return LOCAL.read_bytes(path, offset, size)

    def read_text(self, path: str) -> str:
        return LOCAL.read_text(path)

    def local_path(self, path: str) -> str | None:
        return LOCAL.local_path(path)


def _events(directory: Path, name: str, scalars: dict) -> str:
    return write_event_file(directory, scalars, name=f"events.out.tfevents.{name}")


def _hparams_file(directory: Path, metrics: dict[str, float]) -> str:
    """An event file as ``add_hparams`` leaves it: hparams summaries, then its metrics."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory))
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=hp.hparams_pb({"lr": 0.1})))
    writer.close()
    [name] = [n for n in os.listdir(directory) if "tfevents" in n]
    path = str(directory / name)
    write_event_file(directory, {t: [(0, v)] for t, v in metrics.items()}, name=name, mode="ab")
    return path


def _rels(files: RunFiles) -> dict[str, str]:
    return {os.path.relpath(p, files.root): rel for p, (_, rel) in files.placement().items()}


def test_the_walk_places_each_file_and_leaves_out_what_is_not_the_runs(tmp_path):
    run = tmp_path / "run"
    _events(run, "1.root", {"loss": [(0, 1.0)]})
    _events(run / "train", "1.t", {"loss": [(0, 1.0)]})
    _events(run / "val" / "deep", "1.v", {"acc": [(0, 0.5)]})
    _events(run / ".guild", "1.g", {"out": [(0, 2.0)]})  # Guild's output scalars: the root
    _events(run / ".hidden", "1.h", {"x": [(0, 1.0)]})  # other dot dirs: left out
    _events(run / "nested", "1.n", {"x": [(0, 1.0)]})  # a run nested in this one: excluded
    (run / "notes.txt").write_text("not an event file")
    outside = tmp_path / "dataset"
    _events(outside, "1.d", {"x": [(0, 1.0)]})
    os.symlink(outside, run / "data")  # a linked directory is never followed
    files = RunFiles(str(run), LOCAL, exclude=frozenset({"nested"}))
    assert files.refresh()
    assert _rels(files) == {
        "events.out.tfevents.1.root": "events.out.tfevents.1.root",
        "train/events.out.tfevents.1.t": "train/events.out.tfevents.1.t",
        "val/deep/events.out.tfevents.1.v": "val/deep/events.out.tfevents.1.v",
        ".guild/events.out.tfevents.1.g": "events.out.tfevents.1.g",
    }
    assert set(files.modes().values()) == {LINK}
    assert files.metrics() == {("loss", ""), ("loss", "train"), ("acc", "val/deep"), ("out", "")}
    assert not files.refresh()  # nothing moved: nothing changed


def test_a_directory_is_listed_again_only_when_its_mtime_moved(tmp_path):
    run = tmp_path / "run"
    _events(run / "train", "1.t", {"loss": [(0, 1.0)]})
    old = time.time() - 60
    for d in (run, run / "train"):
        os.utime(d, (old, old))
    fs = ListingFS()
    files = RunFiles(str(run), fs)
    files.refresh()
    fs.listed.clear()
    assert not files.refresh()
    assert not fs.listed
    path = _events(run / "train", "2.t", {"loss": [(0, 0.5)]})  # moves train/'s mtime
    assert files.refresh()
    assert fs.listed == Counter({str(run / "train"): 1})
    assert path in files.files
    os.remove(path)
    assert files.refresh() and path not in files.files


def test_appended_bytes_are_all_that_is_read_again(tmp_path):
    run = tmp_path / "run"
    path = _events(run, "1.a", {"loss": [(0, 1.0), (1, 0.5)]})
    files = RunFiles(str(run), LOCAL)
    files.refresh()
    assert files.last_values() == {("loss", ""): 0.5}
    offset = files.files[path].scan.offset
    assert offset == os.path.getsize(path)
    write_event_file(
        run, {"loss": [(2, 0.25)], "acc": [(2, 0.75)]}, name=os.path.basename(path), mode="ab"
    )
    assert files.refresh()
    assert files.files[path].scan.offset > offset
    assert files.last_values() == {("loss", ""): 0.25, ("acc", ""): 0.75}
    assert not files.refresh()


def test_the_last_value_is_the_highest_step_over_every_file_of_a_group(tmp_path):
    run = tmp_path / "run"
    _events(run, "1.a", {"loss": [(0, 1.0), (5, 0.125)]})
    _events(run, "2.b", {"loss": [(3, 0.375)]})  # a later file, an earlier step
    files = RunFiles(str(run), LOCAL)
    files.refresh()
    assert files.last_values() == {("loss", ""): 0.125}


def test_hparams_files_are_copied_and_add_hparams_metrics_are_the_runs_own(tmp_path):
    run = tmp_path / "run"
    _events(run, "1.curves", {"loss": [(0, 1.0)]})
    stamp = run / "1704164685.123456"  # add_hparams' timestamp directory
    path = _hparams_file(stamp, {"hparam/accuracy": 0.9})
    files = RunFiles(str(run), LOCAL)
    files.refresh()
    assert files.modes()[path] == FILTER
    assert files.placed(FILTER) == {os.path.basename(path): path}
    assert ("hparam/accuracy", "") in files.metrics()


def test_an_hparams_file_alone_in_a_subdirectory_stays_there(tmp_path):
    run = tmp_path / "run"
    path = _hparams_file(run / "version_0", {"val_loss": 0.2})  # Lightning: one file
    files = RunFiles(str(run), LOCAL)
    files.refresh()
    assert files.placed(FILTER) == {f"version_0/{os.path.basename(path)}": path}
    assert files.metrics() == {("val_loss", "version_0")}


def test_a_file_that_cannot_be_read_is_left_out_with_its_cause(tmp_path):
    run = tmp_path / "run"
    good = _events(run, "1.good", {"loss": [(0, 1.0)]})
    fifo = str(run / "events.out.tfevents.2.fifo")
    os.mkfifo(fifo)
    files = RunFiles(str(run), LOCAL)
    files.refresh()
    assert files.modes() == {good: LINK, fifo: SKIP}
    assert files.errors == {fifo: "not a regular file"}
    assert [f.path for f, _ in files.shown()] == [good]
    os.remove(fifo)
    assert files.refresh() and fifo not in files.files


def test_with_skip_hparams_a_runs_own_hparams_are_linked_as_they_are(tmp_path):
    """As `guild tensorboard --skip-hparams` does: runsmon writes no sessions,
    so nothing of the run's own needs leaving out."""
    run = tmp_path / "run"
    path = _hparams_file(run / "version_0", {"val_loss": 0.2})
    files = RunFiles(str(run), LOCAL, hparams=False)
    files.refresh()
    assert files.modes()[path] == LINK
    assert files.placed(LINK) == {f"version_0/{os.path.basename(path)}": path}


def test_image_files_come_from_the_listing_with_size_and_mtime(tmp_path):
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "plots" / "a.png").write_bytes(b"x" * 3)
    (run / "b.JPG").write_bytes(b"y")
    (run / "notes.txt").write_bytes(b"z")
    (run / "link.png").symlink_to(run / "b.JPG")  # links are left out, as Guild does
    (run / ".hidden").mkdir()
    (run / ".hidden" / "c.png").write_bytes(b"w")
    files = RunFiles(str(run), LOCAL)
    assert files.refresh()
    assert {rel: size for rel, (_, size, _) in files.images.items()} == {
        "b.JPG": 1,
        "plots/a.png": 3,
    }
    assert not files.refresh()  # nothing moved
    (run / "plots" / "a.png").write_bytes(b"x" * 4)  # rewritten in place: no new listing
    assert files.refresh() and files.images["plots/a.png"][1] == 4
    (run / "b.JPG").unlink()
    assert files.refresh() and set(files.images) == {"plots/a.png"}
    assert RunFiles(str(run), LOCAL, images=False).refresh() is False
    assert not RunFiles(str(run), LOCAL, images=False).images
