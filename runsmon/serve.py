"""TensorBoard served on the logdir, in a process of its own.

TensorBoard's own server (``tensorboard.program``) runs in a child process
of runsmon's: its HParams plugin works out every row in Python for each page
it answers (about 1.5 s at 10,000 runs), and in runsmon's own process that
held the interpreter lock the sync needs. The child tells its URL (or why
it did not start) in one line, then reads its stdin to the end: when runsmon
stops, however it stops, the pipe closes and TensorBoard stops with it (its
data server does the same with TensorBoard). ``--port 0`` is passed
through: TensorBoard then binds a port the system picks, and the URL names
that port.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import http.client
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

log = logging.getLogger("runsmon")

#: How often runsmon's TensorBoard re-reads the logdir, in seconds.
RELOAD_INTERVAL = 1.0
#: Up to this many event files it re-reads twice as often: a new run shows
#: sooner, and a re-read of a few thousand files costs its data server little.
QUICK_RELOAD_FILES = 5000


def reload_interval(event_files: int) -> float:
    """Seconds between runsmon's TensorBoard's reloads of a logdir of
    ``event_files`` event files.

    >>> reload_interval(4000), reload_interval(40000)
    (0.5, 1.0)
    """
    return RELOAD_INTERVAL / 2 if event_files <= QUICK_RELOAD_FILES else RELOAD_INTERVAL


class TensorBoardError(Exception):
    """TensorBoard could not be started; the message says why and what to do."""


def handover_delay(reload_interval: float = RELOAD_INTERVAL) -> float:
    """How long the old directory of a rewritten run with large event files stays
    beside the new one: TensorBoard must have read the new one (two reloads).

    >>> handover_delay(1.0)
    3.0
    """
    return 2 * reload_interval + 1


#: TensorBoard flags runsmon sets itself: ``-O`` may not give them.
OWN_OPTIONS = {
    "logdir": "runsmon gives TensorBoard its own logdir; give the runs as PATH",
    "logdir_spec": "runsmon gives TensorBoard its own logdir; give the runs as PATH",
    "host": "use --host",
    "port": "use --port",
}


def tensorboard_options(pairs: Sequence[str]) -> list[str]:
    """``-O NAME=VALUE`` pairs as TensorBoard flags.

    >>> tensorboard_options(["samples_per_plugin=scalars=500", "--load_fast=false"])
    ['--samples_per_plugin=scalars=500', '--load_fast=false']
    >>> tensorboard_options(["window_title"])
    Traceback (most recent call last):
    ...
    ValueError: -O window_title: expected NAME=VALUE, e.g. -O load_fast=false
    >>> tensorboard_options(["logdir=/tmp/runs"])
    Traceback (most recent call last):
    ...
    ValueError: -O logdir: runsmon gives TensorBoard its own logdir; give the runs as PATH
    """
    out = []
    for pair in pairs:
        name, sep, _ = pair.lstrip("-").partition("=")
        if not sep or not name:
            raise ValueError(f"-O {pair}: expected NAME=VALUE, e.g. -O load_fast=false")
        if name in OWN_OPTIONS:
            raise ValueError(f"-O {name}: {OWN_OPTIONS[name]}")
        out.append("--" + pair.lstrip("-"))
    return out


class AddressError(ValueError):
    """``--host`` names no address of this machine."""


def check_address(host: str, port: int) -> None:
    """Fail early, in one line, where TensorBoard could not listen.

    Raises :class:`AddressError` for a host that is no address of this
    machine, :class:`TensorBoardError` for a port in use.  Port 0 (any free
    one) is not checked.  TensorBoard still binds on its own: this only
    looks first, before the first sync, and without TensorBoard's noise.

    >>> check_address("256.1.1.1", 6006)
    Traceback (most recent call last):
    ...
    runsmon.serve.AddressError: --host 256.1.1.1: not a host name or address ...
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AddressError(
            f"--host {host}: not a host name or address ({reason}); e.g. 127.0.0.1 or 0.0.0.0"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        if sys.platform != "win32":  # as TensorBoard's server does: TIME_WAIT is no use
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE and port:
                raise TensorBoardError(
                    f"port {port} on {host} is in use; "
                    "pick another with --port (0 picks a free one)"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise AddressError(
                    f"--host {host}: not an address of this machine; e.g. 127.0.0.1 or 0.0.0.0"
                ) from None
            if e.errno == errno.EACCES:
                raise TensorBoardError(
                    f"port {port} on {host} needs privileges; pick one above 1023 with --port"
                ) from None
            raise TensorBoardError(
                f"cannot listen on {host} port {port}: {e.strerror or e}; check --host and --port"
            ) from None


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise this process's soft limit of open files as far as the hard one allows.

    TensorBoard's data server keeps every event file of the logdir open; it
    and TensorBoard's process inherit the limit.  Returns (soft, hard)
    as they are now, None where the system has no such limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        wanted = 1 << 20  # macOS refuses "infinity" for the soft limit
    for target in (wanted, 10240):  # 10240: macOS's OPEN_MAX
        if soft != resource.RLIM_INFINITY and soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            continue
        soft = target
        break
    return soft, hard


def open_files_needed(event_files: int) -> int:
    """Open files TensorBoard needs for a logdir of ``event_files`` event files.

    Its data server keeps each one open; on top of them come its own files
    and sockets and room for new runs.

    >>> open_files_needed(800)
    944
    """
    return event_files + event_files // 10 + 64


def open_files_advice(
    needed: int, soft: int, hard: int, loader: str | None = "fallback"
) -> str | None:
    """One line when ``needed`` open files are more than the ``soft`` limit; else None.

    ``loader`` says what runsmon does about it: ``"fallback"``, it serves
    with TensorBoard's Python loader (it keeps no event file open, but loads
    slower); ``"fast"``, the user chose the fast loader (-O load_fast=true);
    None, runsmon serves no TensorBoard (a TensorBoard of the user's reads it).

    >>> print(open_files_advice(1165, 1024, 4096))
    these runs need about 1165 open files in TensorBoard's fast loader, more than the limit
    of 1024; serving them with its Python loader instead (slower to load); for the fast one,
    raise the limit first (ulimit -n 1165)
    >>> print(open_files_advice(30000, 20000, 20000, "fast"))
    these runs need about 30000 open files in TensorBoard (it keeps every event file open),
    more than the hard limit of 20000; raise it first (as root: ulimit -Hn 30000, or
    /etc/security/limits.conf), or show fewer runs (--since, --limit)
    >>> print(open_files_advice(16565, 1024, 1024))
    these runs need about 16565 open files in TensorBoard's fast loader, more than the hard
    limit of 1024; serving them with its Python loader instead (slower to load); for the fast
    one, raise the limit first (as root: ulimit -Hn 16565, or /etc/security/limits.conf), or
    show fewer runs (--since, --limit)
    >>> open_files_advice(900, 1024, 4096) is None
    True
    """
    import resource

    if soft == resource.RLIM_INFINITY or needed <= soft:
        return None
    if hard != resource.RLIM_INFINITY and needed > hard:
        limit = f"hard limit of {hard}"
        how = f"as root: ulimit -Hn {needed}, or /etc/security/limits.conf"
    else:
        limit = f"limit of {soft}"
        how = f"ulimit -n {needed}"
    if loader is None:
        return (
            f"a TensorBoard on this logdir needs about {needed} open files (its fast loader "
            f"keeps every event file open), more than the {limit} here; raise it ({how}) "
            "or start TensorBoard with --load_fast=false"
        )
    if loader == "fast":
        return (
            f"these runs need about {needed} open files in TensorBoard (it keeps every event "
            f"file open), more than the {limit}; raise it first ({how}), "
            "or show fewer runs (--since, --limit)"
        )
    fewer = ", or show fewer runs (--since, --limit)" if "hard" in limit else ""
    return (
        f"these runs need about {needed} open files in TensorBoard's fast loader, more than "
        f"the {limit}; serving them with its Python loader instead (slower to load); "
        f"for the fast one, raise the limit first ({how}){fewer}"
    )


#: Seconds TensorBoard's process has to say its URL.
START_TIMEOUT = 120.0

# TensorBoard's processes, stopped when runsmon exits (they would stop anyway:
# their stdin closes; this stops them before the interpreter's shutdown).
_CHILDREN: list[subprocess.Popen[bytes]] = []


def tensorboard_argv(
    logdir: str, host: str, port: int, reload_interval: float, options: Sequence[str]
) -> list[str]:
    """TensorBoard's flags: ``options`` (``--name=value`` strings) last, so they win.

    >>> tensorboard_argv("/tmp/l", "127.0.0.1", 0, 0.5, ["--samples_per_plugin=images=0"])
    ['--logdir', '/tmp/l', '--host', '127.0.0.1', '--port', '0', '--reload_interval', '0.5', \
'--samples_per_plugin=images=0']
    """
    return [
        "--logdir",
        logdir,
        "--host",
        host,
        "--port",
        str(port),
        "--reload_interval",
        f"{reload_interval:g}",
        *options,
    ]


def start_tensorboard(
    logdir: str,
    host: str = "127.0.0.1",
    port: int = 6006,
    reload_interval: float = RELOAD_INTERVAL,
    options: Sequence[str] = (),
    timeout: float = START_TIMEOUT,
) -> str:
    """Serve TensorBoard on ``logdir`` from a process of its own; returns its URL.

    Raises :class:`TensorBoardError` with the one line that says why it did
    not start (a port in use, a bad ``-O`` option...). The process is
    stopped with this one (:func:`stop_tensorboards`), whatever happens
    meanwhile; :func:`tensorboard_alive` says whether it still serves.
    """
    argv = tensorboard_argv(logdir, host, port, reload_interval, options)
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_code(), json.dumps(argv)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    if not _CHILDREN:
        atexit.register(stop_tensorboards)
    _CHILDREN.append(proc)  # from now on: a signal, an error, any exit stops it
    try:
        answer = _first_line(proc, timeout)
    except BaseException:
        _forget(proc)
        raise
    if "url" not in answer:
        _forget(proc)
        raise TensorBoardError(answer.get("error") or "TensorBoard did not start")
    return str(answer["url"])


def tensorboard_alive() -> bool:
    """Whether every TensorBoard this process started still runs."""
    return all(proc.poll() is None for proc in _CHILDREN)


def _forget(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)
    with contextlib.suppress(ValueError):
        _CHILDREN.remove(proc)


def _child_code() -> str:
    """The child's program: this very runsmon's :func:`tensorboard_child`.

    Ctrl-C ends it quietly from its first line (a terminal's Ctrl-C reaches
    runsmon and it alike). ``python -c`` puts the current directory first on
    its path: that entry goes, so no ``runsmon/`` there is imported instead;
    from a source tree (not an installed package) that tree takes its place.
    """
    code = "from runsmon.serve import tensorboard_child; tensorboard_child(sys.argv[1])"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    start = "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    if os.path.basename(here) in ("site-packages", "dist-packages"):
        return start + "del sys.path[0]; " + code
    return start + f"sys.path[0] = {here!r}; " + code


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> dict:
    """The child's one line (JSON), or what its silence means."""
    assert proc.stdout is not None
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = got[0] if got else b""
    if not line:
        if reader.is_alive():
            return {
                "error": f"TensorBoard did not start within {timeout:g} s (a slow first "
                "import of TensorBoard or TensorFlow?); --no-tensorboard keeps the logdir "
                "for a TensorBoard of your own"
            }
        try:
            code: int | str = proc.wait(5)
        except subprocess.TimeoutExpired:
            code = "nothing"
        return {"error": f"TensorBoard did not start (its process exited with {code})"}
    try:
        answer = json.loads(line)
    except ValueError:
        return {"error": f"TensorBoard did not start: {line.decode(errors='replace').strip()}"}
    return answer if isinstance(answer, dict) else {}


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate ``proc`` and wait for it; killed if it lingers past ``timeout`` s."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_tensorboards() -> None:
    """Stop every TensorBoard this process started."""
    while _CHILDREN:
        stop_process(_CHILDREN.pop())


def tensorboard_child(argv_json: str) -> None:
    """TensorBoard's process: launch it, say its URL (or why not) in one JSON
    line, then serve until stdin ends or a signal stops it."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    # The answer goes to the pipe (fd 1 as started); fd 1 itself becomes
    # stderr, so nothing printed later (TensorBoard, its data server, C
    # code) waits on a pipe no one reads any more.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        answer: dict = {"url": _launch(json.loads(argv_json))}
    except TensorBoardError as e:
        answer = {"error": str(e)}
    except Exception as e:  # a broken install, a plugin that fails: one line
        from runsmon.report import describe_error

        answer = {"error": f"TensorBoard did not start: {describe_error(e)}"}
    try:
        with os.fdopen(answer_fd, "w") as out:
            out.write(json.dumps(answer) + "\n")
    except OSError:  # runsmon is gone
        os._exit(0)
    if "url" in answer:
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(65536):
                pass
    # TensorBoard's server threads are not daemons: end here, now.
    os._exit(0)


def _launch(argv: list[str]) -> str:
    """Start TensorBoard's server in this process (a thread); returns its URL.

    What TensorBoard prints while starting is held back (its loader notice)
    or turned into the one-line error.
    """
    # Imported here: TensorBoard's import is slow.
    from tensorboard import program

    tb = program.TensorBoard()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            tb.configure(argv=[None, *argv])
            url = tb.launch()
    except program.TensorBoardPortInUseError:
        # Raised by launch, after configure: the flags as TensorBoard took them.
        raise TensorBoardError(
            f"port {tb.flags.port} on {tb.flags.host} is in use; pick another with --port "
            "(0 picks a free one)"
        ) from None
    except program.TensorBoardServerException as e:
        raise TensorBoardError(
            f"TensorBoard did not start: {e.msg}; check --host and --port"
        ) from None
    except SystemExit:
        raise TensorBoardError(
            f"TensorBoard did not start: {_last_error(captured.getvalue())}; "
            "check the -O options (see `tensorboard --helpfull`)"
        ) from None
    except (ValueError, OSError) as e:
        raise TensorBoardError(
            f"TensorBoard did not start: {e}; check --host, --port and -O options"
        ) from None
    notes = captured.getvalue().strip()
    if notes:
        log.debug("TensorBoard says: %s", notes)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return url


def _last_error(text: str) -> str:
    """The line of TensorBoard's complaint that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line.split("error:", 1)[-1].strip() or line
    return lines[-1] if lines else "unknown reason"


def port_of(url: str) -> int:
    """The port a URL names.

    >>> port_of("http://127.0.0.1:43121/")
    43121
    """
    return int(urllib.parse.urlparse(url).port or 80)


#: Every session status the HParams plugin knows (the HPARAMS tab allows all).
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _post(url: str, path: str, body: dict, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def hparams_sessions(url: str) -> int:
    """How many session groups (runs) the HParams plugin lists right now."""
    answer = _post(
        url,
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ALL_STATUSES,
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 1,
        },
    )
    return int(answer.get("totalSize", 0))


#: Runs from which ``runsmon serve`` times one page of the HPARAMS table.
PAGE_CHECK_RUNS = 2000
#: Seconds a page may take before ``runsmon serve`` says how to make it cheaper.
SLOW_PAGE_S = 1.0


def page_seconds(url: str) -> float | None:
    """Seconds TensorBoard takes to answer the HPARAMS tab's first request (every
    hparam and metric column, 100 rows); None when it did not answer."""
    try:
        exp = _post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
        cols = [{"hparam": h["name"], "includeInResult": True} for h in exp.get("hparamInfos", [])]
        cols += [{"metric": m["name"], "includeInResult": True} for m in exp.get("metricInfos", [])]
        body = {
            "experimentName": "",
            "allowedStatuses": ALL_STATUSES,
            "colParams": cols,
            "startIndex": 0,
            "sliceSize": 100,
        }
        start = time.monotonic()
        _post(url, "/data/plugin/hparams/session_groups", body, timeout=60)
        return time.monotonic() - start
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError, KeyError):
        return None


def slow_page_note(seconds: float | None, rows: int, metrics: int) -> str | None:
    """The line ``runsmon serve`` says when a page of the table is slow, else None.

    >>> slow_page_note(1.52, 10000, 8)
    'each page of the HPARAMS table takes TensorBoard 1.5 s here: it works out all 10000 \
rows x 8 metric columns for every page; --metric-include or --metric-exclude keep \
the columns you look at'
    >>> slow_page_note(0.4, 10000, 3) is None, slow_page_note(None, 10000, 8) is None
    (True, True)
    """
    if seconds is None or seconds < SLOW_PAGE_S:
        return None
    return (
        f"each page of the HPARAMS table takes TensorBoard {seconds:.1f} s here: it works out "
        f"all {rows} rows x {metrics} metric columns for every page; --metric-include or "
        "--metric-exclude keep the columns you look at"
    )


def wait_for_hparams(
    url: str,
    sessions: int | Callable[[], int] = 0,
    timeout: float = 60.0,
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait until the HParams plugin lists at least ``sessions`` runs.

    ``sessions`` may be a callable, asked again on each try (runs come and
    go while TensorBoard loads).  With 0, an answer to the experiment request
    is enough.  Returns False on timeout or when ``stop()`` says so.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop():
        wanted = sessions() if callable(sessions) else sessions
        try:
            if wanted <= 0:
                _post(url, "/data/plugin/hparams/experiment", {"experimentName": ""})
                return True
            if hparams_sessions(url) >= wanted:
                return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.25)
    return False


def open_browser(url: str) -> bool:
    """Open ``url`` in the user's browser; False when there is none to open."""
    import webbrowser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(sys.stderr):
            return bool(webbrowser.open(url, new=2))
    except Exception:  # no display, no browser: the printed URL is enough
        return False
