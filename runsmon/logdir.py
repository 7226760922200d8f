"""The logdir as runsmon owns it: the only module that writes files.

Rules it keeps:

- A logdir is runsmon's only if it carries the :data:`MARKER` file. An empty
  or missing directory is taken (and marked); anything else is refused.
- Every run directory has a manifest (:data:`MANIFEST`) written *before*
  anything else goes in, listing each link, copy, file and directory runsmon
  made there. Deletion removes exactly those, never follows a symlink and
  never leaves the logdir; anything else found there is left alone.
- Whole files are written to a temporary name and renamed, so a reader never
  sees half a file (also when the disk fills up).
- One process at a time: a process holds an exclusive ``flock`` on the
  marker for as long as it uses the logdir (the system drops it when the
  process dies, however it dies), and a second process is refused before it
  touches anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

from runsmon.report import describe_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("runsmon")

MARKER = ".runsmon"
MANIFEST = ".runsmon-run.json"
EXPERIMENT_PREFIX = ".runsmon-experiment-"
TMP_PREFIX = ".runsmon-tmp-"
#: A run's session: its start info (and end info when it had ended when first
#: seen); sorts first among the run's files.
SESSION_FILE = "events.out.tfevents.0000000000.runsmon-session"
#: Scalars a source knows outside event files (MLflow, wandb), one per group.
SCALARS_FILE = "events.out.tfevents.0000000001.runsmon-scalars"
#: The end info of a run seen running; sorts last.
END_FILE = "events.out.tfevents.9999999999.runsmon-end"
#: The experiment, in ``EXPERIMENT_PREFIX<generation>/``.
EXPERIMENT_FILE = "events.out.tfevents.0000000000.runsmon-experiment"
FORMAT = 1
_tmp_names = itertools.count()


class LogdirError(Exception):
    """A logdir runsmon cannot use; the message says why and what to do."""


class _Unset(enum.Enum):
    UNSET = "unset"


#: A field of :class:`RunRecord` the manifest does not hold (older manifests).
UNSET = _Unset.UNSET


@dataclasses.dataclass
class RunRecord:
    """What the monitor remembers of a run in its manifest (``"state"`` in the JSON).

    On disk a field is a key of its own (``asked`` is ``"wanted"``), written
    only when set, so a manifest reads the same in every version.
    """

    asked: str | None = None  # the name the naming callback asked for
    group: str | None = None  # the row's name (session group), when not the directory's
    gen: int = 0  # generation of the run's directory (see sessions.py)
    building: bool = False  # a new generation, not whole yet
    session: str | None = None  # key of the session written (None: none yet)
    end: str | None = None  # status of the end info written (None: none)
    end_file: str | None = None  # the file holding it (SESSION_FILE or END_FILE)
    stopped: float | None | Literal[_Unset.UNSET] = UNSET  # run.stopped the end info shows
    synth_metrics: list[Any] | None = None  # (tag, group) of the scalars files
    scalars: dict[str, Any] | None = None  # group -> tag -> points written
    filtered: dict[str, int] | None = None  # filtered copy -> bytes of its source read
    layout: str | None = None  # "compact", or None: linked (see runsmon.layout)
    compact: dict[str, Any] | None = None  # compact layout: its file's size, sources read
    images: dict[str, list[int]] | None = None  # image rel path -> what is written (images.py)
    copied: dict[str, Any] | None = None  # plain copy -> [bytes copied, source's stat key]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # keys of other versions

    _KEYS: ClassVar[dict[str, str]] = {"asked": "wanted"}
    _FIELDS: ClassVar[tuple[str, ...]] = ()  # the fields but ``extra``, set below

    def copy(self) -> RunRecord:
        """A shallow copy (what ``dataclasses.replace(self)`` gives, for less)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        keys = self._KEYS
        for name in self._FIELDS:
            value = getattr(self, name)
            if value is UNSET or (value is None and name != "stopped"):
                continue
            if name in ("gen", "building") and not value:
                continue
            out[keys.get(name, name)] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        record = cls()
        names = {cls._KEYS.get(f.name, f.name): f.name for f in dataclasses.fields(cls)}
        for key, value in data.items():
            name = names.get(key)
            if name is None or name == "extra":
                record.extra[key] = value
            elif name == "gen":
                record.gen = value if isinstance(value, int) else 0
            elif name == "building":
                record.building = bool(value)
            else:
                setattr(record, name, value)
        return record


RunRecord._FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "extra")


