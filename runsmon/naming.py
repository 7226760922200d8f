"""A run's directory name in the logdir: Guild-like, filesystem-safe, unique.

:func:`default_run_name` puts what tells a run apart first: ``SHORT_ID
OPERATION STARTED LABEL`` as Guild's own TensorBoard logdir does for runs with
ids, the short path (and Hydra job) for runs of a directory tree;
:func:`safe_name` makes any name one valid path component, and
:class:`RunNamer` keeps names unique and stable per run.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import unicodedata

from runsmon.run import Run

#: A name may use this many bytes of UTF-8 (most filesystems allow 255).
MAX_NAME_BYTES = 200

# Control characters (C0, DEL, C1) and Unicode line/paragraph separators.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SLASH_RE = re.compile(r"[/\\]+")
_HEX_RE = re.compile("[0-9a-fA-F]{8,}")


def format_started(started: float | None) -> str:
    """Seconds since the epoch as local time ``YYYY-MM-DD HH:MM:SS`` ("" for none)."""
    if not started:
        return ""
    try:
        return datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return ""


def default_run_name(run: Run) -> str:
    """A run's name, what tells it apart from the others first.

    The dashboard's Trial ID column shows about the first 16 characters of a
    name, so these come first:

    - A run with a hex id (Guild, MLflow) or a wandb id: ``SHORT_ID OPERATION
      STARTED LABEL``, as Guild's own TensorBoard logdir names runs (STARTED
      in local time, as Guild shows it).
    - A run of a directory tree: see :func:`tree_run_name`.

    Empty parts are left out.  The result is not yet made safe: pass it
    through :func:`safe_name` (or :class:`RunNamer`).

    >>> default_run_name(Run(id="3f2a9c1b77", dir="/r", operation="mnist:train", label="lr=0.1"))
    '3f2a9c1b mnist:train lr=0.1'
    >>> default_run_name(Run(id="lr_sweep/lr=0.1", dir="/r"))
    'lr_sweep/lr=0.1'
    """
    return run_name(run)


def run_name(run: Run, label: str | None = None) -> str:
    """:func:`default_run_name`, with ``label`` (when given) in place of the run's own."""
    ident = run_ident(run)
    if ident is None:
        return tree_run_name(run, label)
    label = run.label if label is None else label
    parts = [ident, run.operation, format_started(run.started), label]
    return " ".join(p.strip() for p in parts if p and p.strip())


def run_ident(run: Run) -> str | None:
    """The short id a run is known by (Guild, MLflow, wandb); None for a tree's run."""
    if _HEX_RE.fullmatch(run.id):
        return run.short_id
    wandb_id = run.attrs.get("wandb_id") if run.attrs else None
    if isinstance(wandb_id, str) and wandb_id:
        return wandb_id
    return None


#: Directories that tools put above every run they write, constant by
#: construction, left out of a run's name wherever they are in its path:
#: Lightning's ``TensorBoardLogger`` default name.
CONSTANT_DIRS = frozenset({"lightning_logs"})
#: The same, left out where the path starts with them (right below PATH):
#: ``SummaryWriter``'s ``runs/``, Hydra's ``outputs/`` and ``multirun/``,
#: TensorFlow tutorials' ``logs/fit/`` and ``logs/``.
TOOL_ROOTS = (("logs", "fit"), ("logs",), ("runs",), ("outputs",), ("multirun",))

_OVERRIDE_RE = re.compile(r"^\+{0,2}([A-Za-z_][\w-]*(?:\.[\w-]+)*)=(.*)$", re.DOTALL)


def short_path(path: str) -> str:
    """A run's path below PATH without the parts that are the same by construction.

    Only the run's own path counts, never the other runs: a run keeps its
    name when runs come or go.  The last part (the run's own directory) is
    always kept.

    >>> short_path("lightning_logs/version_0"), short_path("runs/Jan02_03-04-05_host")
    ('version_0', 'Jan02_03-04-05_host')
    >>> short_path("logs/fit/20240102-030405"), short_path("exp/lightning_logs/version_3")
    ('20240102-030405', 'exp/version_3')
    >>> short_path("runs")
    'runs'
    """
    parts = [p for p in path.split("/") if p]
    for root in TOOL_ROOTS:
        if len(parts) > len(root) and tuple(parts[: len(root)]) == root:
            parts = parts[len(root) :]
            break
    kept = [p for p in parts[:-1] if p not in CONSTANT_DIRS]
    return "/".join([*kept, *parts[-1:]])


