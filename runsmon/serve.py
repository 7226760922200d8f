"""TensorBoard served in-process on the logdir, as Guild does."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

log = logging.getLogger("runsmon")


class TensorBoardError(Exception):
    """TensorBoard could not be started; the message says why."""


def start_tensorboard(
    logdir: str,
    host: str = "127.0.0.1",
    port: int = 6006,
    reload_interval: float = 1.0,
    options: Sequence[str] = (),
) -> str:
    """Serve TensorBoard on ``logdir`` from a background thread; returns its URL.

    ``options`` are extra TensorBoard flags (``--name=value`` strings).
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
        str(reload_interval),
        *options,
    ]
    tb = program.TensorBoard()
    try:
        tb.configure(argv=argv)
        url = tb.launch()
    except program.TensorBoardPortInUseError:
        raise TensorBoardError(
            f"port {port} on {host} is in use; pick another with --port (0 picks a free one)"
        ) from None
    except (SystemExit, ValueError, OSError) as e:
        raise TensorBoardError(f"TensorBoard did not start: {e}") from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return url


def wait_for_hparams(url: str, timeout: float = 60.0) -> bool:
    """Wait until TensorBoard's HParams plugin answers with an experiment."""
    deadline = time.monotonic() + timeout
    body = json.dumps({"experimentName": ""}).encode()
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            url.rstrip("/") + "/data/plugin/hparams/experiment",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False
