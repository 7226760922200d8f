"""The image files a run writes, as image summaries in TensorBoard's Images tab.

As Guild's own monitor does (``guild tensorboard``): every image file in a
run's directory (``.png``, ``.jpg``/``.jpeg``, ``.gif``, ``.tif``/``.tiff``;
links left out, at most :data:`MAX_IMAGES` a run) becomes an image summary
whose tag is its path in the run (``images/red.png``), in the TensorBoard run
``NAME/.images``: where a Guild user finds them.

PNG, JPEG and GIF files go in as they are: TensorBoard serves the bytes of a
summary as they were written and every browser shows those formats, so only
their dimensions are read, from the file's header; the image is never decoded
or encoded again (Guild re-encodes every image to PNG with Pillow). A TIFF,
which browsers do not show, is converted to PNG with Pillow, an optional
extra (``pip install 'runsmon[images]'``); without it TIFFs are left out,
said in one line.

:class:`ImageSync` keeps one file of runsmon's own, :data:`IMAGES_FILE`, in
step: a new or changed image (by size and mtime, from the run's file
listing) is appended as the next step of its tag; the manifest remembers,
for each image, the size and mtime written and where its record is, so a
restart re-reads nothing unchanged and a run written anew in a new directory
copies the records of its unchanged images. An image deleted from the run
has the run written anew without it (TensorBoard keeps what it has read of a
tag).
"""

from __future__ import annotations

import io
import os
import struct
from typing import TYPE_CHECKING, NamedTuple

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.image import metadata as image_metadata

from runsmon import events
from runsmon.fs import FileSystem
from runsmon.logdir import Logdir, Manifest
from runsmon.report import Reporter, describe_error

if TYPE_CHECKING:  # runstate needs runfiles, which needs this module
    from runsmon.runstate import RunState, Writes

#: The extensions Guild 0.9's ``guild tensorboard`` shows (``guild/tensorboard.py``).
IMAGE_EXTENSIONS = frozenset((".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff"))
#: Images shown per run, at most (Guild's ``MAX_IMAGE_SUMMARIES``).
MAX_IMAGES = 100
#: Where a run's image summaries go in its logdir directory (Guild's ``.images``).
IMAGES_DIR = ".images"
IMAGES_FILE = f"{IMAGES_DIR}/events.out.tfevents.0000000000.runsmon-images"


def is_image_file(name: str) -> bool:
    """Whether a file name is one of an image Guild shows.

    >>> is_image_file("plot.PNG"), is_image_file("scan.tif"), is_image_file("notes.txt")
    (True, True, False)
    """
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class ImageError(Exception):
    """An image file that cannot be shown; the message says why."""


class NeedsPillow(ImageError):
    """A TIFF (or a file not what its name says) and no Pillow to convert it."""


class Encoded(NamedTuple):
    """An image as its summary holds it."""

    data: bytes
    width: int
    height: int


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG or GIF header; None for anything else.

    >>> header_size(b"GIF89a" + struct.pack("<HH", 8, 12) + bytes(7))
    (8, 12)
    >>> header_size(b"not an image") is None
    True
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return width, height
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


#: JPEG start-of-frame markers (0xC0-0xCF but DHT, JPG and DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF and pos + 9 <= end:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def encode(data: bytes, name: str) -> Encoded:
    """The image as a summary holds it: PNG, JPEG and GIF as they are, anything
    else converted to PNG with Pillow. Raises :class:`ImageError`."""
    size = header_size(data)
    if size is not None:
        if not all(size):
            raise ImageError("an image of no pixels")
        return Encoded(data, *size)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise NeedsPillow(
            f"{name}: TIFF images need Pillow (pip install 'runsmon[images]')"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            out = io.BytesIO()
            img.save(out, format="PNG")
            return Encoded(out.getvalue(), img.width, img.height)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageError(f"not an image Pillow can read ({describe_error(e)})") from None


def image_event(tag: str, image: Encoded, step: int, wall_time: float) -> event_pb2.Event:
    """An event holding ``image`` under ``tag``, in the Images plugin's own form."""
    meta = image_metadata.create_summary_metadata(display_name=tag, description="")
    meta.data_class = summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)]
        ),
        string_val=[str(image.width).encode(), str(image.height).encode(), image.data],
    )
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta)])
    summary.value[0].tensor.CopyFrom(tensor)
    return events.summary_event(summary, step=step, wall_time=wall_time)


