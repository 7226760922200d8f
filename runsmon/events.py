"""Event files: TFRecord framing, an incremental scanner, and encoding.

An event file is a sequence of records, each framed as::

    uint64 length (little-endian)
    uint32 masked CRC32C of the 8 length bytes
    byte   data[length]            a serialized tensorboard Event
    uint32 masked CRC32C of data

Reading
    :class:`FileScan` keeps, per event file, how many bytes were consumed and
    what was seen: every summary tag with the plugin that owns it (decided at
    the tag's first occurrence in the file, as TensorBoard does), the last
    value of every scalar tag, whether hparams summaries
    are present and the flags of a ``_hparams_/session_start_info``.
    :meth:`FileScan.update` reads only what was appended since the last call,
    in bounded chunks, and never raises on bad data.

    The *last value* of a tag is the value of its last record in file order,
    which is what TensorBoard's HParams plugin shows as a metric value: both
    loaders keep the most recently read point of a series (the Python loader
    via ``read_last_scalars`` taking ``events[-1]``; the Rust one drops
    points of higher steps when a step goes back).  Steps are not compared.

Checksums
    Length checksums are always verified (they are cached per length).  Data
    checksums are verified with ``google-crc32c`` (a dependency) when its C
    extension is there (:data:`CHECKSUMS_VERIFIED`); on a platform with no
    wheel of it they are not checked, since a pure-Python CRC would be far
    slower than the parsing.

Speed
    Most event files repeat the same shape of record: the same tags, with
    only the step, wall time and values changing.  The scanner notices such a
    period of records, derives a byte template from it (which bytes must be
    equal, which are numbers), and checks the following records against the
    template in bulk with numpy: a record matching it byte for byte outside
    its numeric fields has the same fields and tags, so it needs no parsing;
    only its checksum is verified.  The last record of such a run is parsed as
    usual, which yields the last values.  Anything else is parsed record by
    record.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from google.protobuf import message as pb_message
from tensorboard.compat.proto import event_pb2, summary_pb2

from runsmon.fs import FileSystem
from runsmon.reduce import Running
from runsmon.run import shared

try:  # optional: checksums at C speed
    import google_crc32c as _google_crc32c

    if getattr(_google_crc32c, "implementation", "c") != "c":
        raise ImportError("google_crc32c without its C extension")
    _crc32c = _google_crc32c.value
    _crc32c_extend = _google_crc32c.extend
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c = None
    _crc32c_extend = None

CHECKSUMS_VERIFIED: bool = _crc32c is not None
"""Whether data checksums are verified when reading (google-crc32c is there)."""

FILE_VERSION = "brain.Event:2"
HPARAMS_PLUGIN = "hparams"
SCALARS_PLUGIN = "scalars"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"

DEFAULT_CHUNK_SIZE = 8 << 20
"""Bytes read at once while scanning."""
DEFAULT_MAX_RECORD_SIZE = 256 << 20
"""Records larger than this are skipped (checksum verified by streaming)."""

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_U32_LE = struct.Struct("<I")
_LEGACY_PLUGINS = {
    "histo": "histograms",
    "image": "images",
    "audio": "audio",
    "simple_value": SCALARS_PLUGIN,
}
_SCALAR_CLASSES = (summary_pb2.DATA_CLASS_UNKNOWN, summary_pb2.DATA_CLASS_SCALAR)
_intern = sys.intern


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C TFRecord framing uses (pure Python without google-crc32c)."""
    if _crc32c is not None:
        return _mask(_crc32c(data))
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import (
        masked_crc32c as stub_masked_crc32c,
    )

    return stub_masked_crc32c(data)


_length_crcs: dict[int, int] = {}


def _length_crc(length: int) -> int:
    """Masked CRC of a record's length bytes, cached (lengths repeat a lot)."""
    crc = _length_crcs.get(length)
    if crc is None:
        crc = masked_crc32c(struct.pack("<Q", length))
        if len(_length_crcs) < 65536:
            _length_crcs[length] = crc
    return crc


