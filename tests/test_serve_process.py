"""TensorBoard's process stops with `runsmon serve`, however runsmon stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUILD_RUNS = ROOT / "tests" / "data" / "guild-0.9" / "runs"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), ()):
            out.append(kid)
            todo.append(kid)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def serve_until_url(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", str(GUILD_RUNS), "--port", "0", "-q"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"TensorBoard at (http://\S+)/#", line)
    assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, found.group(1)


@pytest.mark.tb
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_tensorboard_stops_with_runsmon(tmp_path, sig):
    proc, _ = serve_until_url(tmp_path)
    below = descendants(proc.pid)
    names = [Path(f"/proc/{p}/cmdline").read_bytes() for p in below if alive(p)]
    assert any(b"tensorboard_child" in n for n in names), names
    assert any(b"tensorboard_data_server" in n for n in names), names
    proc.send_signal(sig)
    proc.wait(20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in below):
        time.sleep(0.1)
    assert not [p for p in below if alive(p)], "TensorBoard outlived runsmon"
    if sig == signal.SIGTERM:
        assert proc.returncode == 0
        assert "Traceback" not in proc.stderr.read()