def short_overrides(overrides: list[str]) -> str:
    """Hydra overrides for a name: a dotted key by its last part where that
    part names one key only, a leading ``+``/``++`` left out.

    >>> short_overrides(["model.lr=0.1", "optimizer=adam", "+trainer.precision=16"])
    'lr=0.1 optimizer=adam precision=16'
    >>> short_overrides(["model.lr=0.1", "head.lr=0.2", "~debug"])
    'model.lr=0.1 head.lr=0.2 ~debug'
    """
    parsed = [_OVERRIDE_RE.match(o) for o in overrides]
    last = [m.group(1).rsplit(".", 1)[-1] for m in parsed if m]
    out = []
    for text, m in zip(overrides, parsed, strict=True):
        if m is None:
            out.append(text)
            continue
        key, value = m.groups()
        short = key.rsplit(".", 1)[-1]
        out.append(f"{short if last.count(short) == 1 else key}={value}")
    return " ".join(out)


def tree_run_name(run: Run, label: str | None = None) -> str:
    """The name of a run of a directory tree (its id is its path below PATH).

    - A Hydra multirun job: ``JOB_NUMBER OVERRIDES SWEEP`` (``3 lr=0.1
      optimizer=adam 2026-11-30_07-18-27``): the job number and what the
      command line set tell the jobs of a sweep apart; the sweep directory
      (Hydra's ``multirun/DATE/TIME``) comes last.
    - Any other run: the last two parts of its :func:`short_path`, its
      label (Hydra's overrides of a single run, say), then the parts above
      (``lr0.1/seed2 experiments/2026-11/sweep``).
    - Runs from several PATHs: the PATH's short name first (``projA
      version_0``), as the source put it in the run's id.

    A name depends on the run alone (its path, label and Hydra job), so it
    stays the same while other runs come and go.  The start time and
    operation are left out: the path already tells the run.

    >>> tree_run_name(Run(id="experiments/2026-11/sweep/lr0.1/seed2", dir="/r"))
    'lr0.1/seed2 experiments/2026-11/sweep'
    >>> overrides = ["model.lr=0.1", "optimizer=adam"]
    >>> job = Run(id="multirun/2026-11-30/07-18-27/3", dir="/r", label=" ".join(overrides),
    ...           attrs={"hydra_job": 3, "hydra_overrides": overrides})
    >>> tree_run_name(job)
    '3 lr=0.1 optimizer=adam 2026-11-30/07-18-27'
    >>> two = Run(id="projA/lightning_logs/version_0", dir="/r", attrs={"path_label": "projA"})
    >>> tree_run_name(two)
    'projA version_0'
    """
    attrs = run.attrs or {}
    path = run.id
    prefix = attrs.get("path_label")
    if isinstance(prefix, str) and prefix and path.startswith(f"{prefix}/"):
        path = path[len(prefix) + 1 :]
    else:
        prefix = ""
    own_label = label is None
    label = run.label if label is None else label
    overrides = attrs.get("hydra_overrides")
    if own_label and isinstance(overrides, list):
        label = short_overrides([str(o) for o in overrides])
    job = attrs.get("hydra_job")
    if isinstance(job, int) and not isinstance(job, bool):
        sweep = short_path(path.rpartition("/")[0]) if "/" in path else ""
        parts = [prefix, str(job), label, sweep]
    else:
        short = short_path(path).split("/")
        parts = [prefix, "/".join(short[-2:]), label, "/".join(short[:-2])]
    return " ".join(p.strip() for p in parts if p and p.strip())