_heads: dict[int, bytes] = {}


def encode_record(data: bytes) -> bytes:
    """Frame ``data`` as one TFRecord.

    >>> encode_record(b"ab").hex()
    '020000000000000078270b3461621cb0f0f4'
    """
    n = len(data)
    head = _heads.get(n)
    if head is None:  # the length and its checksum: the same for every record this long
        head = struct.pack("<Q", n) + _U32_LE.pack(_length_crc(n))
        if len(_heads) < 65536:
            _heads[n] = head
    if _crc32c is not None:
        crc = _crc32c(data)
        return head + data + _U32_LE.pack((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32)
    return head + data + _U32_LE.pack(masked_crc32c(data))


@dataclasses.dataclass
class RecordSplit:
    """What :func:`split_records` found in a buffer."""

    records: list[bytes]
    end: int
    """Offset of the first byte not consumed: an incomplete record, or the
    record whose length checksum failed (see ``framing_lost``)."""
    bad_records: int = 0
    error: str | None = None
    framing_lost: bool = False


def split_records(buf: bytes, offset: int = 0, verify: bool = True) -> RecordSplit:
    """Split ``buf[offset:]`` into complete records.

    A record with a bad data checksum is skipped and counted; a bad length
    checksum loses the framing: splitting stops there.  An incomplete record
    at the end is not an error, ``end`` points at it.
    """
    out = RecordSplit([], offset)
    pos = offset
    n = len(buf)
    while pos + 12 <= n:
        length, length_crc = _HEADER.unpack_from(buf, pos)
        if verify and _length_crc(length) != length_crc:
            out.framing_lost = True
            out.bad_records += 1
            out.error = out.error or f"bad length checksum at offset {pos}"
            break
        end = pos + 12 + length
        if end + 4 > n:
            break
        data = buf[pos + 12 : end]
        if (
            verify
            and _crc32c is not None
            and _mask(_crc32c(data)) != _U32_LE.unpack_from(buf, end)[0]
        ):
            out.bad_records += 1
            out.error = out.error or f"bad data checksum at offset {pos}"
        else:
            out.records.append(data)
        pos = end + 4
    out.end = pos
    return out


# -- writing -----------------------------------------------------------------


def scalar_event(
    tag: str, value: float, step: int, wall_time: float | None = None
) -> event_pb2.Event:
    """An Event with one ``simple_value`` scalar."""
    event = event_pb2.Event(step=step, wall_time=time.time() if wall_time is None else wall_time)
    event.summary.value.add(tag=tag, simple_value=value)
    return event


def summary_event(
    summary: summary_pb2.Summary, step: int = 0, wall_time: float | None = None
) -> event_pb2.Event:
    """An Event carrying ``summary``."""
    event = event_pb2.Event(step=step, wall_time=time.time() if wall_time is None else wall_time)
    event.summary.CopyFrom(summary)
    return event


def file_version_event(wall_time: float | None = None) -> event_pb2.Event:
    """The ``brain.Event:2`` event that starts every event file."""
    return event_pb2.Event(
        wall_time=time.time() if wall_time is None else wall_time, file_version=FILE_VERSION
    )


def encode_events(
    events: Iterable[event_pb2.Event],
    file_version: bool = False,
    wall_time: float | None = None,
) -> bytes:
    """Framed records of ``events``, after a file_version event if asked."""
    parts = []
    if file_version:
        parts.append(encode_record(file_version_event(wall_time).SerializeToString()))
    parts.extend(encode_record(e.SerializeToString()) for e in events)
    return b"".join(parts)


# -- reading -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScalarValue:
    """One point of a scalar series."""

    step: int
    wall_time: float
    value: float


def _plugin_of(value: summary_pb2.Summary.Value) -> str:
    """The plugin owning ``value``'s tag when it is the tag's first occurrence.

    ``"scalars"`` only when TensorBoard would list it as a scalar series.
    """
    legacy = _LEGACY_PLUGINS.get(value.WhichOneof("value") or "")
    if legacy is not None:
        return legacy
    metadata = value.metadata
    plugin = metadata.plugin_data.plugin_name
    if plugin == SCALARS_PLUGIN and metadata.data_class not in _SCALAR_CLASSES:
        return f"{SCALARS_PLUGIN}:non-scalar"
    return plugin


def scalar_value(value: summary_pb2.Summary.Value) -> float | None:
    """The number a scalar summary value holds, or None when it holds none."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor":
        return None
    from tensorboard.util import tensor_util

    try:
        array = tensor_util.make_ndarray(value.tensor)
        if array.size != 1:
            return None
        return float(array.item())
    except Exception:  # noqa: BLE001 - a malformed tensor is no value
        return None


def _python_value(value: Any) -> Any:
    """A google.protobuf.Value as a plain python value."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _python_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_python_value(v) for v in value.list_value.values]
    return None


def decode_session_start_info(content: bytes) -> dict[str, Any] | None:
    """Flags of a session_start_info's plugin content, or None if it holds none."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    try:
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
    except pb_message.DecodeError:
        return None
    if not data.HasField("session_start_info"):
        return None
    return {k: _python_value(v) for k, v in data.session_start_info.hparams.items()}


class _Irregular(Exception):
    """A record the template builder cannot describe."""


def _varint_end(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after) of the varint at ``pos``."""
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Irregular
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


# (message level, field number) -> level of the submessage to walk into.
# Levels: 0 Event, 1 Summary, 2 Summary.Value.
_DESCEND = {(0, 5): 1, (1, 1): 2}
_CONSTANT_STRINGS = {(2, 1)}  # Summary.Value.tag


def _template_walk(
    buf: bytes,
    pos: int,
    end: int,
    mask: np.ndarray,
    base: int,
    level: int,
    values: list[tuple[bytes | None, int | None]],
) -> None:
    """Mark in ``mask`` the bytes of one message that a same-shaped one must share.

    0xFF: the byte must be equal (field keys, lengths, tags); 0x80: only its
    continuation bit must be equal (varint payloads); 0x00: any value
    (fixed-size numbers, contents of fields the scanner does not look into).
    Each Summary.Value met is added to ``values`` as (its tag, the position
    of its ``simple_value`` float or None).
    """
    tag: bytes | None = None
    number: int | None = None
    while pos < end:
        start = pos
        key, pos = _varint_end(buf, pos, end)
        mask[start - base : pos - base] = 0xFF
        field, wire = key >> 3, key & 7
        if wire == 0:
            start = pos
            _, pos = _varint_end(buf, pos, end)
            mask[start - base : pos - base] = 0x80
        elif wire == 1:
            pos += 8
        elif wire == 5:
            if level == 2 and field == 2:  # Summary.Value.simple_value
                number = pos
            pos += 4
        elif wire == 2:
            start = pos
            length, pos = _varint_end(buf, pos, end)
            mask[start - base : pos - base] = 0xFF
            if pos + length > end:
                raise _Irregular
            sub = _DESCEND.get((level, field))
            if sub is not None:
                _template_walk(buf, pos, pos + length, mask, base, sub, values)
            elif (level, field) in _CONSTANT_STRINGS:
                mask[pos - base : pos + length - base] = 0xFF
                tag = buf[pos : pos + length]
            pos += length
        else:
            raise _Irregular
        if pos > end:
            raise _Irregular
    if level == 2:
        values.append((tag, number))


_PERIOD_MAX = 256
#: Runs of records up to this size are matched with plain integers: numpy's
#: fixed cost per call is more than they need (most event files are small).
_SMALL_RUN = 64 << 10
#: Templates by period shape, shared by every scan: files of one writer
#: repeat one shape, so most files need no template walk of their own.
_TEMPLATES: dict[tuple, list[tuple[tuple, tuple[bytes, bytes]]]] = {}
_TEMPLATES_MAX = 1024
_COOLDOWN_MAX = 1024
_NO_PENDING: dict = {}  # shared while no update runs (never written to)
_FOOTERS: dict[tuple[int, int], struct.Struct] = {}
_TAG_SETS: dict[frozenset, dict[str, str]] = {}


def _shared_tags(tags: dict[str, str]) -> dict[str, str]:
    """One dict for each distinct set of tags: the files of a sweep share theirs.

    Never written to once shared (an update works on a copy of its own).
    """
    return shared(_TAG_SETS, frozenset(tags.items()), tags)


def _footers(size: int, count: int) -> struct.Struct:
    """A struct reading ``count`` uint32s ``size`` bytes apart (records' data CRCs)."""
    key = (size, count)
    found = _FOOTERS.get(key)
    if found is None:
        found = struct.Struct("<" + f"I{size - 4}x" * (count - 1) + "I")
        if len(_FOOTERS) < 4096:
            _FOOTERS[key] = found
    return found


class FileScan:
    """Incremental scan state of one event file."""

    # Slots: a monitor keeps one per event file, tens of thousands of them.
    __slots__ = (
        "chunk_size",
        "max_record_size",
        "fast",
        "offset",
        "tags",
        "scalars",
        "has_hparams",
        "hparams",
        "records",
        "bad_records",
        "skipped_records",
        "error",
        "framing_lost",
        "_lost_size",
        "_lost_offset",
        "generation",
        "_value_tags",
        "_pending",
        "_template",
        "_template_bytes",
        "reduce_for",
        "reduced",
    )

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        fast: bool = True,
    ) -> None:
        self.chunk_size = max(int(chunk_size), 64)
        self.max_record_size = max_record_size
        self.fast = fast
        self.reduce_for: Callable[[str], tuple[Any, ...]] | None = None
        """A tag's reductions to keep (:func:`runsmon.reduce.tag_specs`), or None: none."""
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next update starts from the first byte."""
        self.offset = 0
        """Bytes consumed: complete records (and skipped bad ones)."""
        self.tags: dict[str, str] = {}
        """Every summary tag seen, with the plugin owning it (first occurrence)."""
        self.scalars: dict[str, ScalarValue] = {}
        """Last value of each scalar tag that had a readable value."""
        self.has_hparams = False
        self.hparams: dict[str, Any] | None = None
        """Flags of the first ``_hparams_/session_start_info``, if any."""
        self.records = 0
        self.bad_records = 0
        self.skipped_records = 0
        """Records over ``max_record_size``, not looked into."""
        self.error: str | None = None
        """The first problem met, for a warning."""
        self.framing_lost = False
        """A bad length checksum: nothing after ``offset`` can be read.  The
        file is read again from there only once its size changes."""
        self._lost_size = -1
        self._lost_offset = -1
        self.generation = 0
        """Bumped whenever the file was found replaced and scanned anew."""
        self._value_tags: set[str] | None = None  # scalar tags, during an update
        self._pending: dict[str, tuple[int, float, Any]] = _NO_PENDING  # a dict during updates
        # (layout, mask, expected bytes, shape key, (floats by tag, tags holding tensors))
        self._template: tuple[list[tuple[int, int]], np.ndarray, np.ndarray, tuple, tuple] | None
        self._template = None
        self.reduced: dict[str, tuple[Running, ...]] | None = None
        """Running reductions of the tags :attr:`reduce_for` names (None: none yet)."""
        self._template_bytes: tuple[bytes, bytes] = (b"", b"")  # mask, expected bytes

    @property
    def scalar_tags(self) -> set[str]:
        """Tags TensorBoard reads as scalar series (all of them)."""
        return {t for t, p in self.tags.items() if p == SCALARS_PLUGIN}

    @property
    def value_tags(self) -> set[str]:
        """Scalar tags whose last values are kept (see :meth:`wants_value`)."""
        return {t for t, p in self.tags.items() if p == SCALARS_PLUGIN and self.wants_value(t)}

    def wants_value(self, tag: str) -> bool:
        """Whether the scanner keeps values of scalar ``tag``: every one is a metric."""
        return True

    # -- driving ---------------------------------------------------------

    def update(self, fs: FileSystem, path: str, size: int | None = None) -> bool:
        """Read what was appended to ``path`` since the last call.

        ``size`` is the file's current size when the caller just stat'ed it.
        A file now shorter than what was consumed was replaced: it is scanned
        anew from its start.  Returns True when something new was consumed.
        Never raises for bad content; an unreadable file raises OSError.
        """
        if size is None:
            st = fs.stat(path)
            if st is None:
                raise FileNotFoundError(path)
            size = st.size
        if size < self.offset:
            generation = self.generation + 1
            self.reset()
            self.generation = generation
        if size == self.offset or (self.framing_lost and size == self._lost_size):
            return False
        start = self.offset
        self.framing_lost = False
        self._value_tags = self.value_tags
        self._pending = {}
        self.tags = dict(self.tags)  # its own while it may grow (shared between updates)
        try:
            self._read(fs, path)
        finally:
            self.tags = _shared_tags(self.tags)
            self._flush_pending()
            # Not kept between updates: memory per file, 30,000 files at 10k runs.
            self._value_tags = None
            self._pending = _NO_PENDING
            if self.framing_lost:
                self._lost_size = size
        return self.offset != start

    def _read(self, fs: FileSystem, path: str) -> None:
        while not self.framing_lost:
            want = self.chunk_size
            buf = fs.read_bytes(path, self.offset, want)
            if len(buf) < 12:
                return
            consumed, need = self._scan(buf)
            self.offset += consumed
            if self.framing_lost:
                return
            if consumed:
                if len(buf) < want:
                    return
                continue
            # The first record does not fit in a chunk.
            if need is None or len(buf) < want:
                return
            if need > self.max_record_size:
                if not self._skip_record(fs, path, need):
                    return
                continue
            buf = fs.read_bytes(path, self.offset, need)
            if len(buf) < need:
                return
            consumed, _ = self._scan(buf)
            if not consumed:
                return
            self.offset += consumed

    def _skip_record(self, fs: FileSystem, path: str, frame: int) -> bool:
        """Step over one huge record, verifying its checksum by streaming."""
        length = frame - 16
        crc = 0
        pos = self.offset + 12
        end = pos + length
        while pos < end:
            part = fs.read_bytes(path, pos, min(self.chunk_size, end - pos))
            if not part:
                return False
            if _crc32c_extend is not None:
                crc = _crc32c_extend(crc, part)
            pos += len(part)
        footer = fs.read_bytes(path, end, 4)
        if len(footer) < 4:
            return False
        if _crc32c_extend is not None and _mask(crc) != _U32_LE.unpack(footer)[0]:
            self._bad(f"bad data checksum at offset {self.offset}")
        else:
            self.skipped_records += 1
            self.records += 1
        self.offset += frame
        return True

    def _bad(self, message: str) -> None:
        self.bad_records += 1
        if self.error is None:
            self.error = message

    # -- one buffer ------------------------------------------------------

    def _scan(self, buf: bytes) -> tuple[int, int | None]:
        """Consume the complete records at the start of ``buf``.

        Returns (bytes consumed, frame size of the incomplete record that
        follows or None when even its header is incomplete).
        """
        pos = 0
        n = len(buf)
        unpack = _HEADER.unpack_from
        unpack_u32 = _U32_LE.unpack_from
        crc = _crc32c
        length_crcs = _length_crcs
        from_string = event_pb2.Event.FromString
        decode_error = pb_message.DecodeError
        fast = self.fast
        event_of = self._event if self.reduce_for is None else self._event_reducing
        recent: list[tuple[int, int, tuple]] = []
        # Two records: the file_version one and a first event, whose shape
        # may have a template already; three show a period of one.
        cooldown, backoff = 2, 1
        while True:
            if pos + 12 > n:
                return pos, None
            length, length_crc = unpack(buf, pos)
            if length_crcs.get(length) != length_crc and _length_crc(length) != length_crc:
                self.framing_lost = True
                if self._lost_offset != self.offset + pos:
                    self._lost_offset = self.offset + pos
                    self._bad(f"bad length checksum at offset {self.offset + pos}; rest unread")
                return pos, None
            end = pos + 12 + length
            if end + 4 > n:
                return pos, length + 16
            data = buf[pos + 12 : end]
            if crc is not None and _mask(crc(data)) != unpack_u32(buf, end)[0]:
                self._bad(f"bad data checksum at offset {self.offset + pos}")
                pos = end + 4
                recent.clear()
                continue
            try:
                event = from_string(data)
            except (decode_error, RecursionError, ValueError) as e:
                self._bad(f"record at offset {self.offset + pos} is not an Event: {e}")
                pos = end + 4
                recent.clear()
                continue
            self.records += 1
            sig = event_of(event)
            if not fast:
                pos = end + 4
                continue
            recent.append((pos, length + 16, sig))
            pos = end + 4
            cooldown -= 1
            if cooldown <= 0:
                skipped = self._try_run(buf, pos, recent)
                if skipped:
                    pos += skipped
                    # The last period of the run is parsed next, as usual,
                    # and then the same template is tried again.
                    cooldown = len(self._template[3])
                    backoff = 2
                    del recent[:]
                else:
                    backoff = min(_COOLDOWN_MAX, 2 * backoff)
                    cooldown = backoff
                    if len(recent) > 4 * _PERIOD_MAX:
                        del recent[: -2 * _PERIOD_MAX]

    def _event(self, event: event_pb2.Event) -> tuple:
        """Take in one parsed event; returns its shape for period detection."""
        values = event.summary.value
        if not values:
            return (event.WhichOneof("what"),)
        tags = self.tags
        value_tags = self._value_tags
        shape = []
        for value in values:
            tag = _intern(value.tag)
            shape.append(tag)
            if tag not in tags:
                self._first(tag, value)
            if tag in value_tags:
                self._pending[tag] = (event.step, event.wall_time, value)
        return tuple(shape)

    def _event_reducing(self, event: event_pb2.Event) -> tuple:
        """:meth:`_event`, and each value of a reduced tag fed to its reductions."""
        shape = self._event(event)
        reduced = self.reduced
        if reduced:
            for value in event.summary.value:
                runs = reduced.get(value.tag)
                if runs:
                    number = scalar_value(value)
                    if number is not None:
                        for r in runs:
                            r.add(number)
        return shape

    def _first(self, tag: str, value: summary_pb2.Summary.Value) -> None:
        plugin = _plugin_of(value)
        self.tags[tag] = plugin
        if plugin == SCALARS_PLUGIN and self.wants_value(tag):
            self._value_tags.add(tag)
            if self.reduce_for is not None:
                specs = self.reduce_for(tag)
                if specs:
                    if self.reduced is None:
                        self.reduced = {}
                    self.reduced[tag] = tuple(Running(s) for s in specs)
        elif plugin == HPARAMS_PLUGIN:
            self.has_hparams = True
            if tag == SESSION_START_INFO_TAG and self.hparams is None:
                self.hparams = decode_session_start_info(value.metadata.plugin_data.content)

    def _flush_pending(self) -> None:
        for tag, (step, wall_time, value) in self._pending.items():
            number = scalar_value(value)
            if number is not None:
                self.scalars[tag] = ScalarValue(step, wall_time, number)
        self._pending.clear()

    # -- runs of same-shaped records -------------------------------------

    def _try_run(self, buf: bytes, pos: int, recent: list[tuple[int, int, tuple]]) -> int:
        """Skip whole periods after ``pos`` that match the last period seen.

        Returns the number of bytes skipped: all matching periods but the
        last, whose records the caller parses for their values.
        """
        template = self._template
        if template is not None and not (
            len(recent) >= len(template[3])
            and tuple((r[1], r[2]) for r in recent[-len(template[3]) :]) == template[3]
        ):
            template = None
        if template is None:
            period = self._period(recent)
            # No period yet (the start of a file): the last record's shape may
            # be one other files of this writer repeat; try their template.
            group = recent[-period:] if period is not None else recent[-1:]
            template = self._template_for(buf, group, shared_only=period is None)
            if template is None:
                return 0
        reduced = self.reduced
        if reduced and not template[4][1].isdisjoint(reduced):
            return 0  # a reduced tag's values are tensors here: parsed one by one
        layout, mask, expected, _, _ = template
        size = len(mask)
        available = (len(buf) - pos) // size
        if available < 2:
            return 0
        if available * size <= _SMALL_RUN:
            return self._small_run(buf, pos, layout, size, available)
        view = np.frombuffer(buf, np.uint8, count=available * size, offset=pos).reshape(
            available, size
        )
        matched = 0
        step = 4
        while matched < available:
            hi = min(available, matched + step)
            ok = ((view[matched:hi] & mask) == expected).all(axis=1)
            if not ok.all():
                matched += int(np.argmin(ok))
                break
            matched = hi
            step *= 8
        if matched < 2:
            return 0
        skip = matched - 1
        if _crc32c is not None:
            # A period with a bad record is parsed record by record, and so
            # is the intact period before it: it may hold the last values.
            intact = self._verify_run(buf, pos, view, layout, size, matched)
            skip = min(skip, intact - 1)
            if skip < 1:
                return 0
        if reduced:
            self._reduce_periods(buf, pos, size, skip)
        self.records += skip * len(layout)
        return skip * size

    def _small_run(
        self, buf: bytes, pos: int, layout: list[tuple[int, int]], size: int, available: int
    ) -> int:
        """:meth:`_try_run` on a short stretch: the bytes as one big integer."""
        mask, expected = self._template_bytes
        end = pos + available * size
        from_bytes = int.from_bytes
        diff = (from_bytes(buf[pos:end], "little") & from_bytes(mask * available, "little")) ^ (
            from_bytes(expected * available, "little")
        )
        # The lowest differing bit is in the first period that does not match.
        matched = available if not diff else ((diff & -diff).bit_length() - 1) // (8 * size)
        if matched < 2:
            return 0
        skip = matched - 1
        crc = _crc32c
        if crc is not None:
            # As in _verify_run: stop before the period holding a bad record.
            bad = matched
            get = buf.__getitem__
            for rel, length in layout:
                first = pos + rel
                stop = first + matched * size
                spans = map(slice, range(first, stop, size), range(first + length, stop, size))
                crcs = map(crc, map(get, spans))
                computed = tuple((((c >> 15) | (c << 17)) + _MASK_DELTA) & _U32 for c in crcs)
                stored = _footers(size, matched).unpack_from(buf, first + length)
                if computed != stored:
                    pairs = enumerate(zip(computed, stored, strict=True))
                    bad = min(bad, next(i for i, (x, y) in pairs if x != y))
            skip = min(skip, bad - 1)
            if skip < 1:
                return 0
        if self.reduced:
            self._reduce_periods(buf, pos, size, skip)
        self.records += skip * len(layout)
        return skip * size

    def _reduce_periods(self, buf: bytes, pos: int, size: int, count: int) -> None:
        """Feed the reduced tags' floats of ``count`` skipped periods at ``pos``."""
        assert self._template is not None and self.reduced is not None
        for tag, offsets in self._template[4][0]:
            runs = self.reduced.get(tag)
            if not runs:
                continue
            columns = [
                np.ndarray((count,), "<f4", buffer=buf, offset=pos + off, strides=(size,))
                for off in offsets
            ]
            values = (columns[0] if len(columns) == 1 else np.stack(columns, 1).ravel()).astype(
                np.float64
            )
            for r in runs:
                r.add_array(values)

    @staticmethod
    def _period(recent: list[tuple[int, int, tuple]]) -> int | None:
        """Smallest p such that the last p records repeat the p before them."""
        shapes = [(r[1], r[2]) for r in recent[-2 * _PERIOD_MAX :]]
        count = len(shapes)
        last = shapes[-1]
        for p in range(1, count // 2 + 1):
            if shapes[-1 - p] == last and shapes[-p:] == shapes[-2 * p : -p]:
                return p
        return None

    def _template_for(
        self, buf: bytes, group: list[tuple[int, int, tuple]], shared_only: bool = False
    ):
        """Mask and expected bytes for a period of records (``shared_only``:
        only a template another scan made, else None)."""
        key = tuple((r[1], r[2]) for r in group)
        start = group[0][0]
        size = sum(r[1] for r in group)
        shared = _TEMPLATES.get(key, ())
        if shared:
            period = int.from_bytes(buf[start : start + size], "little")
            for template, template_bytes in shared:
                mask_bytes, expected_bytes = template_bytes
                if period & int.from_bytes(mask_bytes, "little") == int.from_bytes(
                    expected_bytes, "little"
                ):
                    self._template = template
                    self._template_bytes = template_bytes
                    return self._template
        if shared_only:
            return None
        mask = np.zeros(size, np.uint8)
        layout = []
        values: list[tuple[bytes | None, int | None]] = []
        try:
            for pos, frame, _ in group:
                rel = pos - start
                mask[rel : rel + 12] = 0xFF  # length and its checksum
                _template_walk(buf, pos + 12, pos + frame - 4, mask, start, 0, values)
                layout.append((rel + 12, frame - 16))
        except _Irregular:
            return None
        expected = np.frombuffer(buf, np.uint8, count=size, offset=start) & mask
        # Where each tag's float is in a period (for reductions), and the
        # tags whose values are elsewhere (tensors): those are parsed.
        floats: dict[str, list[int]] = {}
        opaque = set()
        for tag_bytes, number in values:
            if tag_bytes is None:
                continue
            name = tag_bytes.decode("utf-8", "replace")
            if number is None:
                opaque.add(name)
            else:
                floats.setdefault(name, []).append(number - start)
        numbers = (tuple((t, tuple(o)) for t, o in floats.items()), frozenset(opaque))
        self._template = (layout, mask, expected, key, numbers)
        self._template_bytes = (mask.tobytes(), expected.tobytes())
        if len(_TEMPLATES) < _TEMPLATES_MAX and len(shared) < 4:
            _TEMPLATES.setdefault(key, []).append((self._template, self._template_bytes))
        return self._template

    def _verify_run(
        self,
        buf: bytes,
        pos: int,
        view: np.ndarray,
        layout: list[tuple[int, int]],
        size: int,
        groups: int,
    ) -> int:
        """Data checksums of ``groups`` periods; returns how many are intact."""
        crc = _crc32c
        stop = pos + groups * size
        good = groups
        for rel, length in layout:
            first = pos + rel
            # All in C: slices of the records' data, their CRCs, the array.
            spans = map(slice, range(first, stop, size), range(first + length, stop + length, size))
            computed = np.fromiter(map(crc, map(buf.__getitem__, spans)), np.uint64, groups)
            masked = (((computed >> 15) | (computed << 17)) + _MASK_DELTA) & _U32
            footer = np.ascontiguousarray(view[:groups, rel + length : rel + length + 4])
            stored = footer.view("<u4").reshape(groups).astype(np.uint64)
            bad = np.flatnonzero(masked != stored)
            if bad.size:
                good = min(good, int(bad[0]))
        return good


def scan_file(fs: FileSystem, path: str, **options: Any) -> FileScan:
    """Scan a whole event file once."""
    scan = FileScan(**options)
    scan.update(fs, path)
    return scan
