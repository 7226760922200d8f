"""The command line: ``runsmon serve``, ``runsmon table``, ``runsmon demo``.

Usage errors exit 2, runtime errors 1, each with one line saying what and
what to do; no traceback for anything a user can cause.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from runsmon.logdir import Logdir, LogdirError
from runsmon.serve import TensorBoardError

log = logging.getLogger("runsmon")

SERVE_EXAMPLE = """\
examples:
  runsmon serve                         # Guild runs in $GUILD_HOME or ~/.guild
  runsmon serve ~/experiments --port 0  # any run tree, any free port; the URL is printed
  runsmon serve multirun/ --hparams differing --status completed --open
  runsmon serve --once --no-tensorboard --logdir /tmp/tb ~/.guild
"""

TABLE_EXAMPLE = """\
examples:
  runsmon table ~/experiments --hparams differing --sort -val/accuracy
  runsmon table ~/experiments --sort -val/accuracy --limit 5   # the 5 best
  runsmon table ~/.guild --status completed -o runs.csv        # CSV, from the extension
  runsmon table ~/experiments --importance val/loss            # which hparams matter
"""

DEMO_EXAMPLE = """\
example:
  runsmon demo --port 6006              # then open http://127.0.0.1:6006/#hparams
"""


class UsageError(Exception):
    """A bad argument: exit 2."""


class RuntimeFailure(Exception):
    """Something went wrong at run time: exit 1."""


class _Interrupted(BaseException):
    """SIGINT or SIGTERM during startup (a BaseException, as KeyboardInterrupt is:
    no `except Exception` on the way swallows it)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# -- argument types ------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _best(text: str) -> Any:
    from runsmon.reduce import parse_best

    try:
        return parse_best(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return value


def _since(text: str) -> float:
    from runsmon.select import parse_since

    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _statuses(text: str) -> frozenset[str]:
    from runsmon.select import parse_statuses

    try:
        return parse_statuses([text])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _range(text: str) -> str:
    from runsmon.guildselect import parse_range

    try:
        parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"invalid RANGE {text!r}: {e} (e.g. today, yesterday, 'last 2 hours', "
            "'after 2024-05-01', 'between 5-1 and 5-3')"
        ) from None
    return text


def _filter_expr(text: str) -> Any:
    from runsmon.guildselect import parse_filter

    try:
        return parse_filter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid filter {text!r}: {e}") from None


def _status_chars(text: str) -> str:
    bad = [c for c in text if c not in "rcetps"]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unrecognized status char {bad[0]!r} (r, c, e, t, p, s: running, completed, "
            "error, terminated, pending, staged)"
        )
    return text


def _tb_option(text: str) -> str:
    from runsmon.serve import tensorboard_options

    try:
        return tensorboard_options([text])[0]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- options -------------------------------------------------------------------


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="log every change as it syncs")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress or summary; the URL and problems only",
    )


def _add_server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("TensorBoard")
    g.add_argument("--host", default="127.0.0.1", help="TensorBoard host (default 127.0.0.1)")
    g.add_argument(
        "-p",
        "--port",
        type=_port,
        default=6006,
        help="TensorBoard port (default 6006; 0: any free one)",
    )
    g.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    g.add_argument(
        "-n",
        "--no-open",
        dest="open",
        action="store_false",
        help="do not open a browser (the default; Guild's spelling)",
    )
    g.add_argument(
        "--tab",
        metavar="TAB",
        help="the dashboard tab to open on (default hparams), e.g. scalars",
    )
    g.add_argument(
        "-O",
        dest="tb_options",
        type=_tb_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pass an option to TensorBoard (repeatable), e.g. -O samples_per_plugin=scalars=500",
    )


def _add_source_options(p: argparse.ArgumentParser, short_o: bool = True) -> None:
    from runsmon.sources import KINDS

    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH|RUN",
        help="run trees: Guild homes or runs dirs, MLflow stores, wandb dirs, any directory "
        "of runs (default: $GUILD_HOME, else ~/.guild); or, for Guild runs, RUNs as "
        "`guild runs` selects them: a run id or id prefix, a one-based index as "
        "`guild runs` lists them, a range START:END (either may be left out). "
        "A word that names an existing file or directory is a PATH",
    )
    g = p.add_argument_group("sources")
    g.add_argument(
        "--source",
        choices=KINDS,
        help="how to read every PATH (default: detected per PATH, and said)",
    )
    g.add_argument(
        "--flags-file",
        metavar="NAME",
        help="the flags file of a run, relative to its directory (directory trees)",
    )
    g.add_argument(
        "--idle-after",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="a run without status of its own has ended once its event files "
        "did not change for this long (default 300)",
    )
    g.add_argument(
        *(("-o", "--storage-option") if short_o else ("--storage-option",)),
        dest="storage_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec storage option for PATHs in object storage (s3://bucket/prefix; "
        "repeatable), e.g. -o endpoint_url=http://127.0.0.1:9000 -o anon=true",
    )


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    from runsmon.hparams import HPARAM_MODES

    g = p.add_argument_group("columns")
    g.add_argument(
        "--hparams",
        choices=HPARAM_MODES,
        default="all",
        help="all flags (default), those that differ between runs, or those a user set",
    )
    metric_glob = (
        "; a '/' is part of a tag ('train/*' matches train/loss), GROUP#TAG names "
        "the tags of a group directory ('val#loss', 'train#*')"
    )
    for kind, what in (("hparam", "hparam names"), ("metric", "metric tags")):
        g.add_argument(
            f"--{kind}-include",
            action="append",
            default=[],
            metavar="GLOB",
            help=f"only {what} matching GLOB (repeatable)"
            + (metric_glob if kind == "metric" else ""),
        )
        g.add_argument(
            f"--{kind}-exclude",
            action="append",
            default=[],
            metavar="GLOB",
            help=f"leave out {what} matching GLOB (repeatable)"
            + ("; sys/* always" if kind == "metric" else ""),
        )
    g.add_argument(
        "--best",
        action="append",
        default=[],
        type=_best,
        metavar="TAG=min|max|last-mean:K",
        help="beside the last value of each metric matching TAG (a glob, as for "
        "--metric-include), a column of its best so far: its running min or max over "
        "the run's steps, or the mean of its last K values ('val/loss (min)'; repeatable)",
    )


