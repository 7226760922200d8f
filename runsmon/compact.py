"""The compact layout: each run is one directory holding ONE event file runsmon writes.

That file (:data:`~runsmon.logdir.SESSION_FILE`) holds the file version and
the session start info, then the run's scalar curves copied from its event
files as they grow (appended bytes only; a tag becomes ``GROUP/TAG``, the
group being the event file's directory in the run, and stays as it is at the
run's root), the scalars a source knows outside event files (MLflow, wandb)
the same way, and the session end info once the run ends.  Images,
histograms, graphs, text and the run's own HParams summaries are not copied.
TensorBoard then keeps one file a run open and lists one directory a run,
whatever the run's tool wrote (see ARCHITECTURE.md, "Two layouts").

:class:`CompactWriter` writes that file: the whole head the session writer
hands it (:meth:`~CompactWriter.start`), appends (:meth:`~CompactWriter.append`),
what a run's event files added since the last sync (:meth:`~CompactWriter.sync`,
reading them through the monitor's :class:`~runsmon.fs.FileSystem`), and
what a new generation carries over of the old one
(:meth:`~CompactWriter.carried`).  It knows nothing of what a session
holds, of generations or of when a sync happens.  It reports back why a run
must be written anew (an event file replaced, shorter or gone): it then
writes nothing more for the run until it is.  Bad records are skipped (the
scanner already warns of them, once, naming the run); a record cut at the
end of a file waits for the rest.

In this layout a metric ``(tag, group)`` is the tag :func:`compact_tag` at
the run's root: :func:`compact_metrics` maps the experiment's metrics, the
one place the dashboard's names differ from the linked layout's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from google.protobuf import message as pb_message
from tensorboard.compat.proto import event_pb2

from runsmon import events
from runsmon.fs import FileSystem
from runsmon.hparams import REDUCED_GROUP, TIME_METRIC, Metric
from runsmon.logdir import SESSION_FILE, Logdir, LogdirError, Manifest
from runsmon.runstate import RunState
from runsmon.runview import PLACEHOLDER_TAG, PLACEHOLDER_VALUE

#: The layout's name in a run's manifest (``RunRecord.layout``).
COMPACT = "compact"
#: Bytes of a source file read at once.
CHUNK = 8 << 20
#: Bytes found in every record of an HParams summary (the tags' prefix).
HPARAMS_MARK = b"_hparams_/"
_TIME_MARK = b"\n\x04" + TIME_METRIC.encode()  # Summary.Value.tag == "time"


def compact_tag(tag: str, group: str) -> str:
    """The tag a metric of ``group`` has in the compact layout.

    >>> compact_tag("loss", "train"), compact_tag("loss", ""), compact_tag("val/acc", "")
    ('train/loss', 'loss', 'val/acc')
    """
    return f"{group}/{tag}" if group else tag


def compact_metrics(metrics: Iterable[Metric]) -> list[Metric]:
    """The experiment's metrics as the compact layout names them: each at the
    run's root under :func:`compact_tag`, once (a tag ``train/loss`` at the
    root and ``loss`` in ``train/`` are one column there).

    Best values (``--best``) keep their own directory, as in the linked
    layout (:mod:`runsmon.reduce` writes them there in both).

    >>> compact_metrics([("loss", "train"), ("loss", "val"), ("train/loss", ""), ("time", "")])
    [('train/loss', ''), ('val/loss', ''), ('time', '')]
    >>> compact_metrics([("loss", "val"), ("val#loss (min)", REDUCED_GROUP)])
    [('val/loss', ''), ('val#loss (min)', '.runsmon')]
    """
    return list(
        dict.fromkeys(
            (tag, group) if group == REDUCED_GROUP else (compact_tag(tag, group), "")
            for tag, group in metrics
        )
    )


def summary_only(data: bytes) -> bool:
    """Whether a serialized Event holds a summary and nothing else past its
    wall time and step (so it needs no parsing to be copied as it is).

    >>> summary_only(events.scalar_event("a", 1.0, 3, 1.0).SerializeToString())
    True
    >>> summary_only(events.file_version_event(1.0).SerializeToString())
    False
    """
    pos = 0
    n = len(data)
    if pos < n and data[pos] == 0x09:  # wall_time, fixed64
        pos += 9
    if pos < n and data[pos] == 0x10:  # step, varint
        pos += 1
        while pos < n and data[pos] & 0x80:
            pos += 1
        pos += 1
    if pos >= n or data[pos] != 0x2A:  # summary, length-delimited
        return False
    pos += 1
    length = 0
    shift = 0
    while pos < n:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return pos + length == n


def scalar_records(
    records: Sequence[bytes], group: str, plugins: dict[str, str], drop_placeholder: bool
) -> list[bytes]:
    """The framed records to append for ``records`` of one event file: scalar
    summary values only (``plugins``: the plugin of each tag, as the scanner
    found it at the tag's first occurrence), tagged :func:`compact_tag`.

    Records of the usual shape (wall time, step, a summary whose values name
    their tag first) are rewritten byte by byte; others are parsed.
    """
    raw_ok = not group and not drop_placeholder
    if raw_ok:
        raw_ok = all(
            p == events.SCALARS_PLUGIN and not t.startswith("_hparams_/")
            for t, p in plugins.items()
        )
    prefix = f"{group}/".encode() if group else b""
    heads = _heads_for(plugins, prefix)

    def renamed(tag: bytes) -> bytes | None:
        text = tag.decode("utf-8", "replace")
        keep = plugins.get(text) == events.SCALARS_PLUGIN and not text.startswith("_hparams_/")
        return prefix + tag if keep else None

    out = []
    encode = events.encode_record
    for data in records:
        if raw_ok and summary_only(data):
            out.append(encode(data))  # every tag is a scalar at the root: as it is
            continue
        new = None if drop_placeholder else _rewritten(data, renamed, heads)
        if new is None:
            new = _parsed(data, group, plugins, drop_placeholder)
        if new:
            out.append(encode(new))
    return out


# (plugins of a file's tags, group prefix) -> (those plugins, value head -> its
# head renamed, b"" to drop the value). Files with the same tags share one
# plugins dict (the scanner shares them): most runs share their caches.
_HEAD_CACHES: dict[tuple[int, bytes], tuple[dict[str, str], dict[bytes, bytes]]] = {}


def _heads_for(plugins: dict[str, str], prefix: bytes) -> dict[bytes, bytes]:
    """The cache of renamed value heads for files with these ``plugins`` in this group."""
    key = (id(plugins), prefix)
    found = _HEAD_CACHES.get(key)
    if found is None or found[0] is not plugins:
        if len(_HEAD_CACHES) >= 1024:
            _HEAD_CACHES.clear()
        found = _HEAD_CACHES[key] = (plugins, {})
    return found[1]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _rewritten(
    data: bytes, renamed: Callable[[bytes], bytes | None], heads: dict[bytes, bytes]
) -> bytes | None:
    """An Event of the usual shape with its summary values renamed (or
    dropped) by ``renamed``: b"" when none is left, None for any other shape.

    >>> ev = events.scalar_event("loss", 1.0, 2, 5.0)
    >>> data = ev.SerializeToString()
    >>> out = event_pb2.Event.FromString(_rewritten(data, lambda t: b"v/" + t, {}))
    >>> out.summary.value[0].tag, out.step, out.summary.value[0].simple_value
    ('v/loss', 2, 1.0)
    >>> _rewritten(data, lambda t: None, {})
    b''
    """
    n = len(data)
    try:
        pos = 9 if data[0] == 0x09 else 0  # wall_time, fixed64
        if data[pos] == 0x10:  # step, varint
            pos += 1
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        if data[pos] != 0x2A:  # summary
            return None
        head = data[:pos]
        length, pos = _varint(data, pos + 1)
        if pos + length != n:
            return None
        values = []
        while pos < n:
            # Summary.value: 0x0A, its length, then its tag first: 0x0A, length, tag.
            vlen = data[pos + 1]
            if data[pos] != 0x0A or vlen & 0x80:
                return None
            tlen = data[pos + 3]
            if data[pos + 2] != 0x0A or tlen & 0x80:
                return None
            key = data[pos : pos + 4 + tlen]
            end = pos + 2 + vlen
            new = heads.get(key)
            if new is None:
                tag = key[4:]
                name = renamed(tag)
                if name is None:
                    new = b""
                elif name == tag:
                    new = key
                else:
                    tag_head = b"\n" + _encode_varint(len(name)) + name
                    value = len(tag_head) + vlen - 2 - tlen  # the value's length, renamed
                    new = b"\n" + _encode_varint(value) + tag_head
                if len(heads) < 4096:
                    heads[key] = new
                else:
                    heads.clear()
            if new:
                values.append(new)
                values.append(data[pos + 4 + tlen : end])
            pos = end
        if pos != n:
            return None
    except IndexError:
        return None
    if not values:
        return b""
    summary = b"".join(values)
    return head + b"\x2a" + _encode_varint(len(summary)) + summary


def _parsed(data: bytes, group: str, plugins: dict[str, str], drop_placeholder: bool) -> bytes:
    """:func:`scalar_records` for one record of any shape, through protobuf (b"": nothing kept)."""
    try:
        event = event_pb2.Event.FromString(data)
    except pb_message.DecodeError:
        return b""
    if not event.HasField("summary"):
        return b""
    values = event.summary.value
    keep = [
        v
        for v in values
        if plugins.get(v.tag) == events.SCALARS_PLUGIN
        and not v.tag.startswith("_hparams_/")
        and not (
            drop_placeholder
            and v.tag == PLACEHOLDER_TAG
            and event.step == 0
            and events.scalar_value(v) == PLACEHOLDER_VALUE
        )
    ]
    if not keep:
        return b""
    if not group and len(keep) == len(values):
        return data
    new = event_pb2.Event(wall_time=event.wall_time, step=event.step)
    new.summary.value.extend(keep)
    if group:
        for v in new.summary.value:
            v.tag = f"{group}/{v.tag}"
    return new.SerializeToString()


class CompactWriter:
    """Writes a run's one file in the compact layout (see the module's docstring).

    A run's progress is in its manifest's ``state.compact``: ``size``, the
    bytes of its file that are whole; ``read``, bytes read of each event
    file (by its place in the run, as :class:`~runsmon.runfiles.RunFiles`
    names it); ``stale``, set once the run must be written anew.
    """

    def __init__(self, logdir: Logdir, fs: FileSystem) -> None:
        self.logdir = logdir
        self.fs = fs

    # -- the file ------------------------------------------------------------

    @staticmethod
    def ready(st: RunState) -> bool:
        """Whether the run's file is there to append to (its session is written)."""
        state = st.manifest.state
        comp = state.compact
        return (
            state.layout == COMPACT
            and state.session is not None
            and comp is not None
            and not comp.get("stale")
        )

    def start(self, manifest: Manifest, data: bytes, carried: bool = False) -> None:
        """Write the run's file whole: ``data`` (file version, start info,
        what ``carried`` over of an old generation, maybe the end info).
        Without ``carried`` everything is read again from the run's files."""
        self.logdir.write_file(manifest, SESSION_FILE, data)
        state = manifest.state
        state.layout = COMPACT
        read = dict((state.compact or {}).get("read", {})) if carried else {}
        state.compact = {"size": len(data), "read": read}
        if not carried:
            state.scalars = None

    def start_whole(self, st: RunState, head: bytes) -> None:
        """A run's file written anew in one write: ``head`` (file version,
        start info, maybe the end info) and the scalars its event files hold
        so far. A TensorBoard reading the logdir meanwhile never finds the
        session without its values (its data server may come back to a file
        only after a pass over every other run)."""
        state = st.manifest.state
        state.compact = {"size": 0, "read": {}}
        try:
            found = self.sync(st) if st.files.files else (b"", {})
        except OSError:  # said by the mirror's sync, which tries again
            found = (b"", {})
        body, offsets = found if not isinstance(found, str) else (b"", {})
        self.start(st.manifest, head + body)
        state.compact["read"].update(offsets)  # type: ignore[index]

    def append(self, st: RunState, data: bytes) -> None:
        """Append whole records to the run's file (raises on failure, nothing half left)."""
        manifest = st.manifest
        comp = manifest.state.compact
        if comp is None:
            raise LogdirError(f"run {st.name}: no compact file to append to")
        self.logdir.append_file(manifest, SESSION_FILE, data)
        comp["size"] = int(comp.get("size", 0)) + len(data)

    def carried(self, old: Manifest, own_time: bool) -> tuple[bytes, dict | None]:
        """What a new generation carries over of ``old``: the scalar records
        of its file (not its file version, start and end infos, nor the
        ``time`` runsmon wrote unless the run logs its own), and its state.
        (b"", None) when nothing can be: ``old`` is of the other layout, was
        to be read again, or is unreadable."""
        comp = old.state.compact
        if old.state.layout != COMPACT or comp is None or comp.get("stale"):
            return b"", None
        try:
            data = self.logdir.read_file(old, SESSION_FILE)
        except (OSError, LogdirError):
            return b"", None
        data = data[: int(comp.get("size", len(data)))]
        split = events.split_records(data)
        kept = []
        for record in split.records:
            if HPARAMS_MARK in record or not summary_only(record):
                continue  # its session, the file version
            if not own_time and _TIME_MARK in record and _is_time(record):
                continue  # the `time` that goes with the end info
            kept.append(events.encode_record(record))
        return b"".join(kept), {"read": dict(comp.get("read", {})), "scalars": old.state.scalars}

    # -- the run's event files -----------------------------------------------

    def sync(self, st: RunState) -> tuple[bytes, dict[str, int]] | str:
        """What the run's event files added since the last sync, as records
        to append and the offsets they bring each file to; or why the run
        must be written anew (then it is marked ``stale``)."""
        comp = st.manifest.state.compact
        assert comp is not None
        read: dict[str, int] = comp.setdefault("read", {})
        shown = {f.rel: (f, group) for f, group in st.files.shown()}
        for rel in read:
            if rel not in shown:
                return self._stale(st, f"event file {rel} went away")
        parts: list[bytes] = []
        offsets: dict[str, int] = {}
        for rel, (f, group) in shown.items():
            if f.stat_key is None:
                continue
            size = f.stat_key[0]  # what the scanner read: it knows every tag's plugin
            offset = read.get(rel, 0)
            if size < offset:
                return self._stale(st, f"event file {rel} was replaced")
            start = offset
            plugins = f.scan.tags
            drop = f.scan.has_hparams
            # The scanner verified every checksum up to where it read: only
            # a file where it met a bad record is verified again.
            verify = bool(f.scan.bad_records or f.scan.framing_lost)
            while offset < size:
                chunk = self.fs.read_bytes(f.path, offset, min(CHUNK, size - offset))
                split = events.split_records(chunk, verify=verify)
                parts.extend(scalar_records(split.records, group, plugins, drop))
                if split.end == 0:
                    skip = _oversized(chunk, offset, size)
                    if not skip:
                        break  # cut short (the rest comes later) or framing lost
                    offset += skip  # one record larger than a chunk: no scalar
                    continue
                offset += split.end
            if offset != start:
                offsets[rel] = offset
        return b"".join(parts), offsets

    def _stale(self, st: RunState, why: str) -> str:
        comp = st.manifest.state.compact
        if comp is not None:
            comp["stale"] = True
        return why


def _is_time(record: bytes) -> bool:
    try:
        event = event_pb2.Event.FromString(record)
    except pb_message.DecodeError:
        return False
    values = event.summary.value
    return len(values) == 1 and values[0].tag == TIME_METRIC


def _oversized(chunk: bytes, offset: int, size: int) -> int:
    """The frame size of a record at the start of ``chunk`` that is whole in
    the file but larger than a chunk (0: none; it is cut short, or its length
    is not to be trusted)."""
    if len(chunk) < CHUNK or len(chunk) < 12:
        return 0
    if events.split_records(chunk[:12]).framing_lost:
        return 0
    length = int.from_bytes(chunk[:8], "little")
    frame = 12 + length + 4
    return frame if offset + frame <= size and frame > len(chunk) else 0
