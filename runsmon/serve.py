"""TensorBoard served in-process on the logdir, as Guild does.

TensorBoard's own server (``tensorboard.program``) runs in a daemon thread
of the runsmon process, so stopping runsmon stops it too.  ``--port 0`` is
passed through: TensorBoard then binds a port the system picks, and the URL
it returns names that port.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

log = logging.getLogger("runsmon")

#: How often the in-process TensorBoard re-reads the logdir, in seconds.
RELOAD_INTERVAL = 1.0


class TensorBoardError(Exception):
    """TensorBoard could not be started; the message says why and what to do."""


def handover_delay(reload_interval: float = RELOAD_INTERVAL) -> float:
    """How long the old directory of a rewritten run with large event files stays
    beside the new one: TensorBoard must have read the new one (two reloads).

    >>> handover_delay(1.0)
    3.0
    """
    return 2 * reload_interval + 1


def tensorboard_options(pairs: Sequence[str]) -> list[str]:
    """``-O NAME=VALUE`` pairs as TensorBoard flags.

    >>> tensorboard_options(["samples_per_plugin=scalars=500", "--load_fast=false"])
    ['--samples_per_plugin=scalars=500', '--load_fast=false']
    >>> tensorboard_options(["window_title"])
    Traceback (most recent call last):
    ...
    ValueError: -O window_title: expected NAME=VALUE, e.g. -O load_fast=false
    """
    out = []
    for pair in pairs:
        name, sep, _ = pair.lstrip("-").partition("=")
        if not sep or not name:
            raise ValueError(f"-O {pair}: expected NAME=VALUE, e.g. -O load_fast=false")
        out.append("--" + pair.lstrip("-"))
    return out


def start_tensorboard(
    logdir: str,
    host: str = "127.0.0.1",
    port: int = 6006,
    reload_interval: float = RELOAD_INTERVAL,
    options: Sequence[str] = (),
) -> str:
    """Serve TensorBoard on ``logdir`` from a background thread; returns its URL.

    ``options`` are extra TensorBoard flags (``--name=value`` strings); they
    come last, so they win.  What TensorBoard prints while starting is held
    back (its loader notice) or turned into the one-line error.
    """
    # Imported here: TensorBoard's import is slow and `--no-tensorboard` or
    # `runsmon table` never need it.
    from tensorboard import program

    argv = [
        None,
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
    tb = program.TensorBoard()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            tb.configure(argv=argv)
            url = tb.launch()
    except program.TensorBoardPortInUseError:
        raise TensorBoardError(
            f"port {port} on {host} is in use; pick another with --port (0 picks a free one)"
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


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"{}")


def hparams_sessions(url: str) -> int:
    """How many session groups (runs) the HParams plugin lists right now."""
    answer = _post(
        url,
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": [
                "STATUS_UNKNOWN",
                "STATUS_SUCCESS",
                "STATUS_FAILURE",
                "STATUS_RUNNING",
            ],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 1,
        },
    )
    return int(answer.get("totalSize", 0))


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
