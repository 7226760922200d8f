"""The command line: ``runsmon serve``, ``runsmon demo``.

Usage errors exit 2, runtime errors 1, each with one line saying what and
what to do; no traceback for anything a user can cause.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from runsmon.logdir import Logdir, LogdirError
from runsmon.serve import TensorBoardError

log = logging.getLogger("runsmon")

SERVE_EXAMPLE = """\
examples:
  runsmon serve                         # Guild runs in $GUILD_HOME or ~/.guild
  runsmon serve ~/experiments --port 0  # any free port; the URL is printed
  runsmon serve --once --no-tensorboard --logdir /tmp/tb ~/.guild
"""

DEMO_EXAMPLE = """\
example:
  runsmon demo --port 6006              # then open http://127.0.0.1:6006/#hparams
"""


class UsageError(Exception):
    """A bad argument: exit 2."""


class RuntimeFailure(Exception):
    """Something went wrong at run time: exit 1."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return value


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="log every change")
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="TensorBoard host (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=6006, help="TensorBoard port (default 6006; 0: any free)"
    )
    p.add_argument(
        "-O",
        dest="tb_options",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pass an option to TensorBoard (repeatable), e.g. -O samples_per_plugin=scalars=500",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runsmon",
        description="TensorBoard's HParams dashboard for runs that never wrote hparams summaries.",
        epilog="run `runsmon COMMAND --help` for a command's options",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="keep a logdir in step with runs and serve TensorBoard on it",
        description="Keep a TensorBoard logdir in step with runs and serve TensorBoard on it.",
        epilog=SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="Guild homes or runs directories (default: $GUILD_HOME, else ~/.guild)",
    )
    serve.add_argument(
        "--logdir", help="logdir to keep (default: a temporary one, removed at exit)"
    )
    serve.add_argument(
        "--interval", type=_positive_float, default=5.0, help="seconds between polls (default 5)"
    )
    serve.add_argument("--once", action="store_true", help="sync once and exit")
    serve.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="only keep the logdir (for a TensorBoard of your own)",
    )
    _add_server_options(serve)
    _add_output_options(serve)

    demo = sub.add_parser(
        "demo",
        help="make a small sweep of sample runs and serve it",
        description="Make a small sweep of sample runs in a temporary directory and serve it.",
        epilog=DEMO_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--dir", help="where to make the runs (default: a temporary directory)")
    _add_server_options(demo)
    _add_output_options(demo)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.INFO if args.verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("runsmon: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def default_paths() -> list[str]:
    home = os.environ.get("GUILD_HOME") or os.path.expanduser("~/.guild")
    return [home]


def _make_source(paths: Sequence[str]):
    from runsmon.sources import combine, detect_source

    sources = []
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"no such file or directory: {path}")
        if not os.path.isdir(path):
            raise UsageError(f"not a directory: {path}")
        sources.append(detect_source(path))
    return combine(sources)


def _open_logdir(path: str | None) -> Logdir:
    try:
        return Logdir(path) if path else Logdir.create_temporary()
    except LogdirError as e:
        raise RuntimeFailure(str(e)) from None


def serve(args: argparse.Namespace, paths: Sequence[str] | None = None) -> int:
    from runsmon.monitor import RunsMonitor

    source = _make_source(paths if paths is not None else (args.paths or default_paths()))
    for s in getattr(source, "sources", [source]):
        if hasattr(s, "describe"):
            _say(args, f"runsmon: reading {s.describe()}")
    logdir = _open_logdir(getattr(args, "logdir", None))
    stop = threading.Event()
    monitor = RunsMonitor(logdir, source, interval=getattr(args, "interval", 5.0))
    try:
        stats = monitor.run_once()
        _say(
            args,
            f"runsmon: {stats.runs} runs, {stats.sessions} sessions written "
            f"in {stats.seconds:.1f}s; logdir {logdir.path}",
        )
        if getattr(args, "once", False):
            return 0
        if not getattr(args, "no_tensorboard", False):
            from runsmon.serve import start_tensorboard, wait_for_hparams

            options = [f"--{o}" if not o.startswith("-") else o for o in args.tb_options]
            url = start_tensorboard(logdir.path, args.host, args.port, options=options)
            wait_for_hparams(url)
            _say(args, f"runsmon: TensorBoard at {url}#hparams (Ctrl-C to stop)")
        _install_signal_handlers(stop)
        monitor.start()
        stop.wait()
        return 0
    finally:
        monitor.stop()
        if logdir.temporary:
            logdir.destroy()


def _install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def demo(args: argparse.Namespace) -> int:
    from runsmon import demo as demo_runs

    root = demo_runs.make_demo(args.dir)
    _say(args, f"runsmon: demo runs in {root}")
    args.logdir = None
    args.interval = 1.0
    return serve(args, [root])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "demo":
            return demo(args)
    except UsageError as e:
        print(f"runsmon: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeFailure, TensorBoardError) as e:
        print(f"runsmon: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # a failure of ours: still one line, details at -v
        from runsmon.report import describe_error

        print(f"runsmon: error: {describe_error(e)}", file=sys.stderr)
        log.debug("details", exc_info=True)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