def safe_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``name`` as one path component on Linux, at most ``max_bytes`` of UTF-8.

    Slashes (and backslashes, as Guild does) become ``_``; control characters
    and line breaks become a space; surrounding whitespace goes; a leading
    ``.`` becomes ``_`` (names starting with a dot are runsmon's own); an empty
    result is ``_``.  Trimming never splits a character.

    >>> safe_name("abc lr/0.1\\nnext")
    'abc lr_0.1 next'
    >>> safe_name(".."), safe_name(""), safe_name("é" * 3, max_bytes=5)
    ('_.', '_', 'éé')
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must allow one character of UTF-8 (at least 4)")
    # Lone surrogates (undecodable bytes from os.fsdecode) cannot be encoded.
    name = name.encode("utf-8", "replace").decode("utf-8")
    name = _SLASH_RE.sub("_", name)
    name = _CONTROL_RE.sub(" ", name).strip()
    if name.startswith("."):
        name = "_" + name[1:]
    name = trim_utf8(name, max_bytes).rstrip()
    return name or "_"


def trim_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 fits ``max_bytes``.

    >>> trim_utf8("añb", 2)
    'a'
    """
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def _key(name: str) -> str:
    # Names that only differ in case or Unicode normal form would collide on
    # macOS filesystems and look alike to users: treat them as the same.
    return unicodedata.normalize("NFC", name).casefold()


class RunNamer:
    """Hands out unique, stable logdir names for runs.

    The first run to want a name gets it; a later run wanting the same name
    gets it with a suffix derived from its run id.  A run keeps its name until
    :meth:`release`; :meth:`restore` re-registers names given before a restart.

    >>> namer = RunNamer()
    >>> namer.name_for("run-a", "train lr=0.1")
    'train lr=0.1'
    >>> namer.name_for("run-b", "train lr=0.1")
    'train lr=0.1 (97f64e07)'
    >>> namer.name_for("run-a", "another wish")  # stable once given
    'train lr=0.1'
    """

    def __init__(self, max_bytes: int = MAX_NAME_BYTES) -> None:
        if max_bytes < 24:
            raise ValueError("max_bytes must be at least 24")
        self.max_bytes = max_bytes
        self._by_id: dict[str, str] = {}
        self._by_key: dict[str, str] = {}  # _key(name) -> run id
        self._extra: dict[str, set[str]] = {}  # run id -> more names it holds

    def name_for(self, run_id: str, wanted: str) -> str:
        """The name of ``run_id``: its earlier one, else ``wanted`` made safe and unique."""
        given = self._by_id.get(run_id)
        if given is not None:
            return given
        base = safe_name(wanted, self.max_bytes)
        name = base if _key(base) not in self._by_key else self._suffixed(run_id, base)
        self._take(run_id, name)
        return name

    def _suffixed(self, run_id: str, base: str) -> str:
        digest = hashlib.sha1(run_id.encode("utf-8", "surrogatepass")).hexdigest()
        for width in (8, 12, 16, 40):
            name = self._with_suffix(base, f" ({digest[:width]})")
            if _key(name) not in self._by_key:
                return name
        n = 2
        while True:  # only with a 160-bit hash collision; still terminates
            name = self._with_suffix(base, f" ({digest[:8]}-{n})")
            if _key(name) not in self._by_key:
                return name
            n += 1

    def _with_suffix(self, base: str, suffix: str) -> str:
        room = self.max_bytes - len(suffix.encode("utf-8"))
        return trim_utf8(base, room).rstrip() + suffix

    def _take(self, run_id: str, name: str) -> None:
        self._by_id[run_id] = name
        self._by_key[_key(name)] = run_id

    def name_of(self, run_id: str) -> str | None:
        """The name given to ``run_id``, if any."""
        return self._by_id.get(run_id)

    def owner(self, name: str) -> str | None:
        """The run id holding ``name`` (or a name that collides with it)."""
        return self._by_key.get(_key(name))

    def release(self, run_id: str) -> None:
        """Forget the names of ``run_id`` (its run is gone); they may be given again."""
        name = self._by_id.pop(run_id, None)
        if name is not None and self._by_key.get(_key(name)) == run_id:
            del self._by_key[_key(name)]
        for extra in self._extra.pop(run_id, ()):
            if self._by_key.get(_key(extra)) == run_id:
                del self._by_key[_key(extra)]

    def reserve(self, run_id: str, name: str) -> bool:
        """Let ``run_id`` hold ``name`` too (a second directory of its run), besides
        its own name; False, changing nothing, when another run holds it.

        >>> namer = RunNamer()
        >>> namer.name_for("a", "x"), namer.reserve("a", "x~"), namer.name_for("b", "x~")
        ('x', True, 'x~ (e9d71f5e)')
        """
        owner = self._by_key.get(_key(name))
        if owner is not None and owner != run_id:
            return False
        if owner is None:
            self._by_key[_key(name)] = run_id
            self._extra.setdefault(run_id, set()).add(name)
        return True

    def unreserve(self, run_id: str, name: str) -> None:
        """Give up a name :meth:`reserve` gave ``run_id`` (never its own name)."""
        extra = self._extra.get(run_id)
        if extra is None or name not in extra:
            return
        extra.discard(name)
        if not extra:
            del self._extra[run_id]
        if self._by_key.get(_key(name)) == run_id:
            del self._by_key[_key(name)]

    def restore(self, run_id: str, name: str) -> bool:
        """Give ``run_id`` the ``name`` it had before (e.g. read from a manifest).

        Returns False, changing nothing, when another run already holds that
        name or ``name`` is not one :func:`safe_name` would keep as it is.
        """
        if safe_name(name, self.max_bytes) != name:
            return False
        owner = self._by_key.get(_key(name))
        if owner is not None and owner != run_id:
            return False
        self.release(run_id)
        self._take(run_id, name)
        return True

    def foreign(self, name: str) -> None:
        """Something runsmon did not make holds ``name`` in the logdir: never give it."""
        self.restore(f"\0foreign:{name}", name)

    def names(self) -> dict[str, str]:
        """Run id -> name, for every name given."""
        return dict(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)
