"""The command line: ``runsmon serve``, ``runsmon table``, ``runsmon demo``.

Usage errors exit 2, runtime errors 1, each with one line saying what and
what to do; no traceback for anything a user can cause.
"""

from __future__ import annotations

import argparse
import logging
import os
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
"""

DEMO_EXAMPLE = """\
example:
  runsmon demo --port 6006              # then open http://127.0.0.1:6006/#hparams
"""


class UsageError(Exception):
    """A bad argument: exit 2."""


class RuntimeFailure(Exception):
    """Something went wrong at run time: exit 1."""


class _Interrupted(Exception):
    """SIGINT or SIGTERM during startup."""


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
        "--port", type=_port, default=6006, help="TensorBoard port (default 6006; 0: any free one)"
    )
    g.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    g.add_argument(
        "-O",
        dest="tb_options",
        type=_tb_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pass an option to TensorBoard (repeatable), e.g. -O samples_per_plugin=scalars=500",
    )


def _add_source_options(p: argparse.ArgumentParser) -> None:
    from runsmon.sources import KINDS

    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="run trees: Guild homes or runs dirs, MLflow stores, wandb dirs, any directory "
        "of runs (default: $GUILD_HOME, else ~/.guild)",
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


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    from runsmon.hparams import HPARAM_MODES

    g = p.add_argument_group("columns")
    g.add_argument(
        "--hparams",
        choices=HPARAM_MODES,
        default="all",
        help="all flags (default), those that differ between runs, or those a user set",
    )
    for kind, what in (("hparam", "hparam names"), ("metric", "metric tags or GROUP/TAG")):
        g.add_argument(
            f"--{kind}-include",
            action="append",
            default=[],
            metavar="GLOB",
            help=f"only {what} matching GLOB (repeatable)",
        )
        g.add_argument(
            f"--{kind}-exclude",
            action="append",
            default=[],
            metavar="GLOB",
            help=f"leave out {what} matching GLOB (repeatable)"
            + ("; sys/* always" if kind == "metric" else ""),
        )


def _add_filter_options(
    p: argparse.ArgumentParser, limit_help: str = "only the N newest runs"
) -> None:
    g = p.add_argument_group("runs")
    g.add_argument(
        "--operation", action="append", default=[], metavar="GLOB", help="only these operations"
    )
    g.add_argument("--label", action="append", default=[], metavar="GLOB", help="only these labels")
    g.add_argument(
        "--status",
        type=_statuses,
        action="append",
        default=[],
        metavar="LIST",
        help="only runs with these statuses, e.g. running,completed "
        "(running, completed, error, terminated, pending, staged, unknown)",
    )
    g.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only runs started since WHEN: a duration back from now (30m, 2h, 3d, 1w) "
        "or a date (2024-05-01, '2024-05-01 13:30')",
    )
    g.add_argument("--limit", type=_positive_int, metavar="N", help=limit_help)
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

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
        "--logdir", help="logdir to keep (default: a temporary one, removed at exit)"
    )
    serve.add_argument(
        "--interval",
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
        "--no-tensorboard",
        action="store_true",
        help="only keep the logdir (for a TensorBoard of your own)",
    )
    _add_selection_options(serve)
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
    _add_source_options(table)
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
    _add_selection_options(table)
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
        self.started = clock()
        self._last = self.started if not self.tty else 0.0
        self._drawn = False
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
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
        elapsed = max(now - self.started, 1e-6)
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
    _handler.setStream(sys.stderr)
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


def _make_source(args: argparse.Namespace, paths: Sequence[str] | None = None) -> Any:
    """The source for the PATHs, wrapped in the run filters; says what it reads."""
    from runsmon.report import Reporter
    from runsmon.select import Filters, filtered
    from runsmon.sources import combine, detect_source
    from runsmon.sources.mlflow_sqlite import database_path, db_uri_path

    reporter = Reporter()
    sources = []
    given = paths if paths is not None else args.paths
    for path in given or default_paths():
        path = os.path.expanduser(db_uri_path(path) or path)  # sqlite:/// is an MLflow store
        if not os.path.exists(path):
            hint = "give a directory of runs" if given else "give a PATH of runs"
            raise UsageError(f"no such directory: {path}; {hint}")
        if not os.path.isdir(path) and database_path(path) is None:
            raise UsageError(f"not a directory: {path}; give a directory of runs")
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            raise RuntimeFailure(f"cannot read {path}: permission denied; check its permissions")
        try:
            source = detect_source(
                path,
                kind=getattr(args, "source", None),
                flags_file=getattr(args, "flags_file", None),
                idle_after=getattr(args, "idle_after", None),
                reporter=reporter,
            )
        except (OSError, ValueError) as e:
            from runsmon.report import describe_error

            raise RuntimeFailure(f"cannot read {path}: {describe_error(e)}") from None
        sources.append(source)
    source = combine(sources)
    statuses = frozenset().union(*getattr(args, "status", []) or [frozenset()])
    filters = Filters(
        operations=tuple(getattr(args, "operation", []) or ()),
        labels=tuple(getattr(args, "label", []) or ()),
        statuses=statuses,
        since=getattr(args, "since", None),
        limit=getattr(args, "limit", None),
    )
    return filtered(source, filters), filters, sources


def _selection(args: argparse.Namespace) -> Any:
    from runsmon.hparams import Selection

    return Selection(
        hparams=getattr(args, "hparams", "all"),
        hparam_include=tuple(getattr(args, "hparam_include", ())),
        hparam_exclude=tuple(getattr(args, "hparam_exclude", ())),
        metric_include=tuple(getattr(args, "metric_include", ())),
        metric_exclude=("sys/*", *getattr(args, "metric_exclude", ())),
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
    from runsmon.serve import RELOAD_INTERVAL, handover_delay

    stop = threading.Event()
    startup = [True]
    _install_signal_handlers(stop, startup)
    monitor: RunsMonitor | None = None
    logdir: Logdir | None = None
    progress: Progress | None = None
    try:
        source, filters, sources = _make_source(args, paths)
        for s in sources:
            _say(args, f"runsmon: reading {s.describe()}")
        if filters.active:
            _say(args, f"runsmon: showing runs with {filters.describe()}")
        run_name_cb = _run_name_cb(args)
        logdir = _open_logdir(getattr(args, "logdir", None))
        if not args.quiet:
            progress = Progress(sys.stderr)
            _handler.progress = progress
        serving = not (args.once or args.no_tensorboard)
        monitor = RunsMonitor(
            logdir,
            source,
            interval=args.interval,
            full_check_interval=args.full_check,
            freeze_heap=not args.once,
            run_name_cb=run_name_cb,
            # A rewritten run with large event files keeps its old directory
            # until TensorBoard has read the new one: two reloads of the
            # in-process TensorBoard, or of one of the user's own (5 s default).
            handover_delay=handover_delay(RELOAD_INTERVAL) if serving else 11.0,
            progress=progress,
            selection=_selection(args),
        )
        level = log.level
        log.setLevel(max(level, logging.WARNING))  # "run added" x N: the summary says it
        try:
            stats = monitor.run_once()
        finally:
            log.setLevel(level)
            monitor.progress = None  # later syncs log their changes instead
            if progress is not None:
                progress.finish()
                _handler.progress = None
        columns, metrics = monitor.experiment_columns()
        _say(
            args,
            f"runsmon: {stats.runs} runs, {stats.sessions} sessions, {len(columns)} hparams, "
            f"{len(metrics)} metrics in {stats.seconds:.1f}s; logdir {logdir.path}",
        )
        if args.once:
            return 0
        monitor.start()
        if serving:
            from runsmon.serve import open_browser, start_tensorboard, wait_for_hparams

            url = start_tensorboard(
                logdir.path, args.host, args.port, RELOAD_INTERVAL, options=args.tb_options
            )
            ready = wait_for_hparams(
                url, sessions=lambda: len(monitor.run_names), timeout=60, stop=stop.is_set
            )
            if stop.is_set():
                return 0
            if not ready:
                log.warning("TensorBoard has not loaded every run yet; it goes on loading")
            print(f"runsmon: TensorBoard at {url}#hparams (Ctrl-C to stop)", flush=True)
            if args.open and not open_browser(f"{url}#hparams"):
                log.warning("no browser to open here; open the URL above yourself")
        else:
            _say(args, f"runsmon: keeping {logdir.path} in step (Ctrl-C to stop)")
        startup[0] = False
        while not stop.wait(0.5):
            pass
        return 0
    except _Interrupted:
        return 0
    finally:
        startup[0] = False
        if monitor is not None:
            monitor.stop()
        if logdir is not None and logdir.temporary:
            logdir.destroy()
        if on_exit is not None:
            on_exit()


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
    source, _, _ = _make_source(args)
    data = runs_table.collect(source, _selection(args), _run_name_cb(args))
    try:
        data.sort(args.sort)
    except ValueError as e:
        raise UsageError(f"--sort: {e}") from None
    data.limit(limit)
    if args.output:
        text = runs_table.render(data, fmt)
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as e:
            from runsmon.report import describe_error

            raise RuntimeFailure(
                f"cannot write {args.output}: {describe_error(e)}; give another -o FILE"
            ) from None
        return 0
    width = shutil.get_terminal_size((100, 24)).columns if fmt == "table" else None
    sys.stdout.write(runs_table.render(data, fmt, width))
    sys.stdout.flush()
    return 0


# -- demo -----------------------------------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    """``runsmon demo``: make the sample sweep, then serve it."""
    from runsmon import demo as demo_runs

    stop = threading.Event()
    startup = [True]
    _install_signal_handlers(stop, startup)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_sort(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
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
