"""The soak test's writer process: runs that start, grow, end and go away.

Usage: ``python writer.py GUILD_RUNS DIR_RUNS SECONDS SEED STATE_JSON``.

Guild runs are laid out as Guild 0.9 does (a LOCK with this process's pid
while running, ``exit_status`` when ended); plain runs are directories with
a ``flags.yaml`` and an event file, grown on every step while they run (the
daemon calls them ended once they rest). Before exiting, every run still
running is ended, and the final state of every run left is written to
STATE_JSON: ``{"guild"|"dirs": {run id: {"flags", "status", "loss"}}}``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from typing import Any

from guild_fake import make_guild_run, write_attr, write_event_file

STEP = 0.1
MAX_RUNNING = 6
MAX_KEPT = 40


class Writer:
    def __init__(self, guild_root: str, dirs_root: str, seed: int) -> None:
        self.guild_root = guild_root
        self.dirs_root = dirs_root
        self.rng = random.Random(seed)
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, id) -> state
        self.count = 0
        self.t0 = 1_700_000_000.0

    def running(self, kind: str) -> list[tuple[str, str]]:
        return [k for k, s in self.runs.items() if k[0] == kind and s["status"] == "running"]

    def ended(self) -> list[tuple[str, str]]:
        return [k for k, s in self.runs.items() if s["status"] != "running"]

    def path(self, key: tuple[str, str]) -> str:
        root = self.guild_root if key[0] == "guild" else self.dirs_root
        return os.path.join(root, key[1])

    def event_dir(self, key: tuple[str, str]) -> str:
        return os.path.join(self.path(key), ".guild") if key[0] == "guild" else self.path(key)

    def create(self, kind: str) -> None:
        self.count += 1
        n = self.count
        flags = {"lr": round(self.rng.uniform(0.001, 1), 4), "layers": n % 5, "opt": "adam"}
        loss = round(self.rng.random(), 4)
        if kind == "guild":
            run_id = f"{n:08x}" + os.urandom(12).hex()
            make_guild_run(
                self.guild_root,
                run_id,
                flags,
                status="running",
                scalars={"loss": [(0, loss)]},
                started=self.t0 + n,
            )
        else:
            run_id = f"exp_{n:04d}"
            path = os.path.join(self.dirs_root, run_id)
            os.makedirs(path)
            with open(os.path.join(path, "flags.yaml"), "w") as f:
                f.write("".join(f"{k}: {v}\n" for k, v in flags.items()))
            write_event_file(path, {"loss": [(0, loss)]}, name="events.out.tfevents.1.soak")
        self.runs[(kind, run_id)] = {"flags": flags, "status": "running", "loss": loss, "step": 0}

    def grow(self, key: tuple[str, str]) -> None:
        state = self.runs[key]
        state["step"] += 1
        state["loss"] = round(self.rng.random(), 4)
        directory = self.event_dir(key)
        name = next(n for n in sorted(os.listdir(directory)) if "tfevents" in n)
        write_event_file(directory, {"loss": [(state["step"], state["loss"])]}, name, mode="ab")

    def end(self, key: tuple[str, str]) -> None:
        state = self.runs[key]
        if key[0] == "guild":
            ok = self.rng.random() < 0.7
            path = self.path(key)
            write_attr(path, "exit_status", 0 if ok else 1)
            write_attr(path, "stopped", int((self.t0 + 1000) * 1e6))
            os.remove(os.path.join(path, ".guild", "LOCK"))
            state["status"] = "completed" if ok else "error"
        else:
            state["status"] = "completed"  # it rests from now on

    def delete(self, key: tuple[str, str]) -> None:
        shutil.rmtree(self.path(key))
        del self.runs[key]

    def step(self) -> None:
        rng = self.rng
        for kind in ("guild", "dirs"):
            if len(self.running(kind)) < MAX_RUNNING and rng.random() < 0.4:
                self.create(kind)
        for key in self.running("dirs"):
            self.grow(key)  # every step: a plain run that rests has ended
        guild = self.running("guild")
        if guild and rng.random() < 0.7:
            self.grow(rng.choice(guild))
        running = self.running("guild") + self.running("dirs")
        if running and rng.random() < 0.25:
            self.end(rng.choice(running))
        ended = self.ended()
        if ended and (rng.random() < 0.1 or len(ended) > MAX_KEPT):
            self.delete(rng.choice(ended))

    def finish(self, out: str) -> None:
        for key in self.running("guild") + self.running("dirs"):
            self.end(key)
        state: dict[str, dict[str, Any]] = {"guild": {}, "dirs": {}}
        for (kind, run_id), s in self.runs.items():
            state[kind][run_id] = {"flags": s["flags"], "status": s["status"], "loss": s["loss"]}
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, out)


def main(argv: list[str]) -> int:
    guild_root, dirs_root, seconds, seed, out = argv
    writer = Writer(guild_root, dirs_root, int(seed))
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        writer.step()
        time.sleep(STEP)
    writer.finish(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