#: Per image in the manifest (``state.images``): size and mtime written, its
#: step, and the offset and length of its last record in :data:`IMAGES_FILE`.
SIZE, MTIME, STEP, OFFSET, LENGTH = range(5)


class ImageSync:
    """Keeps a run's :data:`IMAGES_FILE` in step with its image files."""

    def __init__(self, logdir: Logdir, fs: FileSystem, reporter: Reporter, writes: Writes) -> None:
        self.logdir = logdir
        self.fs = fs
        self.reporter = reporter
        self.writes = writes
        self._bad: dict[tuple[str, str], tuple[int, int]] = {}  # (run id, rel) -> key seen bad

    def sync(self, st: RunState, previous: Manifest | None = None) -> str | None:
        """Append what is new or changed; returns why the run must be written
        anew (an image is gone), if it must. ``previous``: the run's directory
        this one replaces, whose records of unchanged images are copied."""
        listed = st.files.images
        state = st.manifest.state
        written: dict[str, list[int]] = state.images or {}
        if not listed and not written:
            return None
        gone = sorted(rel for rel in written if rel not in listed)
        if gone:
            return f"image {gone[0]} was deleted"
        old = (previous.state.images or {}) if previous is not None else {}
        records: list[tuple[str, list[int], bytes]] = []  # rel, its entry, its record
        for rel, (path, size, mtime_ns) in listed.items():
            have = written.get(rel)
            if have is not None and (have[SIZE], have[MTIME]) == (size, mtime_ns):
                continue
            record, step = None, have[STEP] + 1 if have is not None else 0
            before = old.get(rel)
            if have is None and before is not None and before[:2] == [size, mtime_ns]:
                record, step = self._copy(previous, before), before[STEP]  # type: ignore[arg-type]
            if record is None:
                record = self._encode(st, rel, path, (size, mtime_ns), step)
                if record is None:
                    continue
            records.append((rel, [size, mtime_ns, step], record))
        if not records:
            return None
        # Offsets from what the file holds: whatever a kill left there.
        offset = self._size(st.manifest)
        chunks = [] if offset else [events.encode_events([], file_version=True)]
        offset += len(chunks[0]) if chunks else 0
        new = {rel: list(entry) for rel, entry in written.items()}
        for rel, entry, record in records:
            new[rel] = [*entry, offset, len(record)]
            chunks.append(record)
            offset += len(record)
        data = b"".join(chunks)
        if self.writes.attempt(
            st, "write", lambda: self.logdir.append_file(st.manifest, IMAGES_FILE, data)
        ):
            state.images = new
            self.writes.unsaved.add(st.run.id)
        return None

    def _size(self, manifest: Manifest) -> int:
        try:
            return os.path.getsize(self.logdir.run_path(manifest.name, IMAGES_FILE))
        except OSError:
            return 0

    def _copy(self, previous: Manifest, record: list[int]) -> bytes | None:
        """An image's record as the run's previous directory holds it."""
        try:
            with open(self.logdir.run_path(previous.name, IMAGES_FILE), "rb") as f:
                f.seek(record[OFFSET])
                data = f.read(record[LENGTH])
        except OSError:
            return None
        return data if len(data) == record[LENGTH] else None

    def _encode(
        self, st: RunState, rel: str, path: str, key: tuple[int, int], step: int
    ) -> bytes | None:
        """The framed record of one image file (None: it cannot be shown, said once)."""
        bad = (st.run.id, rel)
        if self._bad.get(bad) == key:
            return None
        try:
            image = encode(self.fs.read_bytes(path), rel)
        except NeedsPillow as e:
            self._bad[bad] = key
            self.reporter.warn("", "pillow", f"runsmon: images left out: {e}")
            return None
        except (ImageError, OSError) as e:
            self._bad[bad] = key
            self.reporter.warn(
                st.run.id,
                f"image {rel}",
                f"run {st.name}: image {rel}: {describe_error(e)}; left out",
            )
            return None
        self._bad.pop(bad, None)
        self.reporter.clear(st.run.id, f"image {rel}")
        event = image_event(rel, image, step, key[1] / 1e9)
        return events.encode_record(event.SerializeToString())