def _add_group_options(p: argparse.ArgumentParser) -> None:
    from runsmon.seeds import DEFAULT_SEED_FLAGS

    g = p.add_argument_group("seed groups")
    g.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per configuration: runs whose flags are equal but for their seed flags "
        "(the dashboard shows their mean; runsmon table mean ± std (n))",
    )
    g.add_argument(
        "--seed-flags",
        action="append",
        default=[],
        metavar="GLOB",
        help="flags that are seeds, for --group-seeds (repeatable; default: "
        + ", ".join(DEFAULT_SEED_FLAGS)
        + ")",
    )


def _seed_groups(args: argparse.Namespace) -> Any:
    """The seed groups --group-seeds asks for (None: a row per run)."""
    from runsmon.seeds import DEFAULT_SEED_FLAGS, SeedGroups

    globs = tuple(getattr(args, "seed_flags", None) or ())
    if not getattr(args, "group_seeds", False):
        if globs:
            raise UsageError("--seed-flags needs --group-seeds")
        return None
    return SeedGroups(globs or DEFAULT_SEED_FLAGS)


def _add_filter_options(
    p: argparse.ArgumentParser, limit_help: str = "only the N newest runs"
) -> None:
    g = p.add_argument_group("runs (also as `guild runs` filters them)")
    g.add_argument(
        "-Fo",
        "--operation",
        action="append",
        default=[],
        metavar="GLOB",
        help="only these operations: a glob over the whole name, or as Guild matches VAL "
        "(train matches mnist:train; ^... or ...$ a regular expression)",
    )
    g.add_argument(
        "-Fl",
        "--label",
        action="append",
        default=[],
        metavar="GLOB",
        help="only these labels: a glob over the whole label, or text in it (as Guild); "
        "- for no label",
    )
    g.add_argument("-Fu", "--unlabeled", action="store_true", help="only runs without a label")
    g.add_argument(
        "-Ft", "--tag", action="append", default=[], metavar="TAG", help="only runs with TAG"
    )
    g.add_argument(
        "-Fc",
        "--comment",
        action="append",
        default=[],
        metavar="VAL",
        help="only runs with a comment containing VAL (any case; - for none)",
    )
    marked = g.add_mutually_exclusive_group()
    marked.add_argument(
        "-Fm", "--marked", dest="marked", action="store_const", const=True, help="only marked runs"
    )
    marked.add_argument(
        "-Fn",
        "--unmarked",
        dest="marked",
        action="store_const",
        const=False,
        help="only unmarked runs",
    )
    g.add_argument(
        "-Fs",
        "--started",
        type=_range,
        metavar="RANGE",
        help="only runs started in RANGE, as Guild reads it: today, yesterday, "
        "'last 2 hours', 'after 2024-05-01', 'between 5-1 and 5-3', '3 days ago', ...",
    )
    g.add_argument(
        "-Fd", "--digest", metavar="VAL", help="only runs whose source code digest starts with VAL"
    )
    g.add_argument(
        "-F",
        "--filter",
        dest="filter_expr",
        type=_filter_expr,
        metavar="EXPR",
        help="only runs for which Guild's filter expression holds, e.g. "
        "'lr > 0.01 and optimizer = adam' (flags, attributes, last scalar values)",
    )
    g.add_argument(
        "--status",
        type=_statuses,
        action="append",
        default=[],
        metavar="LIST",
        help="only runs with these statuses, e.g. running,completed "
        "(running, completed, error, terminated, pending, staged, unknown)",
    )
    for char, name in (
        ("r", "running"),
        ("c", "completed"),
        ("e", "error"),
        ("t", "terminated"),
        ("p", "pending"),
        ("s", "staged"),
    ):
        g.add_argument(
            f"-S{char}",
            f"--{name}",
            dest=f"status_{name}",
            action="store_const",
            const=True,
            help=f"only {name} runs (with other status flags: any of them)",
        )
        g.add_argument(
            f"--not-{name}",
            dest=f"status_{name}",
            action="store_const",
            const=False,
            help=f"no {name} runs",
        )
    # Guild's -S with status characters: -Set is --error --terminated.
    g.add_argument("-S", dest="status_chars", type=_status_chars, help=argparse.SUPPRESS)
    g.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only runs started since WHEN: a duration back from now (30m, 2h, 3d, 1w) "
        "or a date (2024-05-01, '2024-05-01 13:30')",
    )
    g.add_argument("--limit", type=_positive_int, metavar="N", help=limit_help)
    g.add_argument(
        "--include-batch",
        action="store_true",
        help="also Guild's batch runs (OP+ runs that start trials); left out by default",
    )
    g.add_argument(
        "--run-name-flags",
        metavar="A,B",
        help="name runs by these flags' values instead of their labels",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runsmon",
        description="TensorBoard's HParams dashboard for runs that never wrote hparams summaries.",
        epilog="examples:\n  runsmon serve ~/experiments --port 0\n"
        "  runsmon table ~/experiments --hparams differing\n  runsmon demo\n\n"
        "run `runsmon COMMAND --help` for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runsmon {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parser.set_defaults(_commands=sub.choices)

    serve = sub.add_parser(
        "serve",
        help="keep a logdir in step with runs and serve TensorBoard on it",
        description="Keep a TensorBoard logdir in step with runs and serve TensorBoard on it. "
        "Runs until Ctrl-C (or SIGTERM).",
        epilog=SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_options(serve)
    serve.add_argument(
        "--logdir",
        help="where runsmon writes the logdir TensorBoard reads (not the runs: those are PATH; "
        "default: a temporary one, removed at exit)",
    )
    serve.add_argument(
        "--layout",
        choices=("linked", "compact", "auto"),
        default="auto",
        help="linked: each run's directory links all its event files (every dashboard); "
        "compact: one event file a run, its scalars only (no images or histograms), for "
        "thousands of runs; auto (default): linked while its event files take at most half "
        "the open-file limit, else compact, said in one line",
    )
    serve.add_argument(
        "--interval",
        "--refresh-interval",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between polls (default 5)",
    )
    serve.add_argument(
        "--full-check",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="every run is re-checked within SECONDS, a share at each poll, "
        "whatever the file watchers reported (default 120)",
    )
    serve.add_argument("--once", action="store_true", help="sync once and exit")
    serve.add_argument(
        "--export-scalars",
        metavar="PATH|-",
        help="write every scalar of the selected runs to CSV (- for stdout) and exit: "
        "run, path, tag, value, step as Guild writes them, then wall_time",
    )
    serve.add_argument(
        "--skip-images",
        action="store_true",
        help="leave out the runs' image files (png, jpg, gif, tiff), which otherwise "
        "show in the Images tab as Guild shows them",
    )
    serve.add_argument(
        "--skip-hparams",
        action="store_true",
        help="write no HParams summaries: the logdir links the runs' files only (no HPARAMS rows)",
    )
    serve.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="only keep the logdir (for a TensorBoard of your own)",
    )
    serve.add_argument(
        "--importance",
        metavar="METRIC",
        help="list the hparams by how strongly each explains METRIC (a metric column: "
        "loss, val#loss, 'val/loss (min)'), each with its figure in its description; "
        "the dashboard shows the strongest as its default columns",
    )
    _add_selection_options(serve)
    _add_group_options(serve)
    _add_filter_options(serve)
    _add_server_options(serve)
    _add_output_options(serve)

    table = sub.add_parser(
        "table",
        help="print the runs' hparams and metrics as a table",
        description="Print what the HParams dashboard shows as a table: one row per run, "
        "hparam and metric columns. Writes no logdir.",
        epilog=TABLE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_options(table, short_o=False)
    table.add_argument(
        "--sort",
        metavar="[-]COLUMN",
        help="sort by a column (a leading - sorts descending); default: by start time",
    )
    table.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        help="default: from -o FILE's extension (.csv, .json), else table",
    )
    table.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    table.add_argument(
        "--importance",
        metavar="METRIC",
        help="instead of the runs, rank the hparams by how strongly each explains METRIC "
        "(a metric column: loss, val#loss, val/loss)",
    )
    _add_selection_options(table)
    _add_group_options(table)
    _add_filter_options(table, limit_help="only the N newest runs; with --sort, the first N rows")

    demo = sub.add_parser(
        "demo",
        help="make a small sweep of sample runs and serve it",
        description="Make a small sweep of sample runs in a temporary directory and serve it: "
        "flags of each type, metrics at the root and in train/ and val/, a failed run and a "
        "run that is still running.",
        epilog=DEMO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--dir", help="where to make the runs (default: a temporary directory)")
    demo.add_argument(
        "--running-seconds",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="how long the running run keeps running (default 60)",
    )
    _add_server_options(demo)
    _add_output_options(demo)
    return parser


# -- output ----------------------------------------------------------------------


class Progress:
    """Startup progress from the monitor's ``progress(done, total)`` callback.

    On a terminal: a bar redrawn in place with runs done / total and the
    rate.  Elsewhere: a plain line every ``every`` seconds.  ``finish()``
    clears the bar.
    """

    def __init__(
        self,
        stream: TextIO,
        tty: bool | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = every
        self.clock = clock
        self.started: float | None = None  # the first call: reading starts then
        self._last = 0.0
        self._drawn = False
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
            if self.started is None:
                # Rates and plain lines count from the first run read, not
                # from the listing (or a restart's reading) before it.
                self.started = self._last = now
            if self.tty:
                if now - self._last < 0.1 and done < total:
                    return
                self._last = now
                self._draw(done, total, now)
            elif now - self._last >= self.every:
                self._last = now
                self.stream.write(
                    f"runsmon: read {done} of {total} runs ({self._rate(done, now)})\n"
                )
                self.stream.flush()

    def _rate(self, done: int, now: float) -> str:
        elapsed = max(now - (self.started if self.started is not None else now), 1e-6)
        return f"{done / elapsed:.0f} runs/s"

    def _draw(self, done: int, total: int, now: float) -> None:
        width = max(10, min(30, shutil.get_terminal_size((80, 24)).columns - 50))
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r\x1b[Krunsmon: [{bar}] {done}/{total} runs  {self._rate(done, now)}")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Take the bar off the line (before another line is written)."""
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False

    def finish(self) -> None:
        self.clear()


class _Handler(logging.StreamHandler):
    """Log lines on stderr that never land in the middle of a progress bar."""

    progress: Progress | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.progress is not None:
            self.progress.clear()
        super().emit(record)


_handler = _Handler(sys.stderr)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    # Not setStream: it flushes the old stream, which may be closed (an
    # earlier caller's redirected stderr).
    _handler.stream = sys.stderr
    _handler.setFormatter(logging.Formatter("runsmon: %(message)s"))
    log.handlers[:] = [_handler]
    log.setLevel(level)
    log.propagate = False


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


# -- building blocks ---------------------------------------------------------------


def default_paths() -> list[str]:
    home = os.environ.get("GUILD_HOME") or os.path.expanduser("~/.guild")
    return [home]


def split_runs(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Command line words as (PATHs, RUNs): a word naming an existing file or
    directory is a PATH; else an index, a range or a hex id (prefix) is a RUN.

    >>> split_runs(["/", "1", "2:", "3f2a", "/no/such/dir"])
    (['/', '/no/such/dir'], ['1', '2:', '3f2a'])
    """
    from runsmon.guildselect import is_run_spec
    from runsmon.sources.mlflow_sqlite import db_uri_path

    paths, runs = [], []
    for word in words:
        path = os.path.expanduser(db_uri_path(word) or word)
        if not os.path.exists(path) and is_run_spec(word):
            runs.append(word)
        else:
            paths.append(word)
    return paths, runs


def _filters(args: argparse.Namespace, runs: Sequence[str] = ()) -> Any:
    """The run filters the options ask for."""
    from runsmon.select import Filters

    statuses = set().union(*getattr(args, "status", []) or [frozenset()])
    not_statuses = set()
    chars = getattr(args, "status_chars", None) or ""
    for name in ("running", "completed", "error", "terminated", "pending", "staged"):
        value = getattr(args, f"status_{name}", None)
        if value is None and name[0] in chars:
            value = True
        if value is True:
            statuses.add(name)
        elif value is False:
            not_statuses.add(name)
    labels = tuple(getattr(args, "label", []) or ())
    if labels and getattr(args, "unlabeled", False):
        raise UsageError("--label and --unlabeled cannot both be used")
    return Filters(
        operations=tuple(getattr(args, "operation", []) or ()),
        labels=labels,
        statuses=frozenset(statuses),
        since=getattr(args, "since", None),
        limit=getattr(args, "limit", None),
        not_statuses=frozenset(not_statuses),
        unlabeled=getattr(args, "unlabeled", False),
        tags=tuple(getattr(args, "tag", []) or ()),
        comments=tuple(getattr(args, "comment", []) or ()),
        marked=getattr(args, "marked", None),
        started=getattr(args, "started", None),
        digest=getattr(args, "digest", None),
        expr=getattr(args, "filter_expr", None),
        runs=tuple(runs),
        include_batch=getattr(args, "include_batch", True),
    )


def _make_source(args: argparse.Namespace, paths: Sequence[str] | None = None) -> Any:
    """The source for the PATHs, wrapped in the run filters; says what it reads."""
    from runsmon.remotefs import is_store_url
    from runsmon.report import Reporter
    from runsmon.select import filtered
    from runsmon.sources import combine, detect_source
    from runsmon.sources.mlflow_server import is_server_url
    from runsmon.sources.mlflow_sqlite import database_path, db_uri_path

    reporter = Reporter()
    sources = []
    given = paths if paths is not None else args.paths
    given, runs = split_runs(given or [])
    stores = []
    for path in given or default_paths():
        fs = None
        if is_server_url(path):
            pass  # an MLflow tracking server: asked when the runs are listed
        elif is_store_url(path):
            fs = _open_store(args, path, reporter)
            stores.append(fs)
            path = fs.root
        else:
            path = os.path.expanduser(db_uri_path(path) or path)  # sqlite:/// is an MLflow store
            if not os.path.exists(path):
                hint = "give a directory of runs" if given else "give a PATH of runs"
                raise UsageError(f"no such directory: {path}; {hint}")
            if not os.path.isdir(path) and database_path(path) is None:
                raise UsageError(f"not a directory: {path}; give a directory of runs")
            if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
                raise RuntimeFailure(
                    f"cannot read {path}: permission denied; check its permissions"
                )
        try:
            source = detect_source(
                path,
                kind=getattr(args, "source", None),
                flags_file=getattr(args, "flags_file", None),
                idle_after=getattr(args, "idle_after", None),
                reporter=reporter,
                fs=fs,
            )
        except (OSError, ValueError) as e:
            from runsmon.report import describe_error

            raise RuntimeFailure(f"cannot read {path}: {describe_error(e)}") from None
        if runs and getattr(source, "kind", None) != "guild":
            raise UsageError(
                f"RUN {runs[0]} selects Guild runs, and {source.describe()} is no Guild home; "
                "give RUNs with Guild PATHs only"
            )
        sources.append(source)
    source = combine(sources)
    filters = _filters(args, runs)
    args.stores = stores  # the object stores read: the monitor lists them each poll
    return filtered(source, filters), filters, sources


def _store_fs(args: argparse.Namespace) -> Any:
    """The filesystem reading the PATHs: local, and any object stores among them."""
    from runsmon.remotefs import routed

    return routed(getattr(args, "stores", []))


def _open_store(args: argparse.Namespace, url: str, reporter: Any) -> Any:
    """The filesystem of a PATH in object storage, listed once to check it."""
    from runsmon.remotefs import ObjectStoreFileSystem, parse_storage_options

    try:
        options = parse_storage_options(getattr(args, "storage_options", []) or [])
    except ValueError as e:
        raise UsageError(f"--storage-option {e}") from None
    try:
        fs = ObjectStoreFileSystem(url, options, reporter=reporter)
    except ImportError as e:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(
            url.partition("://")[0].lower()
        )
        hint = f"pip install 'runsmon[{extra}]'" if extra else "install its fsspec package"
        raise RuntimeFailure(f"cannot read {url}: {e}; {hint}") from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"cannot read {url}: {e}") from None
    try:
        fs.check()
    except OSError as e:
        raise RuntimeFailure(str(e)) from None
    return fs


def _selection(args: argparse.Namespace) -> Any:
    from runsmon.hparams import Selection

    return Selection(
        hparams=getattr(args, "hparams", "all"),
        hparam_include=tuple(getattr(args, "hparam_include", ())),
        hparam_exclude=tuple(getattr(args, "hparam_exclude", ())),
        metric_include=tuple(getattr(args, "metric_include", ())),
        metric_exclude=("sys/*", *getattr(args, "metric_exclude", ())),
        best=tuple(getattr(args, "best", ())),
        importance=getattr(args, "importance", None)
        if getattr(args, "command", None) == "serve"
        else None,
    )


def _run_name_cb(args: argparse.Namespace) -> Callable[..., str] | None:
    from runsmon.select import flags_run_namer, parse_flag_names

    text = getattr(args, "run_name_flags", None)
    if text is None:
        return None
    names = parse_flag_names(text)
    if not names:
        raise UsageError("--run-name-flags: no flag names; give names like lr,optimizer")
    return flags_run_namer(names)


def _check_logdir_arg(args: argparse.Namespace, paths: Sequence[str] | None) -> None:
    """``runsmon serve --logdir RUNS`` with no PATH: RUNS meant as TensorBoard's --logdir.

    runsmon's --logdir is where it writes; a directory that holds files of
    its own and no runsmon marker is taken for the runs, and nothing is
    written there.
    """
    from runsmon.logdir import MARKER

    path = getattr(args, "logdir", None)
    if not path or (paths if paths is not None else args.paths):
        return
    path = os.path.expanduser(path)
    try:
        entries = os.listdir(path)
    except OSError:
        return  # missing (made) or unreadable (said when opened)
    if entries and MARKER not in entries:
        raise UsageError(
            f"--logdir is where runsmon writes its logdir, not the runs; to show the runs "
            f"in {path}, give it as PATH: runsmon serve {shlex.quote(path)}"
        )


def _check_address(args: argparse.Namespace) -> None:
    """A bad --host or a busy --port, said before anything else is done."""
    from runsmon.serve import AddressError, check_address

    try:
        check_address(args.host, args.port)
    except AddressError as e:
        raise UsageError(str(e)) from None


def _open_logdir(path: str | None) -> Logdir:
    try:
        return Logdir(path) if path else Logdir.create_temporary()
    except LogdirError as e:
        raise RuntimeFailure(str(e)) from None
    except OSError as e:
        from runsmon.report import describe_error

        where = path or "a temporary directory"
        raise RuntimeFailure(
            f"cannot use logdir {where}: {describe_error(e)}; give one you can write to"
        ) from None


# -- serve ---------------------------------------------------------------------------


def _install_signal_handlers(stop: threading.Event, startup: list[bool]) -> None:
    """SIGINT and SIGTERM set ``stop``; during startup they also break off what runs."""

    def handler(signum: int, frame: object) -> None:
        stop.set()
        if startup[0]:
            startup[0] = False
            raise _Interrupted()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def serve(
    args: argparse.Namespace,
    paths: Sequence[str] | None = None,
    on_exit: Callable[[], None] | None = None,
) -> int:
    """``runsmon serve``: sync, serve TensorBoard, follow the runs until a signal."""
    from runsmon.monitor import RunsMonitor
    from runsmon.remotefs import BackgroundListing, routed, shown_urls
    from runsmon.serve import RELOAD_INTERVAL, handover_delay, raise_open_files_limit

    stop = threading.Event()
    startup = [True]
    _install_signal_handlers(stop, startup)
    # TensorBoard keeps every event file open; it and its data server
    # inherit this process's limit.
    limits = raise_open_files_limit()
    monitor: RunsMonitor | None = None
    logdir: Logdir | None = None
    progress: Progress | None = None
    try:
        _check_logdir_arg(args, paths)
        if args.skip_hparams and getattr(args, "layout", "auto") == "compact":
            raise UsageError("--skip-hparams writes links only: it goes with --layout linked")
        seed_groups = _seed_groups(args)
        source, filters, sources = _make_source(args, paths)
        stores = args.stores
        if getattr(args, "export_scalars", None):
            return _export_scalars(args, source)
        run_name_cb = _run_name_cb(args)
        serving = not (args.once or args.no_tensorboard)
        if serving:
            _check_address(args)
        logdir = _open_logdir(getattr(args, "logdir", None))
        for s in sources:
            _say(args, f"runsmon: reading {shown_urls(s.describe(), stores)}")
        if filters.describe():
            _say(args, f"runsmon: showing runs with {filters.describe()}")
        if not args.quiet:
            progress = Progress(sys.stderr)
            _handler.progress = progress
        monitor = RunsMonitor(
            logdir,
            source,
            fs=routed(stores),
            # Object storage cannot be watched: each poll lists it instead.
            watch=not stores,
            interval=args.interval,
            full_check_interval=args.full_check,
            freeze_heap=not args.once,
            run_name_cb=run_name_cb,
            # A rewritten run with large event files keeps its old directory
            # until TensorBoard has read the new one: two reloads of the
            # TensorBoard runsmon serves, or of one of the user's own (5 s default).
            handover_delay=handover_delay(RELOAD_INTERVAL) if serving else 11.0,
            progress=progress,
            selection=_selection(args),
            layout=getattr(args, "layout", "auto"),
            images=not args.skip_images,
            hparams_summaries=not args.skip_hparams,
            seed_groups=seed_groups,
        )
        level = log.level
        log.setLevel(max(level, logging.WARNING))  # "run added" x N: the summary says it
        url = None
        try:
            if serving and getattr(args, "layout", "auto") == "auto":
                from runsmon.serve import reload_interval, start_tensorboard

                def start(event_files: int) -> str:
                    options = _check_open_files(event_files, limits, args)
                    reload = reload_interval(event_files)
                    return start_tensorboard(
                        logdir.path, args.host, args.port, reload, options=options
                    )

                stats, url = _sync_beside_tensorboard(monitor, start, stop)
            else:
                stats = monitor.run_once()
        finally:
            log.setLevel(level)
            monitor.progress = None  # later syncs log their changes instead
            if progress is not None:
                progress.finish()
                _handler.progress = None
        if monitor.layout_note and monitor.layout == "compact":
            _say(args, f"runsmon: {monitor.layout_note}")
        columns, metrics = monitor.experiment_columns()
        shown = (
            f"{stats.sessions} sessions, {len(columns)} hparams, {len(metrics)} metrics"
            if not args.skip_hparams
            else "links only (--skip-hparams)"
        )
        _say(
            args,
            f"runsmon: {stats.runs} runs, {shown} in {stats.seconds:.1f}s; logdir {logdir.path}",
        )
        _check_run_name_flags(args, monitor)
        _check_importance(args, metrics)
        if args.once:
            return 0
        tb_options = None if url else _check_open_files(monitor.event_files(), limits, args)
        monitor.on_new_columns = _say_new_columns
        if stores:
            monitor.changes.use(BackgroundListing(stores, monitor.interval, monitor.wake))
        monitor.start()
        if serving:
            from runsmon.serve import (
                PAGE_CHECK_RUNS,
                open_browser,
                page_seconds,
                reload_interval,
                slow_page_note,
                start_tensorboard,
                tensorboard_alive,
                wait_for_hparams,
            )

            if url is None:
                reload = reload_interval(monitor.event_files())
                url = start_tensorboard(
                    logdir.path, args.host, args.port, reload, options=tb_options
                )
            ready = wait_for_hparams(
                url,
                sessions=lambda: len(monitor.run_names),
                timeout=60,
                stop=lambda: stop.is_set() or not tensorboard_alive(),
            )
            if stop.is_set():
                return 0
            _check_tensorboard()
            if not ready:
                log.warning("TensorBoard has not loaded every run yet; it goes on loading")
            page = f"{url}#{getattr(args, 'tab', None) or 'hparams'}"
            print(f"runsmon: TensorBoard at {page} (Ctrl-C to stop)", flush=True)
            if args.open and not open_browser(page):
                log.warning("no browser to open here; open the URL above yourself")
            if ready and len(monitor.run_names) >= PAGE_CHECK_RUNS:
                # After the URL: the user need not wait for this page to be timed.
                note = slow_page_note(
                    page_seconds(url), len(monitor.run_names), len(monitor.experiment_columns()[1])
                )
                if note:
                    _say(args, f"runsmon: {note}")
        else:
            _say(args, f"runsmon: keeping {logdir.path} in step (Ctrl-C to stop)")
        startup[0] = False
        while not stop.wait(0.5):
            if serving:
                _check_tensorboard()
        return 0
    except _Interrupted:
        return 0
    finally:
        startup[0] = False
        if monitor is not None:
            monitor.stop()
        from runsmon.serve import stop_tensorboards

        stop_tensorboards()  # before its logdir goes
        if logdir is not None and logdir.temporary:
            logdir.destroy()
        if on_exit is not None:
            on_exit()


def _check_tensorboard() -> None:
    """TensorBoard's process ended by itself (killed, out of memory): say so and stop."""
    from runsmon.serve import tensorboard_alive

    if not tensorboard_alive():
        raise RuntimeFailure(
            "TensorBoard's process ended (see above for why; killed, or out of memory?); "
            "start runsmon serve again, or serve fewer runs"
        )


def _export_scalars(args: argparse.Namespace, source: Any) -> int:
    """``--export-scalars PATH|-``: the selected runs' scalars as CSV, then exit."""
    from runsmon.export import export_scalars
    from runsmon.report import describe_error

    runs = source()
    target = args.export_scalars
    if target == "-":
        export_scalars(runs, sys.stdout, fs=_store_fs(args))
        sys.stdout.flush()
        return 0
    try:
        parent = os.path.dirname(target)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as f:
            count = export_scalars(runs, f, fs=_store_fs(args))
    except OSError as e:
        raise RuntimeFailure(
            f"cannot write {target}: {describe_error(e)}; give another --export-scalars PATH"
        ) from None
    _say(args, f"runsmon: {count} scalars of {len(runs)} runs written to {target}")
    return 0


def _check_run_name_flags(args: argparse.Namespace, monitor: Any) -> None:
    """Say which --run-name-flags no run has (a typo names every run without it)."""
    from runsmon.select import parse_flag_names

    text = getattr(args, "run_name_flags", None)
    if not text or not monitor.run_names:
        return
    have = monitor.hparam_names()
    missing = [n for n in parse_flag_names(text) if n not in have]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, sorted(have), n=1)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    what = "flag" if len(missing) == 1 else "flags"
    log.warning("--run-name-flags: no run has the %s %s", what, ", ".join(hints))


def _check_importance(args: argparse.Namespace, metrics: list[tuple[str, str]]) -> None:
    """Say when no run has the metric ``--importance`` names (yet): a typo orders nothing."""
    from runsmon.hparams import metric_key

    name = getattr(args, "importance", None)
    keys = [metric_key(m) for m in metrics]
    if name and keys and name not in keys:
        log.warning(
            "--importance: no metric %r yet (metrics: %s); the hparams keep their order",
            name,
            ", ".join(keys),
        )


def _sync_beside_tensorboard(
    monitor: Any, start: Callable[[int], str], stop: threading.Event
) -> tuple[Any, str | None]:
    """The first sync, with TensorBoard started beside it (``start``, given the
    event files the sync will leave) as soon as ``auto`` has chosen the layout
    and counted them: TensorBoard reads the runs while they are written, not
    after. Returns the sync's stats and TensorBoard's URL (None when the sync
    was done first: no run, or nothing counted)."""
    counted = threading.Event()
    shown = monitor.progress

    def progress(done: int, total: int) -> None:
        counted.set()  # the layout is chosen and the runs listed: the sync writes now
        if shown is not None:
            shown(done, total)

    monitor.progress = progress
    result: dict[str, Any] = {}

    def sync() -> None:
        try:
            result["stats"] = monitor.run_once()
        except BaseException as e:  # raised again in the caller's thread
            result["error"] = e
        finally:
            counted.set()

    thread = threading.Thread(target=sync, name="runsmon-first-sync", daemon=True)
    thread.start()
    while not counted.wait(0.2) and not stop.is_set():
        pass
    url = None
    planned = monitor.planned_event_files
    if thread.is_alive() and planned is not None and not stop.is_set():
        url = start(planned)
    while thread.is_alive():
        thread.join(0.2)  # a signal still reaches this thread
    if "error" in result:
        raise result["error"]
    return result["stats"], url


def _check_open_files(
    event_files: int, limits: tuple[int, int] | None, args: argparse.Namespace
) -> list[str]:
    """TensorBoard's options, with its Python loader where the fast one would run
    out of open files (it keeps every event file open); said once, in one line."""
    from runsmon.serve import open_files_advice, open_files_needed

    options = list(args.tb_options)
    if limits is None:
        return options
    chosen = [o.partition("=")[2].lower() for o in options if o.startswith("--load_fast=")]
    if chosen and chosen[-1] == "false":
        return options  # the Python loader keeps no event file open
    if args.no_tensorboard:
        loader = None
    else:
        loader = "fast" if chosen and chosen[-1] == "true" else "fallback"
    advice = open_files_advice(open_files_needed(event_files), *limits, loader)
    if advice:
        log.warning("%s", advice)
        if loader == "fallback":
            options.append("--load_fast=false")
    return options


def _say_new_columns(hparam_names: list[str], metrics: list[tuple[str, str]]) -> None:
    """A new column reaches an open dashboard only with a page reload: say so."""
    from runsmon.hparams import metric_key

    names = [*hparam_names, *(metric_key(m) for m in metrics)]
    if len(names) == 1:
        text = f"new column {names[0]}: reload the page to see it"
    else:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        text = f"new columns {shown}: reload the page to see them"
    log.warning("%s", text)


# -- table ----------------------------------------------------------------------------


def table(args: argparse.Namespace) -> int:
    """``runsmon table``: the runs' hparams and metrics, printed or written."""
    from runsmon import table as runs_table

    fmt = args.format
    if fmt is None and args.output:
        ext = os.path.splitext(args.output)[1].lower()
        fmt = runs_table.EXTENSION_FORMATS.get(ext)
    fmt = fmt or "table"
    # With --sort, --limit keeps the first rows of the sorted table (the N
    # best), not the N newest runs: it applies after reading every run.
    limit = None
    if args.sort and args.limit is not None:
        limit, args.limit = args.limit, None
    if args.importance is not None and args.sort:
        raise UsageError("--sort orders runs; --importance ranks hparams: give one of them")
    groups = _seed_groups(args)
    if args.importance is not None and groups is not None:
        raise UsageError("--importance judges runs, not seed groups: leave out --group-seeds")
    source, _, _ = _make_source(args)
    data = runs_table.collect(
        source, _selection(args), _run_name_cb(args), seed_groups=groups, fs=_store_fs(args)
    )
    if args.importance is not None:
        return _importance(args, data, fmt)
    try:
        data.sort(args.sort)
    except ValueError as e:
        raise UsageError(f"--sort: {e}") from None
    data.limit(limit)
    if args.output:
        _write_output(args.output, runs_table.render(data, fmt))
        return 0
    width = shutil.get_terminal_size((100, 24)).columns if fmt == "table" else None
    sys.stdout.write(runs_table.render(data, fmt, width))
    sys.stdout.flush()
    return 0


def _write_output(path: str, text: str) -> None:
    """Write ``-o FILE``; one line if it cannot be written."""
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        from runsmon.report import describe_error

        raise RuntimeFailure(
            f"cannot write {path}: {describe_error(e)}; give another -o FILE"
        ) from None


def _importance(args: argparse.Namespace, data: Any, fmt: str) -> int:
    """``runsmon table --importance METRIC``: the hparams ranked by how strongly
    each explains METRIC over the table's runs."""
    from runsmon import importance

    metric = args.importance
    metrics = data.columns[2 + len(data.hparams) :]
    if metric not in metrics:
        raise UsageError(
            f"--importance: no metric {metric!r} (metrics: {', '.join(metrics) or 'none'})"
        )
    ranking = importance.rank([row.values for row in data.rows], data.hparams, metric)
    text = importance.render(ranking, fmt)
    if args.output:
        _write_output(args.output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if fmt != "table":  # the data stays clean; its warning and notes go to stderr
        for line in ranking.warnings() + ranking.notes():
            print(f"runsmon table: {line}", file=sys.stderr)
    return 0


# -- demo -----------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    """``runsmon demo``: make the sample sweep, then serve it."""
    from runsmon import demo as demo_runs

    stop = threading.Event()
    startup = [True]
    _install_signal_handlers(stop, startup)
    _check_address(args)  # before the runs are made
    if not args.quiet:
        print("runsmon: making the demo runs...", flush=True)
    try:
        sweep = demo_runs.make_demo(args.dir, running_seconds=args.running_seconds)
    except _Interrupted:
        return 0
    except OSError as e:
        from runsmon.report import describe_error

        raise RuntimeFailure(
            f"cannot make the demo runs: {describe_error(e)}; give a writable --dir"
        ) from None
    _say(args, f"runsmon: demo runs in {sweep.runs_dir}")
    for name, value in (
        ("logdir", None),
        ("interval", 1.0),
        ("full_check", 120.0),
        ("once", False),
        ("no_tensorboard", False),
        ("skip_images", False),
        ("skip_hparams", False),
        ("paths", [sweep.runs_dir]),
    ):
        setattr(args, name, value)
    return serve(args, [sweep.runs_dir], on_exit=sweep.close)


# -- main -----------------------------------------------------------------------------


def _join_sort(argv: list[str]) -> list[str]:
    """``--sort -COLUMN`` as ``--sort=-COLUMN``: argparse would take ``-COLUMN`` for an option.

    >>> _join_sort(["table", "--sort", "-val/loss", "runs"])
    ['table', '--sort=-val/loss', 'runs']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--sort" and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"--sort={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out


def version() -> str:
    """The installed runsmon's version (the source's, when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("runsmon")
    except metadata.PackageNotFoundError:
        from runsmon import __version__

        return __version__


def _unknown(args: argparse.Namespace, extras: list[str]) -> str:
    """One line for arguments no option takes: the command, and the close option.

    >>> args = build_parser().parse_args(["serve"])
    >>> _unknown(args, ["--intervall", "5"])
    'runsmon serve: error: unknown option --intervall; did you mean --interval?'
    """
    prog = f"runsmon {args.command}" if getattr(args, "command", None) else "runsmon"
    options = [x for x in extras if x.startswith("-") and x != "-"]
    if not options:
        return f"{prog}: error: unexpected {' '.join(extras)}; give PATHs together"
    name = options[0].split("=", 1)[0]
    command = getattr(args, "_commands", {}).get(getattr(args, "command", None))
    known = [
        o
        for a in (command._actions if command is not None else ())
        for o in a.option_strings
        if o.startswith("--")
    ]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    if name.replace("_", "-") in known:
        hint = f"did you mean {name.replace('_', '-')}?"
    elif "_" in name and "-O" in known_short(command):  # TensorBoard's flags have "_"
        hint = f"TensorBoard's options go as -O {name.lstrip('-')}=VALUE"
    elif close:
        hint = f"did you mean {close[0]}?"
    else:
        hint = f"see `{prog} --help`"
    return f"{prog}: error: unknown option {name}; {hint}"


def known_short(command: argparse.ArgumentParser | None) -> list[str]:
    """The short options of a command (``-O``, ``-v``, ...)."""
    if command is None:
        return []
    return [o for a in command._actions for o in a.option_strings if not o.startswith("--")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_sort(list(sys.argv[1:] if argv is None else argv))
    try:
        args, extras = parser.parse_known_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if extras and hasattr(args, "paths") and not any(x.startswith("-") for x in extras):
        # PATHs and RUNs on both sides of options (`serve ~/.guild -Sc 1:3`)
        args.paths = [*args.paths, *extras]
        extras = []
    if extras:
        print(_unknown(args, extras), file=sys.stderr)
        return 2
    _setup_logging(args)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "table":
            return table(args)
        if args.command == "demo":
            return demo(args)
    except UsageError as e:
        print(f"runsmon {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeFailure, TensorBoardError) as e:
        print(f"runsmon {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Interrupted):
        return 0
    except BrokenPipeError:  # `runsmon table | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # a failure of ours: still one line, details at -v
        from runsmon.report import describe_error

        print(f"runsmon {args.command}: error: {describe_error(e)}", file=sys.stderr)
        log.info("details", exc_info=True)
        return 1
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
