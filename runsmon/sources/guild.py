"""Guild AI runs: ``<guild home>/runs/<id>/.guild/...`` read as :class:`Run` objects.

The layout (Guild 0.9): ``.guild/attrs/<name>`` holds one YAML document per
attribute, ``.guild/opref`` four shell-quoted words naming the operation, and
marker files (``LOCK``, ``LOCK.remote``, ``PENDING``, ``STAGED``) the state of a
run that has no ``exit_status`` yet.  A run's id is its directory name (as in
Guild); its operation is shown as ``guild runs`` shows it.  Only small
attributes are read (``RUN_ATTRS``), never ``env`` or ``pip_freeze``.  Nothing
here ever writes into a run.

Status follows Guild's own rules, with one addition: a run that has no exit
status and no ``LOCK`` yet, and whose files changed in the last ``settle``
seconds, is still being set up by Guild (Guild would call it an error for
that moment); it shows as running (``started`` written) or pending.  Problems
in a run that changed that recently are not reported yet either, because
Guild writes attributes in place and a read can catch one half written.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
import time
from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from runsmon import run as runmod
from runsmon.fs import LOCAL, FileSystem, Stat, read_one
from runsmon.report import Reporter, describe_error
from runsmon.run import Run
from runsmon.runfiles import GUILD_DIR
from runsmon.runview import DECLARED, DECLARED_REDUCED
from runsmon.sources.base import RunSource

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Attributes read for every run (never ``env``, ``pip_freeze`` or other big ones).
RUN_ATTRS = (
    "flags",
    "label",
    "started",
    "stopped",
    "exit_status",
    "initialized",
    "user_flags",
    "sourcecode_digest",
    "compare",
    "tags",
    "comments",
    "marked",
)
#: Attributes whose change must make a run be read again (``guild tag``,
#: ``comment`` and ``mark`` rewrite theirs in place: the run filters use them).
FINGERPRINT_ATTRS = (
    "flags",
    "label",
    "exit_status",
    "stopped",
    "started",
    "user_flags",
    "tags",
    "comments",
    "marked",
)
#: Attributes only Guild's run filters and sort read (``--digest``, filter
#: expressions, ``initialized`` for a run with no ``started``): over object
#: storage, where each is a GET, read only when a filter asks for them (see
#: :meth:`GuildRuns.want_attrs`), and ``initialized`` when ``started`` is
#: missing.
LAZY_ATTRS = frozenset({"initialized", "sourcecode_digest"})
#: Missing these (once a run is past its set-up) is worth a warning.
REQUIRED_ATTRS = ("flags",)

_INT_RE = re.compile(rb"\s*(-?(?:0|[1-9][0-9]*))\s*\Z")
# Text YAML surely reads as itself: a hex digest, or one line that starts with
# a letter and holds none of the characters that make YAML see more than text.
_HEX_RE = re.compile(r"[0-9a-f]*[a-f][0-9a-f]*\Z")
_PLAIN_RE = re.compile(r"[A-Za-z][^:#\[\]{},&*!|>%@`\\\"\t]*\Z")
_YAML_WORDS = frozenset(
    w
    for word in ("yes", "no", "true", "false", "on", "off", "null")
    for w in (word, word.capitalize(), word.upper())
)


class AttrError(Exception):
    """One attribute that could not be read; ``str()`` is the short cause."""


def load_yaml(data: bytes) -> Any:
    """Parse one attribute file as Guild wrote it (a single YAML document).

    Plain integers (timestamps, exit statuses) skip the YAML parser.

    >>> load_yaml(b"1795916747164338\\n"), load_yaml(b"lr: 0.1\\nlayers: [1, 2]\\n")
    (1795916747164338, {'lr': 0.1, 'layers': [1, 2]})
    """
    m = _INT_RE.match(data)
    if m:
        return int(m.group(1))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttrError("not UTF-8 text") from e
    plain = text[:-1] if text.endswith("\n") else text
    if _is_plain_text(plain):
        return plain
    if not text.strip():
        raise AttrError("empty file")
    flat = _flat_mapping(text)
    if flat is not None:
        return flat
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        if _Loader is not yaml.SafeLoader:
            # libyaml rejects a few documents PyYAML (and so Guild) reads,
            # such as "[0:]": ask the reader Guild uses before complaining.
            try:
                return yaml.load(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                pass
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        if isinstance(e, yaml.reader.ReaderError):
            raise AttrError("not text (control characters)") from e
        raise AttrError(f"invalid YAML{where}") from e


_KEY_LINE_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_.-]*(?=: |:$)")


def _top_keys(data: bytes) -> list[str] | None:
    """The keys of a flat block mapping, when every line is ``key: value``.

    Only the keys of ``user_flags`` matter; anything less simple is left to
    YAML (None).

    >>> _top_keys(b"lr: 0.1\\nopt: 'a: b'\\n"), _top_keys(b"lr:\\n  x: 1\\n")
    (['lr', 'opt'], None)
    """
    lines = data.splitlines()
    if not lines:
        return None
    keys = []
    for line in lines:
        m = _KEY_LINE_RE.match(line)
        if m is None:
            return None
        keys.append(m.group().decode("ascii"))
    return keys if len(set(keys)) == len(keys) else None


_FLAT_LINE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?: (.*))?\Z")
_YAML_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")
_YAML_FLOAT_RE = re.compile(r"-?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?\Z")
_YAML_BOOLS = {"true": True, "false": False, "True": True, "False": False}
_YAML_BOOLS.update({"TRUE": True, "FALSE": False})
_YAML_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


def _flat_mapping(text: str) -> dict[str, Any] | None:
    """A flat ``key: scalar`` mapping (Guild's usual ``flags``) read without YAML.

    Only what surely reads the same as YAML does is taken: simple keys, plain
    integers, decimal floats, ``true``/``false``, nulls and plain text. Anything
    else (quotes, lists, nesting, comments, ...) is None: left to YAML.

    >>> _flat_mapping("lr: 1.0e-05\\nn: 3\\nopt: adam\\nf: true\\nx: null\\n")
    {'lr': 1e-05, 'n': 3, 'opt': 'adam', 'f': True, 'x': None}
    >>> _flat_mapping("opt: 'a: b'\\n"), _flat_mapping("lr:\\n  x: 1\\n"), _flat_mapping("x")
    (None, None, None)
    """
    out: dict[str, Any] = {}
    for line in text.splitlines():
        m = _FLAT_LINE_RE.match(line)
        if m is None:
            return None
        key, value = sys.intern(m.group(1)), m.group(2) or ""
        if key in out or key in _YAML_WORDS:
            return None
        if value in _YAML_NULLS:
            out[key] = None
        elif value in _YAML_BOOLS:
            out[key] = _YAML_BOOLS[value]
        elif _YAML_INT_RE.match(value):
            out[key] = int(value)
        elif _YAML_FLOAT_RE.match(value):
            out[key] = float(value)
        elif _is_plain_text(value):
            out[key] = sys.intern(value) if len(value) <= 32 else value
        else:
            return None
    return out or None


def _is_plain_text(text: str) -> bool:
    """Whether YAML would read ``text`` (one line, no newline) as that very string."""
    if _HEX_RE.match(text):
        return not text.startswith("0b")  # 0b101... is a YAML 1.1 binary integer
    return (
        _PLAIN_RE.match(text) is not None
        and text.isprintable()
        and text == text.rstrip()
        and text not in _YAML_WORDS
        and text != "<<"
    )


@functools.lru_cache(maxsize=256)
def _shared_opref(text: str) -> dict[str, str]:
    """One parsed opref shared by every run of an operation (treat as read-only)."""
    return parse_opref(text)


def parse_opref(text: str) -> dict[str, str]:
    """Guild's ``.guild/opref``: ``PKG_TYPE:PKG_NAME PKG_VERSION MODEL OP``.

    >>> parse_opref("script:/tmp/proj '' '' train.py")["op_name"]
    'train.py'
    """
    words = text.split()
    if any(("'" in w and w != "''") or '"' in w or "\\" in w for w in words):
        words = []  # quoting beyond '' (empty): let shlex do it
    else:
        words = ["" if w == "''" else w for w in words]
    try:
        words = words or shlex.split(text)
    except ValueError as e:
        raise AttrError(f"invalid opref ({e})") from e
    if len(words) != 4 or ":" not in words[0]:
        raise AttrError("invalid opref (want 4 words, the first PKG_TYPE:PKG_NAME)")
    pkg_type, pkg_name = words[0].split(":", 1)
    return {
        "pkg_type": pkg_type,
        "pkg_name": pkg_name,
        "pkg_version": words[1],
        "model_name": words[2],
        "op_name": words[3],
    }


def guildfile_compare(data: Any, model: str, op: str) -> list[Any] | None:
    """An operation's ``compare`` list in a Guild file's data, or None.

    A mapping at the top is the operations of an anonymous model; a list
    holds models (``model: NAME`` with ``operations:``).

    >>> guildfile_compare({"train": {"compare": ["loss", "=lr"]}}, "", "train")
    ['loss', '=lr']
    >>> guildfile_compare([{"model": "m", "operations": {"t": {"compare": ["acc"]}}}], "m", "t")
    ['acc']
    """
    if isinstance(data, Mapping):
        data = [{"model": "", "operations": data}]
    if not isinstance(data, list):
        return None
    for item in data:
        if not isinstance(item, Mapping) or str(item.get("model") or "") != model:
            continue
        ops = item.get("operations")
        opdef = ops.get(op) if isinstance(ops, Mapping) else None
        compare = opdef.get("compare") if isinstance(opdef, Mapping) else None
        return compare if isinstance(compare, list) else None
    return None


_QUALIFIERS = frozenset(("min", "max", "first", "avg", "total", "count"))


def compare_metrics(specs: list[Any]) -> list[tuple[str, str]]:
    """The metrics (tag, group) that Guild's ``compare`` columns show as last values.

    As Guild's TensorBoard takes them (``_run_compare_metrics``): scalar
    columns without a qualifier or with ``last``; flags (``=lr``), attributes
    (``.label``) and other qualifiers (``min loss``) are no metrics (``min``
    and ``max`` are reduced metrics: :func:`compare_reductions`). A key
    ``GROUP#TAG`` names the scalar in the run's GROUP directory.

    >>> compare_metrics(["loss step", "last val#acc as best", "=lr", ".label", "min loss"])
    [('loss', ''), ('acc', 'val')]
    >>> compare_metrics(["scalar:'train/loss', acc"])
    [('train/loss', ''), ('acc', '')]
    """
    return [(tag, group) for tag, group, how in _scalar_cols(specs) if how == "last"]


#: Guild's qualifiers runsmon shows as reduced metrics (see :mod:`runsmon.reduce`).
REDUCED_QUALIFIERS = ("min", "max")


def compare_reductions(specs: list[Any]) -> list[tuple[str, str, str]]:
    """The ``min`` and ``max`` columns of Guild's ``compare`` as (tag, group, how).

    >>> compare_reductions(["min loss", "max val#acc as best", "last loss", "avg loss"])
    [('loss', '', 'min'), ('acc', 'val', 'max')]
    """
    return [c for c in _scalar_cols(specs) if c[2] in REDUCED_QUALIFIERS]


def _scalar_cols(specs: list[Any]) -> list[tuple[str, str, str]]:
    """Each scalar column of ``compare`` as (tag, group, qualifier), once."""
    out: list[tuple[str, str, str]] = []
    for spec in specs:
        if not isinstance(spec, str):
            continue
        for col in _split_cols(spec):
            try:
                words = shlex.split(col)
            except ValueError:
                continue
            if words and words[0].startswith("scalar:"):
                words[0] = words[0][len("scalar:") :]
                if not words[0]:
                    words.pop(0)
            if not words or words[0].startswith(("=", ".", "attr:", "flag:")):
                continue
            how = "last"
            if words[0] in _QUALIFIERS or words[0] == "last":
                how = words.pop(0)
            if not words:
                continue
            if words[0].startswith("scalar:"):
                words[0] = words[0][len("scalar:") :]
            prefix, tag = words[0].split("#", 1) if "#" in words[0] else ("", words[0])
            col = (tag, "" if prefix in ("", GUILD_DIR) else prefix, how)
            if tag and col not in out:
                out.append(col)
    return out


def _split_cols(spec: str) -> list[str]:
    """A colspec's columns: split at commas outside quotes."""
    cols, buf, quote = [], [], ""
    for ch in spec:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            cols.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    cols.append("".join(buf).strip())
    return [c for c in cols if c]


def format_operation(opref: Mapping[str, str]) -> str:
    """The operation as ``guild runs`` shows it (Guild 0.9 ``format_operation``).

    >>> format_operation(parse_opref("guildfile:/p/guild.yml abc mnist train"))
    'mnist:train'
    >>> format_operation(parse_opref("script:/p '' '' train.py"))
    'train.py'
    >>> format_operation(parse_opref("package:gpkg.mnist 0.1 mnist train"))
    'gpkg.mnist/mnist:train'
    """
    pkg_type = opref.get("pkg_type", "")
    model, op = opref.get("model_name", ""), opref.get("op_name", "")
    full = f"{model}:{op}" if model else op
    if pkg_type == "package":
        return f"{opref.get('pkg_name', '')}/{full}"
    if pkg_type == "pending":
        return op
    if pkg_type == "func":
        return f"{op}()"
    return full


def pid_alive(pid: int) -> bool:
    """Whether a local process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OSError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    # "pid (comm) S ...": the state follows the last ")".
    state = stat.rpartition(b")")[2].split()[:1]
    return state not in ([b"Z"], [b"X"])


def status_for_exit(exit_status: int) -> str:
    """Guild's mapping: 0 completed, negative terminated, positive error."""
    if exit_status == 0:
        return runmod.COMPLETED
    return runmod.TERMINATED if exit_status < 0 else runmod.ERROR


class GuildRuns(RunSource):
    """The runs of a Guild home (``path/runs``) or of a runs directory itself.

    ``settle`` is how many seconds a run's files must rest before a missing
    LOCK means "error" and before problems in its attributes are reported.
    """

    kind = "guild"

    def __init__(
        self,
        path: str | os.PathLike[str],
        fs: FileSystem = LOCAL,
        reporter: Reporter | None = None,
        settle: float = 5.0,
    ) -> None:
        super().__init__(fs=fs, reporter=reporter)
        self.path = os.fspath(path)
        self.settle = settle
        self._runs_dir = self._find_runs_dir()
        self._warned: dict[str, str] = {}
        self._fp_stats: tuple[str, list[Stat | None]] = ("", [])
        self._guildfiles: dict[str, tuple[Any, Any]] = {}  # path -> (stat key, data)
        self._lazy = LAZY_ATTRS  # left unread over object storage (see want_attrs)

    def want_attrs(self, names: frozenset[str]) -> None:
        """Read these of :data:`LAZY_ATTRS` over object storage too."""
        self._lazy = LAZY_ATTRS - names

    # -- finding runs --------------------------------------------------------

    def _find_runs_dir(self) -> str:
        """``path/runs`` when path is a Guild home, else path itself.

        A home whose ``runs/`` does not exist yet is read as a runs directory
        with no runs in it; once ``runs/`` appears the next listing uses it.
        """
        runs = os.path.join(self.path, "runs")
        st = self.fs.stat(runs)
        if st is not None and st.is_dir and not self._is_run_dir(runs):
            return runs
        return self.path

    def _is_run_dir(self, path: str) -> bool:
        st = self.fs.stat(os.path.join(path, ".guild"))
        return st is not None and st.is_dir

    @property
    def runs_dir(self) -> str:
        """The runs directory as decided by the last listing."""
        return self._runs_dir

    def roots(self) -> list[str]:
        if self._runs_dir == self.path:
            return [self.path]
        return [self.path, self._runs_dir]

    def watch_trees(self) -> list[str] | None:
        """The runs directory: every run is a directory in it ([] while it is missing)."""
        return [self._runs_dir] if os.path.isdir(self._runs_dir) else []

    def describe(self) -> str:
        return f"guild runs in {self.path}"

    def list_run_dirs(self) -> list[str]:
        self._runs_dir = runs_dir = self._find_runs_dir()
        # A directory known as a run needs no new stat: its fingerprint
        # notices when it stops being one.
        known = set(self._dirs or ())
        dirs = []
        for entry in self.fs.scandir(runs_dir):
            if entry.name.startswith(".") or not (entry.is_dir or entry.is_link):
                continue
            if entry.path in known or self._is_run_dir(entry.path):
                dirs.append(entry.path)
        dirs.sort()
        if self._warned:
            known = set(dirs)
            for gone in [d for d in self._warned if d not in known]:
                self.reporter.clear(gone, self._warned.pop(gone))
        return dirs

    # -- change detection ----------------------------------------------------

    def _stats(self, run_dir: str) -> list[Stat | None]:
        guild = run_dir + "/.guild"
        attrs = guild + "/attrs/"
        stat = self.fs.stat
        stats = [stat(guild), stat(attrs[:-1])]
        stats += [stat(attrs + n) for n in FINGERPRINT_ATTRS]
        stats.append(stat(guild + "/opref"))
        return stats

    def fingerprint(self, run_dir: str) -> Hashable:
        stats = self._stats(run_dir)
        # read_run (called next when this moved) reuses them.
        self._fp_stats = (run_dir, stats)
        fp: list[Hashable] = [s.key if s is not None else None for s in stats]
        if stats[2 + FINGERPRINT_ATTRS.index("exit_status")] is None:
            # Status may hang on a pid or on time: put them in the fingerprint.
            guild = run_dir + "/.guild"
            if self.fs.stat(guild + "/LOCK") is not None:
                fp.append(("pid", self._lock_pid_alive(guild)))
        fp.append(("settled", self._settled(stats)))
        return tuple(fp)

    def _settled(self, stats: list[Stat | None]) -> bool:
        newest = max((s.mtime_ns for s in stats if s is not None), default=0)
        return time.time() - newest / 1e9 >= self.settle

    def _lock_pid_alive(self, guild: str) -> bool | None:
        """True/False for a LOCK naming a live/dead pid; None when unreadable
        or when the run is not on this machine (object storage)."""
        if self.fs.local_path(guild) is None:
            return None
        try:
            raw = self.fs.read_bytes(guild + "/LOCK", 0, 32)
        except OSError:
            return None
        try:
            return pid_alive(int(raw.strip() or b"-1"))
        except ValueError:
            return False

    # -- reading -------------------------------------------------------------

    def read_run(self, run_dir: str) -> Run | None:
        guild = run_dir + "/.guild"
        attrs_dir = guild + "/attrs"
        problems: list[tuple[str, str]] = []  # (what, cause)
        values: dict[str, Any] = {}
        missing: set[str] = set()
        last_dir, fp_stats = self._fp_stats
        if last_dir == run_dir:
            # The fingerprint just taken: the attrs directory's stat, and the
            # attrs it found missing (a change since moves the fingerprint,
            # so the run is read again then).
            attrs_stat = fp_stats[1]
            absent = {n for n, st in zip(FINGERPRINT_ATTRS, fp_stats[2:], strict=False) if not st}
            if len(absent) == len(FINGERPRINT_ATTRS):
                absent = set()  # none there: read them, to say why (unsearchable, ...)
        else:
            attrs_stat = self.fs.stat(attrs_dir)
            absent = set()
        lazy: frozenset[str] = frozenset()  # attrs left unread for now
        if attrs_stat is not None and not attrs_stat.is_dir:
            problems.append((".guild/attrs", "not a directory"))
        elif attrs_stat is None:
            missing.update(RUN_ATTRS)
        else:
            # Over object storage (no local path) some are read only when needed.
            lazy = self._lazy if self.fs.local_path(guild) is None else frozenset()
            for name in RUN_ATTRS:
                if name in absent:
                    missing.add(name)
                elif name not in lazy:
                    self._read_attr(attrs_dir, name, values, missing, problems)

        opref: dict[str, str] | None = None
        try:
            opref = _shared_opref(self.fs.read_text(guild + "/opref"))
        except FileNotFoundError:
            missing.add("opref")
        except AttrError as e:
            problems.append(("opref", str(e)))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(("opref", _os_cause(e)))

        last_dir, stats = self._fp_stats
        if last_dir != run_dir:
            stats = self._stats(run_dir)
        self._fp_stats = ("", [])
        if self.fs.stat(guild) is None:
            return None  # the run went away while being read
        settled = self._settled(stats)

        flags = values.get("flags")
        if flags is None:
            flags = {}
        elif not isinstance(flags, Mapping):
            problems.append(("flags", f"not a mapping ({type(flags).__name__})"))
            flags = {}
        started = _micros(values, "started", problems)
        if started is None and "initialized" in lazy:
            # Guild sorts a run with no start by it (guildselect.guild_timestamp);
            # few runs have none: read alone, not with every run's.
            self._read_attr(attrs_dir, "initialized", values, missing, problems, alone=True)
        stopped = _micros(values, "stopped", problems)
        exit_status = values.get("exit_status")
        if exit_status is not None and (
            isinstance(exit_status, bool) or not isinstance(exit_status, int)
        ):
            problems.append(("exit_status", f"not an integer ({exit_status!r:.40})"))
            exit_status = None
        label = values.get("label")
        label = "" if label is None else str(label)
        user_flags = _user_flags(values.get("user_flags"), problems)

        status, pid = self._status(guild, exit_status, started, settled)
        if status not in (runmod.PENDING, runmod.STAGED):
            problems += [(name, "missing") for name in REQUIRED_ATTRS if name in missing]
            if "opref" in missing:
                problems.append(("opref", "missing"))

        operation = format_operation(opref) if opref else ""
        # Guild's batch_util.is_batch: the run has a proto.
        batch = self.fs.stat(guild + "/proto") is not None
        if opref and batch and self.fs.stat(guild + "/proto/.guild/opref"):
            operation = self._batch_operation(guild, operation)

        extra: dict[str, Any] = {
            k: values[k]
            for k in ("initialized", "sourcecode_digest", "tags", "comments", "marked")
            if k in values
        }
        if batch:
            extra["batch"] = True
        if exit_status is not None:
            extra["exit_status"] = exit_status
        if opref:
            extra["opref"] = opref
        compare = self._compare(opref) if opref else None
        if compare is None:
            compare = values.get("compare")
        metrics = compare_metrics(compare) if isinstance(compare, list) else []
        if metrics:
            extra[DECLARED] = tuple(metrics)
        reduced = compare_reductions(compare) if isinstance(compare, list) else []
        if reduced:
            extra[DECLARED_REDUCED] = tuple(reduced)
        if pid is not None:
            extra["pid"] = pid

        self._report(run_dir, problems if settled else [])
        return Run(
            id=os.path.basename(os.path.normpath(run_dir)),
            dir=run_dir,
            flags=flags,
            status=status,
            started=started,
            stopped=stopped,
            label=label,
            operation=operation,
            attrs=extra,
            user_flags=user_flags,
            tags=runmod.clean_tags(values.get("tags") or ()),
            note=comments_note(values.get("comments")),
        )

    def _read_attr(
        self,
        attrs_dir: str,
        name: str,
        values: dict[str, Any],
        missing: set[str],
        problems: list[tuple[str, str]],
        alone: bool = False,
    ) -> None:
        """Read one attribute into ``values``, else note it missing or its
        problem; ``alone``: not with the same attribute of other runs."""
        path = f"{attrs_dir}/{name}"
        try:
            data = read_one(self.fs, path) if alone else self.fs.read_bytes(path)
            values[name] = load_yaml(data)
        except FileNotFoundError:
            missing.add(name)
        except AttrError as e:
            problems.append((name, str(e)))
        except OSError as e:
            problems.append((name, _os_cause(e)))

    def _compare(self, opref: Mapping[str, str]) -> list[Any] | None:
        """The ``compare`` columns of the run's operation in its Guild file, as
        Guild takes them (the file as it is now), or None."""
        if opref.get("pkg_type") != "guildfile":
            return None
        path = opref.get("pkg_name", "")
        st = self.fs.stat(path) if path else None
        if st is None or not st.is_file:
            return None
        cached = self._guildfiles.get(path)
        if cached is None or cached[0] != st.key:
            try:
                data = yaml.load(self.fs.read_text(path), Loader=_Loader)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                data = None  # Guild cannot read it either: the run's attr decides
            cached = self._guildfiles[path] = (st.key, data)
        return guildfile_compare(cached[1], opref.get("model_name", ""), opref.get("op_name", ""))

    def _status(
        self, guild: str, exit_status: int | None, started: float | None, settled: bool
    ) -> tuple[str, int | None]:
        """Guild's status rules (see the module docstring); also the LOCK pid."""
        if self.fs.stat(guild + "/LOCK.remote") is not None:
            return runmod.RUNNING, None
        if self.fs.stat(guild + "/PENDING") is not None:
            return runmod.PENDING, None
        if self.fs.stat(guild + "/STAGED") is not None:
            return runmod.STAGED, None
        if exit_status is not None:
            return status_for_exit(exit_status), None
        try:
            raw = self.fs.read_bytes(guild + "/LOCK", 0, 32)
        except FileNotFoundError:
            if not settled:  # Guild is still setting the run up
                return (runmod.RUNNING if started is not None else runmod.PENDING), None
            return runmod.ERROR, None
        except OSError:
            return runmod.ERROR, None
        try:
            pid = int(raw.strip())
        except ValueError:
            return runmod.ERROR, None
        if self.fs.local_path(guild) is None:
            # A pid of another machine (runs in object storage): the LOCK
            # stands for a running run, as Guild's LOCK.remote does.
            return runmod.RUNNING, None
        return (runmod.RUNNING if pid_alive(pid) else runmod.ERROR), pid

    def _batch_operation(self, guild: str, operation: str) -> str:
        """Guild shows a batch run as ``PROTO_OP+OP`` (its trials' operation)."""
        try:
            proto = parse_opref(self.fs.read_text(guild + "/proto/.guild/opref"))
        except (OSError, UnicodeDecodeError, AttrError):
            return operation
        sep = "" if operation.startswith("+") else "+"
        return f"{format_operation(proto)}{sep}{operation}"

    def _report(self, run_dir: str, problems: list[tuple[str, str]]) -> None:
        """One warning line per run for its current set of problems."""
        by_cause: dict[str, list[str]] = {}
        for what, cause in problems:
            by_cause.setdefault(cause, []).append(what)
        text = "; ".join(f"{', '.join(whats)}: {cause}" for cause, whats in by_cause.items())
        old = self._warned.get(run_dir)
        cause = f"attrs: {text}" if problems else None
        if old == cause:
            return
        if old is not None:
            self.reporter.clear(run_dir, old)
            del self._warned[run_dir]
        if cause is not None:
            self._warned[run_dir] = cause
            short = os.path.basename(os.path.normpath(run_dir))[:8]
            self.reporter.warn(
                subject=run_dir, cause=cause, message=f"guild run {short} ({run_dir}): {text}"
            )


def _micros(values: dict[str, Any], name: str, problems: list[tuple[str, str]]) -> float | None:
    """A timestamp attribute (microseconds since the epoch) in seconds."""
    value = values.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append((name, f"not a timestamp ({value!r:.40})"))
        return None
    return value / 1_000_000


def _user_flags(value: Any, problems: list[tuple[str, str]]) -> frozenset[str] | None:
    """Guild 0.9 writes a mapping of the flags set on the command line."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return frozenset(str(k) for k in value)
    if isinstance(value, list):
        return frozenset(str(k) for k in value)
    problems.append(("user_flags", f"not a mapping ({type(value).__name__})"))
    return None


def _os_cause(error: BaseException) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(error, OSError) and str(error).startswith("not a regular file"):
        return "not a regular file"
    return describe_error(error)


def comments_note(comments: Any) -> str:
    """A run's Guild comments (``guild comment``) as one note: their bodies,
    oldest first, one a line.

    >>> comments_note([{"body": "lr too high", "time": 2}, {"body": "baseline", "time": 1}])
    'baseline\\nlr too high'
    """
    if not isinstance(comments, list):
        return ""
    bodies = [
        (c.get("time") or 0, str(c.get("body") or "").strip())
        for c in comments
        if isinstance(c, Mapping)
    ]
    bodies.sort(key=lambda tb: tb[0] if isinstance(tb[0], (int, float)) else 0)
    return "\n".join(b for _, b in bodies if b)
