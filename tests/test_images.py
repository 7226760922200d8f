"""Run images in TensorBoard's Images tab, as `guild tensorboard` shows them.

The runs are Guild 0.9's own (tests/data/guild-0.9/attrs-home, made by
tests/data/make_guild_fixture.sh): `images.py` wrote a PNG, a JPEG, a GIF
and a TIFF. TensorBoard's Images plugin is the judge: its HTTP API must
serve each PNG, JPEG and GIF byte for byte as the run wrote it.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import pytest
from PIL import Image

from runsmon import images
from runsmon.images import IMAGES_FILE, encode, header_size
from runsmon.monitor import RunsMonitor
from runsmon.sources.guild import GuildRuns

HOME = Path(__file__).parent / "data" / "guild-0.9" / "attrs-home"
IMAGES_RUN = "fb3d8ee0a4a94fd2a4c42cc92062bbb7"
#: The tags Guild 0.9 gives this run's images (read in its own logdir).
GUILD_TAGS = {"gray.jpg", "images/anim.gif", "images/red.png", "scan.tiff"}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG written by hand (what any tool's PNG is to the header reader)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# -- the format, without TensorBoard -------------------------------------------------


@pytest.mark.parametrize("name", sorted(GUILD_TAGS - {"scan.tiff"}))
def test_header_sizes_match_pillow(name):
    data = (HOME / "runs" / IMAGES_RUN / name).read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        assert header_size(data) == img.size


def test_png_jpeg_gif_go_in_as_they_are_and_tiff_as_png():
    for name in GUILD_TAGS:
        data = (HOME / "runs" / IMAGES_RUN / name).read_bytes()
        out = encode(data, name)
        with Image.open(io.BytesIO(data)) as img:
            assert (out.width, out.height) == img.size
        if name.endswith(".tiff"):
            assert out.data.startswith(b"\x89PNG")
            with Image.open(io.BytesIO(out.data)) as back:
                assert back.size == img.size
        else:
            assert out.data == data


def test_tiff_without_pillow_is_one_clear_line(tmp_path, monkeypatch, caplog):
    runs = tmp_path / "runs"
    shutil.copytree(HOME / "runs", runs, symlinks=True)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` fails
    monitor = RunsMonitor(str(tmp_path / "logdir2"), GuildRuns(str(runs)))
    monitor.run_once()
    monitor.run_once()
    said = [r.getMessage() for r in caplog.records if "Pillow" in r.getMessage()]
    assert said == [
        "runsmon: images left out: scan.tiff: TIFF images need Pillow "
        "(pip install 'runsmon[images]')"
    ]
    state = _manifest_state(tmp_path / "logdir2", IMAGES_RUN)
    assert set(state["images"]) == GUILD_TAGS - {"scan.tiff"}


def _run_dir(logdir: Path, run_id: str) -> Path:
    import json

    for d in logdir.iterdir():
        m = d / ".runsmon-run.json"
        if m.exists() and json.loads(m.read_text())["id"] == run_id:
            return d
    raise AssertionError(f"no directory of {run_id} in {logdir}")


def _manifest_state(logdir: Path, run_id: str) -> dict:
    import json

    return json.loads((_run_dir(logdir, run_id) / ".runsmon-run.json").read_text())["state"]


def test_unchanged_images_are_never_encoded_again(tmp_path, monkeypatch):
    """Nor read: not at the next sync, not after a restart, not when the run is
    written anew because an image was deleted."""
    runs = tmp_path / "runs"
    shutil.copytree(HOME / "runs", runs, symlinks=True)
    run = runs / IMAGES_RUN
    encoded: list[int] = []
    real = images.encode
    monkeypatch.setattr(images, "encode", lambda data, name: encoded.append(1) or real(data, name))
    logdir = tmp_path / "logdir"
    RunsMonitor(str(logdir), GuildRuns(str(runs))).run_once()
    assert len(encoded) == 4
    monitor = RunsMonitor(str(logdir), GuildRuns(str(runs)))  # a restart
    monitor.run_once()
    monitor.run_once()
    assert len(encoded) == 4
    (run / "images" / "red.png").write_bytes(png(3, 2, (0, 255, 0)))
    monitor.run_once()
    assert len(encoded) == 5  # the changed one only
    (run / "gray.jpg").unlink()
    monitor.run_once()  # the run is written anew, in a new directory
    monitor.run_once()
    assert len(encoded) == 5
    state = _manifest_state(logdir, IMAGES_RUN)
    assert set(state["images"]) == GUILD_TAGS - {"gray.jpg"}
    assert state["images"]["images/red.png"][2] == 1  # its second version


def test_skip_images_writes_none(tmp_path):
    logdir = tmp_path / "logdir"
    _serve_once(logdir, "--skip-images")
    assert not list(logdir.glob("*/.images"))
    _serve_once(logdir)  # the same logdir, images wanted now
    assert len(list(logdir.glob("*/.images"))) == 1
    _serve_once(logdir, "--skip-images")  # and not any more: the run is written anew
    assert not list(logdir.glob("*/.images"))


def _serve_once(logdir: Path, *args: str, home: Path = HOME) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runsmon",
            "serve",
            "--once",
            "--no-tensorboard",
            "--logdir",
            str(logdir),
            *args,
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


# -- through TensorBoard's Images plugin ---------------------------------------------


def _get_bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def _image_tags(tb) -> dict[str, set[str]]:
    """Run -> image tags, as the Images tab lists them."""
    return {run: set(tags) for run, tags in tb.get("/data/plugin/images/tags").items() if tags}


def _latest_image(tb, run: str, tag: str) -> bytes:
    query = urllib.parse.urlencode({"run": run, "tag": tag, "sample": 0})
    entries = tb.get(f"/data/plugin/images/images?{query}")
    return _get_bytes(f"{tb.url}/data/plugin/images/individualImage?{entries[-1]['query']}")


@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_images_tab_serves_the_run_files(tmp_path, tensorboard, load_fast):
    logdir = tmp_path / "logdir"
    _serve_once(logdir)
    name = _run_dir(logdir, IMAGES_RUN).name
    tb = tensorboard(logdir, load_fast=load_fast)
    tags = tb.wait_for(lambda t: t, fetch=lambda: _image_tags(tb), timeout=30)
    # Where Guild puts them: the run NAME/.images, tagged by path in the run.
    assert tags == {f"{name}/.images": GUILD_TAGS}
    run_dir = HOME / "runs" / IMAGES_RUN
    for tag in GUILD_TAGS:
        served = _latest_image(tb, f"{name}/.images", tag)
        data = (run_dir / tag).read_bytes()
        if tag.endswith(".tiff"):
            with Image.open(io.BytesIO(served)) as got, Image.open(io.BytesIO(data)) as want:
                assert got.format == "PNG" and got.size == want.size
                assert list(got.convert("RGB").getdata()) == list(want.convert("RGB").getdata())
        else:
            assert served == data, tag


@pytest.mark.parametrize("load_fast", [False, True], ids=["python-loader", "rust-loader"])
def test_images_follow_the_run_live(tmp_path, tensorboard, load_fast):
    """A changed image shows its new bytes, a new one appears, a deleted one goes,
    while the monitor runs (the run has ended: its safety-net round finds them)."""
    runs = tmp_path / "runs"
    shutil.copytree(HOME / "runs", runs, symlinks=True)
    run = runs / IMAGES_RUN
    logdir = tmp_path / "logdir"

    def images_run() -> str:
        return f"{_run_dir(logdir, IMAGES_RUN).name}/.images"

    source = GuildRuns(str(runs))
    with RunsMonitor(str(logdir), source, interval=0.2, full_check_interval=0.6):
        tb = tensorboard(logdir, load_fast=load_fast)
        tb.wait_for(lambda t: images_run() in t, fetch=lambda: _image_tags(tb), timeout=30)
        green = png(5, 3, (0, 255, 0))
        (run / "images" / "red.png").write_bytes(green)
        tb.wait_for(
            lambda b: b == green, fetch=lambda: _latest_image(tb, images_run(), "images/red.png")
        )
        blue = png(2, 2, (0, 0, 255))
        (run / "images" / "new.png").write_bytes(blue)
        tb.wait_for(
            lambda t: "images/new.png" in t.get(images_run(), ()), fetch=lambda: _image_tags(tb)
        )
        assert _latest_image(tb, images_run(), "images/new.png") == blue
        (run / "gray.jpg").unlink()  # the run is written anew, in a new directory
        want = (GUILD_TAGS - {"gray.jpg"}) | {"images/new.png"}
        tags = tb.wait_for(lambda t: list(t.values()) == [want], fetch=lambda: _image_tags(tb))
        assert list(tags) == [images_run()]
        assert _latest_image(tb, images_run(), "images/red.png") == green


def _records_at_offsets(logdir: Path) -> dict[str, str]:
    """rel -> the tag of the record the manifest says is its own."""
    from tensorboard.compat.proto import event_pb2

    from runsmon import events

    state = _manifest_state(logdir, IMAGES_RUN)
    data = (_run_dir(logdir, IMAGES_RUN) / IMAGES_FILE).read_bytes()
    out = {}
    for rel, (_, _, _, offset, length) in state["images"].items():
        [record] = events.split_records(data[offset : offset + length]).records
        out[rel] = event_pb2.Event.FromString(record).summary.value[0].tag
    return out


def test_offsets_follow_the_file_whatever_the_manifest_lost(tmp_path):
    """A kill between an append and the manifest's save: the images are written
    again, after what the file holds, and the manifest points at them."""
    import json

    runs = tmp_path / "runs"
    shutil.copytree(HOME / "runs", runs, symlinks=True)
    logdir = tmp_path / "logdir"
    RunsMonitor(str(logdir), GuildRuns(str(runs))).run_once()
    assert _records_at_offsets(logdir) == {tag: tag for tag in GUILD_TAGS}
    manifest = _run_dir(logdir, IMAGES_RUN) / ".runsmon-run.json"
    data = json.loads(manifest.read_text())
    del data["state"]["images"]
    manifest.write_text(json.dumps(data))
    size = (_run_dir(logdir, IMAGES_RUN) / IMAGES_FILE).stat().st_size
    RunsMonitor(str(logdir), GuildRuns(str(runs))).run_once()
    assert _records_at_offsets(logdir) == {tag: tag for tag in GUILD_TAGS}
    assert min(e[3] for e in _manifest_state(logdir, IMAGES_RUN)["images"].values()) == size


def test_skip_images_shows_none_in_the_images_tab(tmp_path, tensorboard):
    logdir = tmp_path / "logdir"
    _serve_once(logdir, "--skip-images", "-Fo", "images.py")
    tb = tensorboard(logdir, load_fast=True)
    tb.wait_for(lambda t: len(t) == 1, fetch=lambda: tb.get("/data/plugin/scalars/tags"))
    assert _image_tags(tb) == {}
