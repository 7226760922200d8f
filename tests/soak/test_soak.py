"""Soak: a writer process churns runs while ``runsmon serve`` and a TensorBoard follow.

Duration: ``--soak-seconds`` (10 in ``make test``, ``SOAK_S`` in ``make soak``).
Afterwards every run left must show its final state in TensorBoard, and the
daemon's open file descriptors and RSS, sampled all along, must stay flat.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from guild_fake import logdir_rows, make_guild_run
from tb import TensorBoardProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
IDLE_AFTER = 3.0
STATUS = {"completed": "STATUS_SUCCESS", "error": "STATUS_FAILURE"}
#: Growth allowed over the run, after the first quarter (warm-up).
FD_SLACK = 16
RSS_SLACK_KB = 40 * 1024


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _sample(pid: int) -> tuple[int, int] | None:
    """(open fds, RSS in kB) of a process, None once it is gone."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return fds, rss


class Sampler(threading.Thread):
    """Samples a process's fds and RSS every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.done.is_set():
            s = _sample(self.pid)
            if s is not None:
                self.samples.append((time.monotonic() - self.t0, *s))
            self.done.wait(self.every)


def _expected(state: dict[str, Any], names: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in ("guild", "dirs"):
        for run_id, s in state[kind].items():
            out[names.get(run_id, f"<missing {run_id}>")] = {
                "hparams": s["flags"],
                "loss": s["loss"],
                "status": STATUS[s["status"]],
            }
    return out


def _matches(table: dict[str, Any], expected: dict[str, dict[str, Any]]) -> bool:
    if set(table) != set(expected):
        return False
    for name, want in expected.items():
        row = table[name]
        if row["status"] != want["status"]:
            return False
        if row["metrics"].get(("loss", "")) != pytest.approx(want["loss"], rel=1e-6):
            return False
        if row["hparams"] != pytest.approx(want["hparams"]):
            return False
    return True


@pytest.mark.soak
@pytest.mark.tb
def test_soak(tmp_path: Path, request: pytest.FixtureRequest, capsys) -> None:
    seconds = int(request.config.getoption("--soak-seconds"))
    guild_root, dirs_root = tmp_path / "guild", tmp_path / "dirs"
    guild_root.mkdir()
    dirs_root.mkdir()
    logdir = tmp_path / "logdir"
    # Seeds, so that each PATH is detected as what it is; they stay all along.
    make_guild_run(guild_root, "5eed" * 8, {"lr": 0.5, "layers": 0, "opt": "sgd"})
    (dirs_root / "seed").mkdir()
    (dirs_root / "seed" / "flags.yaml").write_text("lr: 0.5\nlayers: 0\nopt: sgd\n")
    from guild_fake import write_event_file

    write_event_file(dirs_root / "seed", {"loss": [(0, 0.5)]}, name="events.out.tfevents.1.seed")
    old = time.time() - 3600
    for dirpath, _dirs, files in os.walk(dirs_root / "seed"):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
    state_path = tmp_path / "final.json"

    daemon = subprocess.Popen(
        [sys.executable, "-m", "runsmon", "serve", "--no-tensorboard", "-q",
         "--interval", "0.5", "--idle-after", str(IDLE_AFTER),
         "--logdir", str(logdir), str(guild_root), str(dirs_root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        start_new_session=True,
    )  # fmt: skip
    sampler = Sampler(daemon.pid)
    sampler.start()
    writer = None
    try:
        with TensorBoardProcess(logdir, load_fast=False, start_timeout=60) as tb:
            writer = subprocess.Popen(
                [sys.executable, str(HERE / "writer.py"), str(guild_root), str(dirs_root),
                 str(seconds), "7", str(state_path)],
                env=_env(),
            )  # fmt: skip
            assert writer.wait(seconds + 60) == 0
            state = json.loads(state_path.read_text())
            state["guild"]["5eed" * 8] = {
                "flags": {"lr": 0.5, "layers": 0, "opt": "sgd"},
                "status": "completed",
                "loss": 0.5,
            }
            state["dirs"]["seed"] = {
                "flags": {"lr": 0.5, "layers": 0, "opt": "sgd"},
                "status": "completed",
                "loss": 0.5,
            }
            wanted = {run_id for kind in state.values() for run_id in kind}
            # Idle-after, a few polls and TensorBoard reloads; far less than a
            # full check (60 s): statuses must move without one.
            deadline = time.monotonic() + 30
            table: dict[str, Any] = {}
            expected: dict[str, Any] = {}
            while time.monotonic() < deadline:
                assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
                try:
                    names = logdir_rows(logdir)
                    if set(names) == wanted:
                        expected = _expected(state, names)
                        table = tb.table()
                        if _matches(table, expected):
                            break
                except (OSError, ValueError):
                    pass
                time.sleep(0.5)
            else:
                raise AssertionError(_diff(table, expected, wanted, logdir_rows(logdir)))
    finally:
        sampler.done.set()
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            _, err = daemon.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, err = daemon.communicate()
        sampler.join()
    samples = sampler.samples
    with capsys.disabled():
        print(
            f"\nsoak {seconds}s: {len(state['guild'])} guild + {len(state['dirs'])} dir runs left"
        )
        print("   t(s)  fds  rss(MB)")
        step = max(1, len(samples) // 20)
        for t, fds, rss in samples[::step] + samples[-1:]:
            print(f"  {t:5.1f} {fds:4d} {rss / 1024:8.1f}")
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert warnings == [], warnings
    warm = samples[len(samples) // 4 :]
    assert len(warm) >= 4, samples
    base_fds, base_rss = warm[0][1], warm[0][2]
    assert max(s[1] for s in warm) <= base_fds + FD_SLACK, samples
    assert max(s[2] for s in warm) <= base_rss + RSS_SLACK_KB, samples


def _diff(table: dict, expected: dict, wanted: set, names: dict) -> str:
    lines = [f"runs wanted {len(wanted)}, in logdir {len(names)}, in TensorBoard {len(table)}"]
    lines += [f"missing from logdir: {sorted(wanted - set(names))[:5]}"]
    lines += [f"extra in logdir: {sorted(set(names) - wanted)[:5]}"]
    for name, want in list(expected.items()):
        row = table.get(name)
        got = None if row is None else (row["status"], row["metrics"].get(("loss", "")))
        if got != (want["status"], want["loss"]):
            lines.append(f"{name}: want {want['status']} {want['loss']}, got {got}")
    return "\n".join(lines[:30])
