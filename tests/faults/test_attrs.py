"""Bad or odd Guild attributes (``.guild/attrs/*``): the run is skipped or shown, once warned."""

from __future__ import annotations

import datetime
import os

import pytest
from guild_fake import write_attr

from faults.conftest import FAULT_ID, Faults, permissions_enforced


def _flags_path(faults: Faults) -> str:
    return os.path.join(faults.fault_dir, ".guild", "attrs", "flags")


def _write_flags(faults: Faults, data: bytes) -> None:
    with open(_flags_path(faults), "wb") as f:
        f.write(data)


# Flags files Guild could never have written whole: the run is shown without
# flags and one line says which attribute and why.
BROKEN_FLAGS = {
    "invalid-yaml": (b"lr: [0.1\nopt: adam\n", "flags: invalid YAML"),
    "binary-garbage": (bytes(range(256)) * 4, "flags: not UTF-8 text"),
    "control-characters": (b"lr: 0.1\x00\x01\x02\n", "flags: not text"),
    "empty-file": (b"", "flags: empty file"),
    "not-a-mapping-list": (b"- 1\n- 2\n", "flags: not a mapping (list)"),
    "not-a-mapping-string": (b"'just text'\n", "flags: not a mapping (str)"),
}


@pytest.mark.parametrize("case", list(BROKEN_FLAGS))
def test_broken_flags_file(faults: Faults, case: str) -> None:
    data, cause = BROKEN_FLAGS[case]
    faults.add()
    _write_flags(faults, data)
    faults.sync()
    faults.check(warn=cause, shown=True, hparams={})


def test_flags_is_a_directory(faults: Faults) -> None:
    faults.add()
    os.remove(_flags_path(faults))
    os.mkdir(_flags_path(faults))
    faults.sync()
    faults.check(warn="flags: not a regular file", shown=True, hparams={})


def test_flags_unreadable(faults: Faults) -> None:
    faults.add()
    os.chmod(_flags_path(faults), 0)
    faults.snapshot()
    with permissions_enforced():
        faults.sync()
    faults.check(warn="flags: permission denied", shown=True, hparams={})


def test_attrs_is_a_file(faults: Faults) -> None:
    run_dir = faults.add()
    attrs = run_dir / ".guild" / "attrs"
    for p in attrs.iterdir():
        p.unlink()
    attrs.rmdir()
    attrs.write_text("lr: 0.1\n")
    faults.sync()
    faults.check(warn=".guild/attrs: not a directory", shown=True, hparams={})


@pytest.mark.parametrize(
    "attr,value,cause",
    [
        ("started", "yesterday", "started: not a timestamp"),
        ("exit_status", "[1, 2]", "exit_status: not an integer"),
        ("user_flags", "7", "user_flags: not a mapping"),
    ],
)
def test_other_attribute_of_the_wrong_type(faults: Faults, attr: str, value: str, cause: str):
    faults.add()
    with open(os.path.join(faults.fault_dir, ".guild", "attrs", attr), "w") as f:
        f.write(value + "\n")
    faults.sync()
    faults.check(warn=cause, shown=True, hparams={"lr": 0.1, "opt": "adam"})


def test_opref_garbage(faults: Faults) -> None:
    faults.add()
    (faults.fault_dir / ".guild" / "opref").write_bytes(b"'unterminated quote\n")
    faults.sync()
    faults.check(warn="opref: invalid opref", shown=True, hparams={"lr": 0.1, "opt": "adam"})


# Flags that are odd but valid: shown as they are, no warning.


def test_huge_flags_file(faults: Faults) -> None:
    flags = {f"flag_{i:05d}": i for i in range(10_000)}
    faults.add(flags=flags)
    faults.sync(polls=2)
    faults.check(warn=None, shown=True, hparams=flags)


def test_deeply_nested_flags(faults: Faults) -> None:
    flags: dict = {"leaf": 1.5}
    for i in range(50):
        flags = {f"l{i}": flags}
    faults.add(flags=flags)
    faults.sync()
    key = ".".join(f"l{i}" for i in reversed(range(50))) + ".leaf"
    faults.check(warn=None, shown=True, hparams={key: 1.5})


def test_odd_keys(faults: Faults) -> None:
    flags = {
        "a/b": 1,
        "with space": 2,
        "dot.key": 3,
        "ünïcødé 日本": 4,
        "new\nline": 5,
        "": 6,
        "tab\tkey": 7,
    }
    faults.add(flags=flags)
    faults.sync()
    faults.check(warn=None, shown=True, hparams=flags)


def test_odd_values(faults: Faults) -> None:
    flags = {
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": float("-inf"),
        "huge": 2**70 + 1,
        "nhuge": -(2**65),
        "date": datetime.date(2024, 5, 1),
        "when": datetime.datetime(2024, 5, 1, 13, 30, 0),
        "none": None,
        "listmaps": [{"a": 1}, {"b": [2, 3]}],
        "emptymap": {},
        "emptylist": [],
        "yes": True,
    }
    faults.add(flags=flags)
    faults.sync()
    faults.check(
        warn=None,
        shown=True,
        hparams={
            "nan": "nan",
            "inf": "inf",
            "ninf": "-inf",
            "huge": str(2**70 + 1),
            "nhuge": str(-(2**65)),
            "date": "2024-05-01",
            "when": "2024-05-01T13:30:00",
            "listmaps": "[{'a': 1}, {'b': [2, 3]}]",
            "emptymap": "{}",
            "emptylist": "[]",
            "yes": True,
        },
    )


def test_very_long_string_value(faults: Faults) -> None:
    long = "x" * (1 << 20)
    faults.add(flags={"lr": 0.1, "blob": long})
    faults.sync(polls=2)
    faults.check(warn=None, shown=True, hparams={"lr": 0.1, "blob": long})


def test_a_fault_reported_once_comes_back_after_it_cleared(faults: Faults) -> None:
    faults.add()
    write_attr(faults.fault_dir, "flags", {"lr": 0.3})
    monitor = faults.sync()
    _write_flags(faults, b"lr: [\n")
    faults.snapshot()
    faults.sync(monitor)
    faults.check(warn="invalid YAML", shown=True, subject=FAULT_ID[:8])