class Manifest:
    """What runsmon wrote in one run directory."""

    def __init__(self, run_id: str, name: str) -> None:
        self.run_id = run_id
        self.name = name
        self.links: dict[str, str] = {}  # rel path -> target
        self.copies: dict[str, str] = {}  # rel path -> source (copied, links impossible)
        self.files: list[str] = []  # rel paths of files runsmon wrote itself
        self.dirs: list[str] = []  # rel paths of directories runsmon made
        self.state = RunRecord()  # what the monitor remembers of the run

    def to_json(self) -> str:
        return json.dumps(
            {
                "runsmon": FORMAT,
                "id": self.run_id,
                "name": self.name,
                "links": self.links,
                "copies": self.copies,
                "files": self.files,
                "dirs": self.dirs,
                "state": self.state.to_dict(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("runsmon") != FORMAT:
            raise ValueError("not a runsmon manifest")
        manifest = cls(str(data["id"]), str(data["name"]))
        manifest.links = dict(data.get("links", {}))
        manifest.copies = dict(data.get("copies", {}))
        manifest.files = list(data.get("files", []))
        manifest.dirs = list(data.get("dirs", []))
        manifest.state = RunRecord.from_dict(dict(data.get("state", {})))
        return manifest


def experiment_dir(gen: int) -> str:
    """The directory of the experiment's generation ``gen``."""
    return f"{EXPERIMENT_PREFIX}{gen:010d}"


def temporary_root() -> str | None:
    """Where temporary logdirs go: ``$TMPDIR`` if set, else a RAM-backed
    directory (``$XDG_RUNTIME_DIR``, ``/dev/shm``) if writable, else the
    system's temporary directory (None)."""
    if os.environ.get("TMPDIR"):
        return None
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


class Logdir:
    """A logdir runsmon owns."""

    def __init__(self, path: str, *, temporary: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.temporary = temporary
        self._lock: _Lock | None = None
        self._claim()

    @classmethod
    def create_temporary(cls) -> Logdir:
        """A new logdir removed at exit, in memory where the machine has it.

        The logdir is small (links, a few KB of summaries a run) and
        rewritten from the runs at each start, so it belongs in RAM: on a
        shared disk making its thousands of inodes costs more than all the
        rest of a first sync.  ``$TMPDIR``, when set, decides instead.
        """
        return cls(tempfile.mkdtemp(prefix="runsmon-logdir-", dir=temporary_root()), temporary=True)

    # -- ownership -----------------------------------------------------------

    def _claim(self) -> None:
        path = self.path
        if os.path.islink(path):
            raise LogdirError(f"logdir {path} is a symlink; give the real directory")
        if os.path.exists(path) and not os.path.isdir(path):
            raise LogdirError(f"logdir {path} is not a directory")
        try:
            os.makedirs(path, exist_ok=True)
            entries = os.listdir(path)
        except OSError as e:
            raise LogdirError(f"cannot use logdir {path}: {e.strerror or e}") from None
        if MARKER in entries:
            self._lock = _Lock.take(path)
            return
        if entries:
            raise LogdirError(
                f"logdir {path} is not empty and was not made by runsmon; "
                "give an empty or new directory (nothing was changed)"
            )
        self._write_marker()
        self._lock = _Lock.take(path)

    def _write_marker(self) -> None:
        """Write the marker unless another process just did (it is locked next)."""
        text = json.dumps({"runsmon": FORMAT, "created": time.time()})
        marker = os.path.join(self.path, MARKER)
        tmp = os.path.join(self.path, f"{TMP_PREFIX}{os.getpid()}-marker")
        self.write_atomic(tmp, text.encode())
        try:
            os.link(tmp, marker)  # never over one that is there: it may be locked
        except FileExistsError:
            pass
        except OSError:  # no hard links here
            os.replace(tmp, marker)
            return
        os.unlink(tmp)

    def ensure(self) -> bool:
        """Recreate the logdir (and its marker) if it was deleted under us.

        Returns True when it was recreated: everything written before is gone.
        """
        if not os.path.isdir(self.path):
            os.makedirs(self.path, exist_ok=True)
        if not os.path.exists(os.path.join(self.path, MARKER)):
            if os.listdir(self.path):
                raise LogdirError(f"logdir {self.path} lost its runsmon marker; not touching it")
            self._write_marker()
            if self._lock is not None:
                self._lock.release()  # it locked the marker that went
            self._lock = _Lock.take(self.path)
            return True
        return False

    # -- writing ---------------------------------------------------------------

    @staticmethod
    def write_atomic(path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` through a temporary name and a rename."""
        directory, name = os.path.split(path)
        # A name of this process's own (mkstemp's random names cost more).
        while True:
            tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{next(_tmp_names)}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                break
            except FileExistsError:
                continue
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def run_path(self, name: str, rel: str = "") -> str:
        tail = f"{name}/{rel}" if rel else name
        if not (tail.startswith((".", "/")) or "/." in tail or "//" in tail or tail.endswith("/")):
            return f"{self.path}/{tail}"  # already normal: no "." or ".." part, no "//"
        path = os.path.join(self.path, name, rel) if rel else os.path.join(self.path, name)
        real = os.path.normpath(path)
        if not real.startswith(self.path + os.sep):
            raise LogdirError(f"refusing a path outside the logdir: {path}")
        return real

    def create_run(self, run_id: str, name: str, *, save: bool = True) -> Manifest:
        """Make a run directory with its manifest in it (manifest first).

        With ``save`` False the caller saves the manifest itself, before it
        writes anything else there (one write instead of two).
        """
        path = self.run_path(name)
        try:
            os.mkdir(path)  # FileExistsError: the name is taken by something else
        except FileExistsError:
            # An empty directory is what a kill between mkdir and the manifest
            # leaves: taken again, not left as a stray beside a renamed run.
            if os.path.islink(path) or not os.path.isdir(path):
                raise
            if any(not n.startswith(TMP_PREFIX) for n in os.listdir(path)):
                raise
            self._remove_tmp_files(path)  # a manifest the kill cut short
        manifest = Manifest(run_id, name)
        if save:
            self.save_manifest(manifest)
        return manifest

    def create_run_as(
        self,
        run_id: str,
        names: Callable[[], str],
        taken: Callable[[str], None],
        *,
        save: bool = True,
        tries: int = 3,
    ) -> Manifest | None:
        """:meth:`create_run` under the name ``names()`` gives; a name that
        something runsmon did not make holds is handed to ``taken`` (which
        must make ``names`` give another) and the next is tried, ``tries``
        times in all. None when every name tried was taken; other errors
        (``OSError``, :class:`LogdirError`) are raised."""
        for _ in range(tries):
            name = names()
            try:
                return self.create_run(run_id, name, save=save)
            except FileExistsError:
                taken(name)
        return None

    def save_manifest(self, manifest: Manifest) -> None:
        self.write_atomic(self.run_path(manifest.name, MANIFEST), manifest.to_json().encode())

    def plan_parents(self, manifest: Manifest, rels: list[str], *, fresh: bool = False) -> None:
        """List in the manifest the directories files at ``rels`` will need.

        Saved before :meth:`make_parents` makes them, so that a kill in
        between leaves nothing the manifest does not name.  ``fresh``: the
        run directory was just made here and holds none of them yet.
        """
        for rel in rels:
            for parent in _parents(rel):
                if parent in manifest.dirs or (
                    not fresh and os.path.isdir(self.run_path(manifest.name, parent))
                ):
                    break
                manifest.dirs.append(parent)

    def make_parents(self, manifest: Manifest, rels: list[str], *, fresh: bool = False) -> None:
        """Make the directories files at ``rels`` need (the manifest lists them).

        ``fresh``: as for :meth:`plan_parents`; each is made without looking
        first (one mkdir, no stat), parents before children.
        """
        if not fresh:
            for rel in rels:
                self._make_parents(manifest, rel)
            return
        wanted = {p for rel in rels for p in _parents(rel)}
        for rel_dir in sorted(wanted, key=lambda d: d.count("/")):
            try:
                os.mkdir(self.run_path(manifest.name, rel_dir))
            except FileExistsError:
                if not os.path.isdir(self.run_path(manifest.name, rel_dir)):
                    raise
            if rel_dir not in manifest.dirs:
                manifest.dirs.append(rel_dir)

    def _make_parents(self, manifest: Manifest, rel: str) -> None:
        missing = []
        for parent in _parents(rel):
            if os.path.isdir(self.run_path(manifest.name, parent)):
                break
            missing.append(parent)
        for rel_dir in reversed(missing):
            os.mkdir(self.run_path(manifest.name, rel_dir))
            if rel_dir not in manifest.dirs:
                manifest.dirs.append(rel_dir)

    def link(self, manifest: Manifest, rel: str, target: str, *, fresh: bool = False) -> bool:
        """Link ``rel`` in the run directory to ``target``; copy where links fail.

        Returns True when the file was copied rather than linked.  ``fresh``:
        the run directory was just made here with the link's parents
        (:meth:`make_parents`), so the link is made without looking first.
        """
        if fresh:
            try:
                os.symlink(target, self.run_path(manifest.name, rel))
            except OSError:
                return self.link(manifest, rel, target)  # the careful way
            manifest.links[rel] = target
            manifest.copies.pop(rel, None)
            return False
        self._make_parents(manifest, rel)
        path = self.run_path(manifest.name, rel)
        if os.path.lexists(path):
            if os.path.islink(path) and os.readlink(path) == target:
                manifest.links[rel] = target
                return False
            self._remove_entry(path)
        try:
            os.symlink(target, path)
        except OSError:
            # Filesystems without symlinks (some network and FAT mounts).
            self.copy_update(manifest, rel, target)
            return True
        manifest.links[rel] = target
        manifest.copies.pop(rel, None)
        return False

    def copy_update(
        self,
        manifest: Manifest,
        rel: str,
        source: str,
        read: Callable[[int], bytes] | None = None,
    ) -> int:
        """Bring a copied event file up to date by appending what is new.

        ``read(offset)`` gives the source's bytes from ``offset`` (a ranged
        GET for a file in object storage); by default the local file is
        read. The offset is the copy's size: what was appended is never
        asked again, and a failed append leaves nothing half written.
        Returns the copy's size after it.
        """
        self._make_parents(manifest, rel)
        path = self.run_path(manifest.name, rel)
        have = os.path.getsize(path) if os.path.isfile(path) else 0
        if read is None:
            with open(source, "rb") as src:
                src.seek(have)
                data = src.read()
        else:
            data = read(have)
        manifest.copies[rel] = source
        if data:
            _append(path, data, have)
        return have + len(data)

    def copy_tail(self, manifest: Manifest, rel: str, size: int) -> bytes:
        """The last ``size`` bytes of a copy in the run directory."""
        with open(self.run_path(manifest.name, rel), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read()

    def copy_size(self, manifest: Manifest, rel: str) -> int | None:
        """The size of a copy in the run directory; None where there is none."""
        try:
            return os.path.getsize(self.run_path(manifest.name, rel))
        except OSError:
            return None

    def unlink(self, manifest: Manifest, rel: str) -> None:
        """Remove a link or copy runsmon made (the run's file went away)."""
        if manifest.links.pop(rel, None) is not None or manifest.copies.pop(rel, None) is not None:
            self._remove_entry(self.run_path(manifest.name, rel))

    def write_file(self, manifest: Manifest, rel: str, data: bytes) -> None:
        """Write one whole file of runsmon's own into the run directory."""
        self._make_parents(manifest, rel)
        self.write_atomic(self.run_path(manifest.name, rel), data)
        if rel not in manifest.files:
            manifest.files.append(rel)

    def append_file(self, manifest: Manifest, rel: str, data: bytes) -> None:
        """Append to a file of runsmon's own; on failure nothing half is left."""
        self._make_parents(manifest, rel)
        path = self.run_path(manifest.name, rel)
        if rel not in manifest.files:
            manifest.files.append(rel)
            self.save_manifest(manifest)
        _append(path, data, os.path.getsize(path) if os.path.exists(path) else 0)

    def read_file(self, manifest: Manifest, rel: str) -> bytes:
        """The bytes of a file runsmon wrote in a run directory."""
        if rel not in manifest.files:
            raise LogdirError(f"not a file runsmon wrote: {rel}")
        with open(self.run_path(manifest.name, rel), "rb") as f:
            return f.read()

    def truncate_file(self, manifest: Manifest, rel: str, size: int) -> None:
        """Cut a file of runsmon's own back to ``size`` bytes (what its
        manifest says was whole: a kill came after an append)."""
        if rel not in manifest.files:
            raise LogdirError(f"not a file runsmon wrote: {rel}")
        os.truncate(self.run_path(manifest.name, rel), size)

    # -- reading back --------------------------------------------------------

    def manifests(self) -> Iterator[Manifest]:
        """The manifests of every run directory runsmon made here."""
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                with open(os.path.join(entry.path, MANIFEST), encoding="utf-8") as f:
                    manifest = Manifest.from_json(f.read())
            except (OSError, ValueError, KeyError):
                continue
            if manifest.name == entry.name:
                yield manifest

    def created(self) -> float:
        """When the marker was made: a fixed time for synthesized events, so
        writing them again gives the same bytes (0.0 when unreadable)."""
        try:
            with open(os.path.join(self.path, MARKER), encoding="utf-8") as f:
                return float(json.load(f)["created"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def newest_experiment(self) -> tuple[int, str | None, bytes | None]:
        """The newest experiment generation found: (generation, its directory,
        its file's bytes); (0, None, None) when there is none."""
        gens = [
            int(d[len(EXPERIMENT_PREFIX) :])
            for d in self.experiment_dirs()
            if d[len(EXPERIMENT_PREFIX) :].isdigit()
        ]
        if not gens:
            return 0, None, None
        gen = max(gens)
        dirname = experiment_dir(gen)
        try:
            with open(self.run_path(dirname, EXPERIMENT_FILE), "rb") as f:
                return gen, dirname, f.read()
        except OSError:
            return gen, None, None

    def write_experiment(self, gen: int, data: bytes) -> str:
        """Write generation ``gen`` of the experiment, then delete the others
        (the new one is in place before the old one goes, so TensorBoard
        always has one). Returns its directory."""
        dirname = experiment_dir(gen)
        os.makedirs(self.run_path(dirname), exist_ok=True)
        self.write_atomic(self.run_path(dirname, EXPERIMENT_FILE), data)
        for old in self.experiment_dirs():
            if old != dirname:
                self.remove_experiment(old)
        return dirname

    def experiment_dirs(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.path) if n.startswith(EXPERIMENT_PREFIX))
        except FileNotFoundError:
            return []

    # -- deleting ------------------------------------------------------------

    def discard_run(self, manifest: Manifest) -> None:
        """:meth:`remove_run`, with a warning instead of an error where it cannot."""
        try:
            self.remove_run(manifest)
        except (OSError, LogdirError) as e:
            log.warning(
                "%s: cannot remove it from the logdir: %s", manifest.name, describe_error(e)
            )

    def remove_run(self, manifest: Manifest) -> None:
        """Delete what runsmon made for one run, and nothing else."""
        run_dir = self.run_path(manifest.name)
        if os.path.islink(run_dir):
            raise LogdirError(f"refusing to delete through a symlink: {run_dir}")
        for rel in list(manifest.links) + list(manifest.copies) + list(manifest.files):
            path = self.run_path(manifest.name, rel)
            try:
                self._remove_entry(path)
            except FileNotFoundError:
                pass
            except LogdirError as e:
                if "outside the logdir" in str(e):
                    raise
                log.warning("left in place: %s", e)
        self._remove_tmp_files(self.run_path(manifest.name))
        for rel_dir in sorted(manifest.dirs, key=len, reverse=True):
            path = self.run_path(manifest.name, rel_dir)
            if path == run_dir or os.path.islink(path) or self._through_link(path):
                continue
            with contextlib.suppress(OSError):
                os.rmdir(path)
        with contextlib.suppress(FileNotFoundError):
            self._remove_entry(self.run_path(manifest.name, MANIFEST))
        with contextlib.suppress(OSError):
            os.rmdir(self.run_path(manifest.name))

    def remove_experiment(self, dirname: str) -> None:
        path = self.run_path(dirname)
        if os.path.islink(path) or not os.path.isdir(path):
            return
        for entry in os.scandir(path):
            if "tfevents" in entry.name or entry.name.startswith(TMP_PREFIX):
                self._remove_entry(entry.path)
        with contextlib.suppress(OSError):
            os.rmdir(path)

    def _remove_tmp_files(self, directory: str) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                if entry.name.startswith(TMP_PREFIX):
                    self._remove_entry(entry.path)

    def clean_tmp(self) -> None:
        """Remove temporary files a killed runsmon left behind, and run
        directories a kill left with no manifest and nothing but such files, or
        nothing at all (made, their manifest never written)."""
        self._remove_tmp_files(self.path)
        runs = set()
        for manifest in self.manifests():
            runs.add(manifest.name)
            self._remove_tmp_files(self.run_path(manifest.name))
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path):
                if (
                    entry.name in runs
                    or entry.name.startswith(".")
                    or not entry.is_dir(follow_symlinks=False)
                ):
                    continue
                names = os.listdir(entry.path)
                if all(n.startswith(TMP_PREFIX) for n in names):
                    self._remove_tmp_files(entry.path)
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)

    def _remove_entry(self, path: str) -> None:
        """Remove a file or a symlink, never what a symlink points to.

        Every directory between the logdir and ``path`` must be a real
        directory: a symlink swapped in for one of them is not followed.
        """
        path = os.path.normpath(path)
        if not path.startswith(self.path + os.sep):
            raise LogdirError(f"refusing to delete outside the logdir: {path}")
        if self._through_link(path):
            raise LogdirError(f"refusing to delete through a symlink: {path}")
        if os.path.isdir(path) and not os.path.islink(path):
            raise LogdirError(f"refusing to delete a directory runsmon did not make: {path}")
        os.unlink(path)

    def _through_link(self, path: str) -> bool:
        """Whether a directory between the logdir and ``path`` is a symlink."""
        parent = os.path.dirname(path)
        while parent != self.path and parent.startswith(self.path + os.sep):
            if os.path.islink(parent):
                return True
            parent = os.path.dirname(parent)
        return False

    def destroy(self) -> None:
        """Remove a temporary logdir entirely (links are unlinked, not followed)."""
        if not self.temporary:
            raise LogdirError("only a temporary logdir is removed whole")
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Let another process use the logdir (also done when this one exits)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class _Lock:
    """An exclusive ``flock`` on a logdir's marker.

    Held until :meth:`release` or until no :class:`Logdir` of this process
    refers to it; the system drops it when the process dies.  Logdirs of one
    process on one path share it (a monitor restarted in the same process is
    no second user).  Nothing is written for it: a second process names the
    holder from ``/proc/locks``.
    """

    _held: weakref.WeakValueDictionary[str, _Lock] = weakref.WeakValueDictionary()

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def take(cls, logdir: str) -> _Lock | None:
        """Lock ``logdir``, or raise :class:`LogdirError` naming the process holding it.

        None where the filesystem has no locks (nothing to hold then).
        """
        held = cls._held.get(logdir)
        if held is not None and held._close.alive:
            return held
        if fcntl is None:  # pragma: no cover - Windows
            return None
        path = os.path.join(logdir, MARKER)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise LogdirError(f"cannot use logdir {logdir}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LogdirError(
                    f"logdir {logdir} is in use by another runsmon ({holder}); "
                    "stop that one or use another logdir (nothing was changed)"
                ) from None
            except OSError as e:  # a filesystem without locks: go on unlocked
                os.close(fd)
                log.debug("no lock on %s: %s", path, e)
                return None
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a marker just replaced: lock the one there now
        lock = cls(logdir, fd)
        cls._held[logdir] = lock
        return lock

    def release(self) -> None:
        if self._held.get(self.path) is self:
            del self._held[self.path]
        self._close()


def _holder(fd: int) -> str:
    """Who holds the lock on the file open as ``fd``: "pid 123: runsmon serve ...".

    Read from ``/proc/locks`` and the holder's ``/proc/<pid>/cmdline``
    (Linux); nothing is written anywhere for it.
    """
    st = os.fstat(fd)
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another process"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:2387529 0 EOF"
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[0].endswith("->"):
            continue
        try:
            major, minor, ino = fields[5].split(":")
            where = (int(major, 16), int(minor, 16), int(ino))
            pid = int(fields[4])
        except ValueError:
            continue
        if where == wanted and pid > 0:
            return f"pid {pid}: {_command(pid)}"
    return "another process"


def _command(pid: int) -> str:
    """A process's command line, short: ``runsmon serve --port 0 runs``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if len(argv) >= 3 and argv[1] == "-m":
        argv = argv[2:]  # python -m runsmon ...: runsmon ...
    elif len(argv) >= 2 and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]  # python /path/bin/runsmon ...: runsmon ...
    if argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv) or "?"
    return text if len(text) <= 200 else text[:197] + "..."


def _append(path: str, data: bytes, size: int) -> None:
    """Append ``data`` to ``path``, which holds ``size`` bytes: on a failure
    it is cut back to them, so nothing half is left."""
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError:
        with contextlib.suppress(OSError), open(path, "ab") as f:
            f.truncate(size)
        raise


def _parents(rel: str) -> list[str]:
    """The directories above ``rel`` in its run directory ("a/b/f" -> a/b, a).

    >>> _parents("a/b/f"), _parents("f"), _parents("a//b/")
    (['a/b', 'a'], [], ['a//b', 'a'])
    """
    out = []
    parent = rel.rpartition("/")[0].rstrip("/")
    while parent:
        out.append(parent)
        parent = parent.rpartition("/")[0].rstrip("/")
    return out
