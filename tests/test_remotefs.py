"""Runs in object storage: moto's S3 server as a real HTTP endpoint on 127.0.0.1.

Runs are written in the real formats (Guild's layout by runsmon.testing, event
files framed by TensorBoard's own RecordWriter), uploaded, then grown and
rewritten as training jobs on other machines would (an object overwritten
with more bytes, or with other bytes). Requests are counted at the S3 client.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import s3fs  # noqa: E402
from guild_fake import end_status_of, session_of  # noqa: E402
from tb import free_port, poll  # noqa: E402

from runsmon.monitor import RunsMonitor  # noqa: E402
from runsmon.remotefs import (  # noqa: E402
    BackgroundListing,
    ListingFeed,
    ObjectStoreFileSystem,
    describe_store_error,
    is_store_url,
    object_of,
    routed,
)
from runsmon.sources import detect_source  # noqa: E402
from runsmon.testing import (  # noqa: E402
    MotoServer,
    count_requests,
    make_guild_run,
    read_events,
    write_event_file,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto S3 server for the session; its endpoint and credentials in the environment."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A new bucket of its own for each test."""
    name = f"t{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


def _client() -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(skip_instance_cache=True)


def _upload(local: str, key: str) -> None:
    _client().put(local, key, recursive=True)


def _scalars(step: int, loss: float) -> dict[str, list[tuple[int, float]]]:
    return {"loss": [(step, loss)]}


def _guild_home(tmp_path, runs: int = 2) -> tuple[str, list[str]]:
    home = tmp_path / "home"
    dirs = []
    for i in range(runs):
        run_dir = make_guild_run(home / "runs", f"run{i}", {"lr": 0.1 * (i + 1), "opt": "adam"})
        write_event_file(os.path.join(run_dir, "train"), _scalars(0, 1.0 + i), name="ev.tfevents")
        dirs.append(run_dir)
    return str(home), dirs


def _monitor(logdir, url: str) -> tuple[RunsMonitor, ObjectStoreFileSystem]:
    fs = ObjectStoreFileSystem(url)
    source = detect_source(fs.root, fs=fs)
    monitor = RunsMonitor(str(logdir), source, fs=routed([fs]), watch=False, interval=0.2)
    monitor.changes.use(ListingFeed([fs]))
    return monitor, fs


def test_store_urls():
    assert is_store_url("s3://bucket/prefix") and is_store_url("gs://b/p")
    assert not is_store_url("http://127.0.0.1:5000") and not is_store_url("runs/s3")


def test_listing_answers_stat_scandir_and_reads(bucket, tmp_path):
    home, dirs = _guild_home(tmp_path)
    _upload(home, f"{bucket}/home")
    fs = ObjectStoreFileSystem(f"s3://{bucket}/home")
    counts = count_requests(fs.store)
    assert fs.refresh()  # all new
    assert counts == {"ListObjectsV2": 1}  # one page
    counts.clear()
    run = f"{fs.root}/runs/run0"
    assert sorted(e.name for e in fs.scandir(f"{fs.root}/runs")) == ["run0", "run1"]
    entries = {e.name: e for e in fs.scandir(run)}
    assert entries[".guild"].is_dir and entries["train"].is_dir
    local = os.path.join(dirs[0], "train", "ev.tfevents")
    st = fs.stat(f"{run}/train/ev.tfevents")
    assert st is not None and st.is_file and st.size == os.path.getsize(local)
    assert fs.stat(run).is_dir and fs.stat(f"{run}/nothing") is None
    with open(local, "rb") as f:
        data = f.read()
    assert fs.read_bytes(f"{run}/train/ev.tfevents", 10, 20) == data[10:30]
    assert fs.read_bytes(f"{run}/train/ev.tfevents", len(data)) == b""  # nothing past the size
    assert counts == {"GetObject": 1}  # stat and scandir from the listing
    # A first read fetches the objects like it (every run's flags), many at a time.
    flags = [fs.read_text(f"{fs.root}/runs/{r}/.guild/attrs/flags") for r in ("run0", "run1")]
    assert "lr: 0.1" in flags[0] and "lr: 0.2" in flags[1]
    assert counts == {"GetObject": 3}
    counts.clear()

    # The event file grows past what is fetched with a listing: a ranged GET
    # of the new bytes (and a few before them), bounded by the listed size.
    big = len(data) + 100_000
    _client().pipe_file(f"{bucket}/home/runs/run0/train/ev.tfevents", data + b"x" * 100_000)
    assert fs.refresh() == {f"{run}/train/ev.tfevents"}
    assert fs.read_bytes(f"{run}/train/ev.tfevents", len(data), 10) == b"x" * 10
    assert fs.read_bytes(f"{run}/train/ev.tfevents", big - 5) == b"x" * 5
    assert counts == {"ListObjectsV2": 1, "GetObject": 2}
    assert fs.local_path(run) is None
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(f"{run}/gone")


def test_unchanged_poll_is_the_listing_only(bucket, tmp_path):
    home, _ = _guild_home(tmp_path, runs=3)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    counts = count_requests(fs.store)
    first = monitor.run_once()
    assert first.runs == 3
    counts.clear()
    for _ in range(3):
        monitor.sync_changes(sweep=True)
    # One LIST page per poll (3 runs are under 1,000 keys): no GET, no HEAD.
    assert counts == {"ListObjectsV2": 3}


def test_listing_pages_give_every_object_as_find_does(bucket):
    """More than a page of keys, a folder marker and a neighbour prefix: the
    listing holds what s3fs's find holds, one request a page, times in UTC."""
    client = _client()
    client.pipe({f"{bucket}/runs/r{i // 10}/f{i}": b"x" * (i % 7) for i in range(1005)})
    client.pipe({f"{bucket}/runs/marker/": b"", f"{bucket}/runsmore/f": b"y"})
    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    counts = count_requests(fs.store)
    fs.refresh()
    assert counts == {"ListObjectsV2": 2}
    found = client.find(f"{bucket}/runs", detail=True)
    expected = {
        f"s3:/{name}": object_of(info) for name, info in found.items() if not name.endswith("/")
    }
    assert fs._view.objects == expected and len(expected) == 1005
    pages = list(fs._pages(f"{bucket}/runs"))
    assert [len(p) for p in pages] == [1000, 6]  # the marker among them
    (info,) = (c for page in pages for _, c in page if c["Key"] == "runs/r0/f3")
    assert info["LastModified"].utcoffset() == datetime.timedelta(0)


def test_alike_bytes_are_fetched_once(bucket, tmp_path):
    """Objects with one ETag (S3's MD5 of the bytes) and size are one GET, read
    from any of them; objects that differ are each fetched."""
    client = _client()
    same = b"guildfile:/proj/guild.yml abc123 '' train\n"
    client.pipe({f"{bucket}/runs/r{i}/.guild/opref": same for i in range(6)})
    client.pipe({f"{bucket}/runs/r{i}/.guild/attrs/flags": b"lr: %d\n" % i for i in range(6)})
    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    counts = count_requests(fs.store)
    fs.refresh()
    counts.clear()
    assert {fs.read_bytes(f"{fs.root}/r{i}/.guild/opref") for i in range(6)} == {same}
    assert counts == {"GetObject": 1}
    flags = [fs.read_text(f"{fs.root}/r{i}/.guild/attrs/flags") for i in range(6)]
    assert flags == [f"lr: {i}\n" for i in range(6)]
    assert counts == {"GetObject": 7}
    # One of them rewritten with other bytes: a new ETag, fetched on its own.
    client.pipe_file(f"{bucket}/runs/r3/.guild/opref", b"guildfile:/proj/guild.yml x '' test\n")
    fs.refresh()
    assert fs.read_bytes(f"{fs.root}/r3/.guild/opref").endswith(b"test\n")
    assert fs.read_bytes(f"{fs.root}/r4/.guild/opref") == same
    assert counts == {"GetObject": 8, "ListObjectsV2": 1}


def test_a_page_with_news_is_read_before_the_listing_ends(bucket):
    """Listed with ``on_page``, a page's new and changed objects are in the
    listing readers see as that page comes; what went away only at the end."""
    client = _client()
    client.pipe({f"{bucket}/runs/r{i:04d}/ev": b"x" for i in range(2100)})  # 3 pages
    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    fs.refresh()
    client.pipe({f"{bucket}/runs/a-new/ev": b"new", f"{bucket}/runs/r1500/ev": b"grown"})
    client.rm(f"{bucket}/runs/r0005/ev")
    seen = []

    def on_page(paths: set[str]) -> None:
        view = fs._view
        seen.append((fs.listings, set(paths), sorted(e.name for e in fs.scandir(fs.root))))
        assert fs.stat(f"{fs.root}/r2099/ev") is not None  # later pages stay listed
        assert view.objects.keys() >= {f"{fs.root}/r0005/ev"}  # not gone yet

    rest = fs.refresh(on_page=lambda paths: paths and on_page(paths))
    new, grown = f"{fs.root}/a-new", f"{fs.root}/r1500"
    assert [n for n, _, _ in seen] == [1, 1]  # told during the second listing, twice
    assert seen[0][1] == {f"{new}/ev", new, fs.root}
    assert "a-new" in seen[0][2] and "r0005" in seen[0][2]
    assert seen[1][1] == {f"{grown}/ev"}
    assert fs.read_bytes(f"{grown}/ev") == b"grown"
    # The end: what went away, and nothing told before.
    gone = f"{fs.root}/r0005"
    assert rest == {f"{gone}/ev", gone, fs.root}
    assert fs.stat(f"{gone}/ev") is None and fs.stat(gone) is None
    names = [e.name for e in fs.scandir(fs.root)]
    assert len(names) == 2100 and "a-new" in names and "r0005" not in names
    pages: list[set[str]] = []
    assert fs.refresh(on_page=pages.append) == set()  # nothing new
    assert pages == [set()] * 3  # each page told, empty


def test_background_listing_brings_a_new_run_without_a_poll_of_its_own(bucket, tmp_path):
    """``runsmon serve``'s feed: the listing runs in its own thread and wakes
    the monitor with what it found; the monitor's own polls list nothing."""
    home, _ = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    fs = ObjectStoreFileSystem(f"s3://{bucket}/home")
    source = detect_source(fs.root, fs=fs)
    logdir = tmp_path / "logdir"
    monitor = RunsMonitor(str(logdir), source, fs=routed([fs]), watch=False, interval=60)
    monitor.run_once()
    feed = BackgroundListing([fs], interval=0.3, on_change=monitor.wake)
    monitor.changes.use(feed)
    monitor.start()
    try:
        run_dir = make_guild_run(tmp_path / "more", "run7", {"lr": 0.7, "opt": "sgd"})
        _upload(run_dir, f"{bucket}/home/runs/run7")
        # The monitor polls every 60 s: only the feed's wake-up can bring it.
        poll(lambda: set(monitor.run_names), lambda names: "run7" in names, timeout=20)
        assert session_of(logdir / monitor.run_dirs["run7"])["lr"] == 0.7
        listed = fs.listings
        poll(lambda: fs.listings, lambda n: n >= listed + 2, timeout=10)  # goes on listing
    finally:
        monitor.stop()
    assert feed._thread is None  # stopped with the monitor
    stopped = fs.listings
    time.sleep(0.8)
    assert fs.listings == stopped


def test_growing_event_file_is_appended_not_copied_again(bucket, tmp_path):
    home, dirs = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    counts = count_requests(fs.store)
    monitor.run_once()
    copy = tmp_path / "logdir" / monitor.run_dirs["run0"] / "train" / "ev.tfevents"
    local = os.path.join(dirs[0], "train", "ev.tfevents")
    assert copy.read_bytes() == pathlib.Path(local).read_bytes()
    before = copy.stat().st_size

    # The job on the other machine logs two more steps: the object is overwritten, longer.
    write_event_file(os.path.dirname(local), {"loss": [(1, 0.5), (2, 0.25)]}, "ev.tfevents", "ab")
    _client().put(local, f"{bucket}/home/runs/run0/train/ev.tfevents")
    counts.clear()
    monitor.sync_changes()
    assert copy.read_bytes() == pathlib.Path(local).read_bytes()  # no byte lost or twice
    # One GET, of the new bytes only (from a little before the copy's end).
    assert counts.get("GetObject") == 1 and "HeadObject" not in counts
    steps = [e.step for e in read_events(copy) if e.summary.value]
    assert steps == [0, 1, 2]
    assert before < copy.stat().st_size
    view = monitor.table()[0]
    assert view["metrics"][("loss", "train")] == pytest.approx(0.25)


def test_rewritten_event_file_is_copied_again_from_the_start(bucket, tmp_path):
    home, dirs = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    monitor.run_once()
    local = os.path.join(dirs[0], "train", "ev.tfevents")
    key = f"{bucket}/home/runs/run0/train/ev.tfevents"

    # Same size, other bytes (a job restarted from scratch): a new ETag, no growth.
    write_event_file(os.path.dirname(local), _scalars(0, 7.0), "ev.tfevents")
    _client().put(local, key)
    monitor.sync_changes()
    monitor.sync_changes()  # the run written anew in a new directory
    name = monitor.run_dirs["run0"]
    copy = tmp_path / "logdir" / name / "train" / "ev.tfevents"
    assert copy.read_bytes() == pathlib.Path(local).read_bytes()
    assert [d for d in os.listdir(tmp_path / "logdir") if d.startswith("run0")] == [name]
    assert monitor.table()[0]["metrics"][("loss", "train")] == pytest.approx(7.0)

    # Longer, other bytes: the bytes before the copy's end differ, so again from the start.
    write_event_file(os.path.dirname(local), {"loss": [(0, 3.0), (1, 2.0)]}, "ev.tfevents")
    _client().put(local, key)
    monitor.sync_changes()
    monitor.sync_changes()
    name = monitor.run_dirs["run0"]
    copy = tmp_path / "logdir" / name / "train" / "ev.tfevents"
    assert copy.read_bytes() == pathlib.Path(local).read_bytes()
    assert [e.step for e in read_events(copy) if e.summary.value] == [0, 1]


def test_new_run_and_deleted_run_follow_the_listing(bucket, tmp_path):
    home, _ = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    monitor, _ = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    monitor.run_once()
    more = tmp_path / "more"
    run_dir = make_guild_run(more, "run9", {"lr": 0.5, "opt": "sgd"}, status="error")
    _upload(run_dir, f"{bucket}/home/runs/run9")
    monitor.sync_changes()
    assert set(monitor.run_names) == {"run0", "run9"}
    logdir = tmp_path / "logdir"
    assert session_of(logdir / monitor.run_dirs["run9"])["lr"] == 0.5
    assert end_status_of(logdir / monitor.run_dirs["run9"]) == "STATUS_FAILURE"
    _client().rm(f"{bucket}/home/runs/run0", recursive=True)
    monitor.sync_changes()
    assert set(monitor.run_names) == {"run9"}
    assert not any(d.startswith("run0") for d in os.listdir(logdir))


def test_remote_lock_means_running(bucket, tmp_path):
    """A LOCK names a pid of another machine: the run is running, whatever runs here."""
    run_dir = make_guild_run(tmp_path / "runs", "live", status="running", pid=2**22 + 7)
    _upload(str(tmp_path / "runs"), f"{bucket}/runs")
    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    runs = detect_source(fs.root, fs=fs)()
    assert [r.status for r in runs] == ["running"]
    assert os.path.isdir(run_dir)


def test_guild_attrs_for_filters_only_are_read_when_asked(bucket, tmp_path):
    """``initialized`` and ``sourcecode_digest`` cost a GET a run: read when a
    filter reads them (or ``initialized`` for a run with no start), and what
    the filters select is what they select locally."""
    from runsmon.guildselect import newest_first, parse_filter
    from runsmon.select import Filters, RunFilter
    from runsmon.testing import write_attr

    runs = tmp_path / "runs"
    for i, digest in enumerate(("aa11", "bb22")):
        attrs = {"initialized": 10**15 + i, "sourcecode_digest": digest}
        make_guild_run(runs, f"run{i}", started=1_700_000_000.0 + i, attrs=attrs)
    pending = make_guild_run(runs, "queued", attrs={"initialized": 2 * 10**15})
    os.remove(os.path.join(pending, ".guild", "attrs", "started"))
    write_attr(pending, "exit_status", None)  # no exit status yet: a pending run
    open(os.path.join(pending, ".guild", "PENDING"), "w").close()
    _upload(str(runs), f"{bucket}/runs")

    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    counts = count_requests(fs.store)
    plain = {r.id: r for r in detect_source(fs.root, fs=fs)()}
    assert "sourcecode_digest" not in plain["run0"].attrs
    assert "initialized" not in plain["run0"].attrs
    assert plain["queued"].attrs["initialized"] == 2 * 10**15  # Guild sorts it by that
    read = {p.rpartition("/runs/")[2] for p in fs._seen if p.endswith("/attrs/initialized")}
    assert read == {"queued/.guild/attrs/initialized"}  # alone, not with every run's
    assert [r.id for r in newest_first(list(plain.values()))] == ["queued", "run1", "run0"]
    assert counts["ListObjectsV2"] == 1

    for filters in (
        Filters(digest="bb"),
        Filters(expr=parse_filter("sourcecode = aa11")),
        Filters(expr=parse_filter("attr:initialized > 1000000000000000")),
    ):
        fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
        here = RunFilter(detect_source(str(runs)), filters)()
        there = RunFilter(detect_source(fs.root, fs=fs), filters)()
        assert [r.id for r in there] == [r.id for r in here] != [], filters


def test_failed_listing_keeps_the_last_one(bucket, tmp_path, caplog):
    home, _ = _guild_home(tmp_path, runs=2)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    monitor.run_once()
    real = fs.store._call_s3

    async def dropped(method, *args, **kwargs):
        if method == "list_objects_v2":
            raise ConnectionResetError("connection reset by peer")
        return await real(method, *args, **kwargs)

    fs.store._call_s3 = dropped
    try:
        for _ in range(2):
            fs._next_try = 0.0  # no backoff wait in a test
            monitor.sync_changes()
    finally:
        fs.store._call_s3 = real
    lines = [r.getMessage() for r in caplog.records if "cannot list" in r.getMessage()]
    assert len(lines) == 1 and "connection failed" in lines[0], lines
    assert set(monitor.run_names) == {"run0", "run1"}  # nothing taken for gone
    fs._next_try = 0.0
    monitor.sync_changes()
    assert set(monitor.run_names) == {"run0", "run1"}


def test_store_errors_are_one_line():
    from botocore.exceptions import ClientError, NoCredentialsError

    error = {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}
    slow = ClientError(error, "ListObjectsV2")
    assert "503 SlowDown" in describe_store_error(slow)
    assert "no credentials" in describe_store_error(NoCredentialsError())
    denied = PermissionError("Access Denied")
    assert "access denied" in describe_store_error(denied)


def _cli(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()):
    kept = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(
        [sys.executable, "-m", "runsmon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**kept, "PYTHONPATH": REPO, **(env or {})},
    )


def test_cli_says_what_is_wrong_in_one_line(bucket, tmp_path):
    done = _cli("serve", "--once", "--no-tensorboard", "s3://no-such-bucket-here/runs")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "runsmon serve: error: cannot read s3://no-such-bucket-here/runs: no such bucket"
    ], done.stderr
    port = free_port()
    done = _cli(
        "serve", "--once", "--no-tensorboard", f"s3://{bucket}/runs",
        "-o", f"endpoint_url=http://127.0.0.1:{port}",
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the store" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    nowhere = {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    done = _cli(
        "serve", "--once", "--no-tensorboard", f"s3://{bucket}/runs", env=nowhere, drop=keys
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no credentials: set AWS_ACCESS_KEY_ID" in lines[0], done.stderr


@pytest.mark.slow
def test_serve_s3_live_through_tensorboard(bucket, tmp_path, tensorboard):
    home, dirs = _guild_home(tmp_path, runs=2)
    _upload(home, f"{bucket}/home")
    logdir = tmp_path / "logdir"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "runsmon", "serve", "--no-tensorboard", "--interval", "0.5",
            "--logdir", str(logdir), f"s3://{bucket}/home",
        ],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        poll(lambda: os.path.isdir(logdir) and len(os.listdir(logdir)) >= 4, bool, timeout=30)
        tb = tensorboard(logdir)
        table = tb.wait_for(
            lambda t: len(t) == 2 and all(("loss", "train") in r["metrics"] for r in t.values()),
            timeout=30,
            what="both runs with their train loss",
        )
        row = next(r for r in table.values() if r["hparams"]["lr"] == pytest.approx(0.1))
        assert row["status"] == "STATUS_SUCCESS"
        assert row["metrics"][("loss", "train")] == pytest.approx(1.0)

        # Steps appended on the other machine reach the dashboard.
        local = os.path.join(dirs[0], "train", "ev.tfevents")
        write_event_file(os.path.dirname(local), {"loss": [(1, 0.125)]}, "ev.tfevents", "ab")
        _client().put(local, f"{bucket}/home/runs/run0/train/ev.tfevents")
        # A new run appears.
        run_dir = make_guild_run(tmp_path / "more", "run7", {"lr": 0.7, "opt": "sgd"})
        write_event_file(os.path.join(run_dir, "train"), _scalars(0, 9.0), name="ev.tfevents")
        _upload(run_dir, f"{bucket}/home/runs/run7")
        table = tb.wait_for(
            lambda t: (
                len(t) == 3
                and any(
                    r["metrics"].get(("loss", "train")) == pytest.approx(0.125) for r in t.values()
                )
                and any(
                    r["metrics"].get(("loss", "train")) == pytest.approx(9.0) for r in t.values()
                )
            ),
            timeout=30,
            what="the appended step and the new run",
        )
        new = next(r for r in table.values() if r["hparams"]["lr"] == pytest.approx(0.7))
        assert new["hparams"]["opt"] == "sgd"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Traceback" not in out, out
    assert "reading guild runs in s3://" in out, out


def _rows(source, fs) -> list[tuple]:
    from runsmon.table import collect

    table = collect(source, fs=fs)
    # `time` of a run without times of its own comes from its files' times:
    # in the store, when they were uploaded.
    values = ({k: v for k, v in r.values.items() if k != "time"} for r in table.rows)
    return sorted(
        (r.run.status, repr(sorted(v.items()))) for r, v in zip(table.rows, values, strict=True)
    )


@pytest.mark.slow  # every layout written and uploaded: a minute on a busy machine
def test_every_layout_reads_as_it_does_locally(bucket, tmp_path):
    """Run trees of every tool, read from the store and from the disk, give the same table."""
    from sample_projects.layouts import make_all, wandb_offline

    written = make_all(str(tmp_path / "local"))
    target = tmp_path / "local" / "wandb"
    target.mkdir()
    wandb_offline.make_legacy(str(target))
    written["wandb"] = str(target)
    _upload(str(tmp_path / "local"), f"{bucket}/layouts")
    # An object's time is its LastModified (whole seconds) with its ETag's
    # hash below the second: idle for a millisecond once a second has passed.
    time.sleep(1.5)
    for name, local in sorted(written.items()):
        fs = ObjectStoreFileSystem(f"s3://{bucket}/layouts/{name}")
        # Idleness is judged by the objects' times: uploaded just now, where the
        # local files were backdated. Compared with every run idle at once.
        here = detect_source(local, idle_after=1e-3)
        there = detect_source(fs.root, fs=fs, idle_after=1e-3)
        assert there.kind == here.kind, name
        remote_rows = _rows(there, routed([fs]))
        assert remote_rows, name
        assert remote_rows == _rows(here, routed([])), name


def test_failed_get_loses_and_doubles_nothing(bucket, tmp_path, caplog):
    """A GET that fails (a dropped connection) leaves the copy as it was; the
    bytes come at a later poll, once, whatever the reads in between did."""
    home, dirs = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    monitor.run_once()
    local = os.path.join(dirs[0], "train", "ev.tfevents")
    copy = tmp_path / "logdir" / monitor.run_dirs["run0"] / "train" / "ev.tfevents"
    write_event_file(os.path.dirname(local), {"loss": [(1, 0.5)]}, "ev.tfevents", "ab")
    _client().put(local, f"{bucket}/home/runs/run0/train/ev.tfevents")
    real = fs._aget

    async def dropped(*args, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    fs._aget = dropped
    try:
        before = copy.read_bytes()
        monitor.sync_changes()
        monitor.sync_changes()
        assert copy.read_bytes() == before  # nothing half-appended
    finally:
        fs._aget = real
    lines = [r.getMessage() for r in caplog.records if "cannot read s3://" in r.getMessage()]
    assert len(lines) == 1 and "connection failed" in lines[0], lines
    monitor.sync_changes()
    assert copy.read_bytes() == pathlib.Path(local).read_bytes()
    assert [e.step for e in read_events(copy) if e.summary.value] == [0, 1]
    assert monitor.table()[0]["metrics"][("loss", "train")] == pytest.approx(0.5)


def test_table_reads_a_store(bucket, tmp_path, moto):
    home, _ = _guild_home(tmp_path, runs=2)
    _upload(home, f"{bucket}/home")
    done = _cli(
        "table", "--format", "csv", f"s3://{bucket}/home",
        "--storage-option", f"endpoint_url={moto.endpoint}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and "lr" in lines[0], done.stdout
    assert sorted(line.split(",")[lines[0].split(",").index("lr")] for line in lines[1:]) == [
        "0.1",
        "0.2",
    ]


def test_background_listing_stops_between_pages(bucket):
    """A feed stopped during a listing ends it at the next page, quietly, and
    what the pages so far brought stays in the listing."""
    client = _client()
    client.pipe({f"{bucket}/runs/r{i:04d}/ev": b"x" for i in range(2100)})  # 3 pages
    fs = ObjectStoreFileSystem(f"s3://{bucket}/runs")
    fs.refresh()
    client.pipe({f"{bucket}/runs/a-new/ev": b"new", f"{bucket}/runs/r2000/ev": b"grown"})
    feed = BackgroundListing([fs], interval=0.05)
    feed.on_change = lambda: feed._stop.set()  # stopped as the first page's news is told
    feed.start()
    poll(lambda: feed._stop.is_set(), lambda stopped: stopped, timeout=20)
    thread = feed._thread
    thread.join(10)
    assert not thread.is_alive()
    assert feed.take() == {f"{fs.root}/a-new/ev", f"{fs.root}/a-new", fs.root}
    assert fs.stat(f"{fs.root}/a-new/ev") is not None  # page 1 is in
    assert fs.stat(f"{fs.root}/r2000/ev").size == 1  # page 3 was never read
    assert fs.listings == 1 and not fs.reporter.active()


def test_run_once_in_a_loop_lists_the_store_each_call(bucket, tmp_path):
    """A tool that calls ``run_once()`` itself sees news in the store: each
    call lists the prefix again (one LIST page here), then syncs."""
    home, _ = _guild_home(tmp_path, runs=1)
    _upload(home, f"{bucket}/home")
    monitor, fs = _monitor(tmp_path / "logdir", f"s3://{bucket}/home")
    counts = count_requests(fs.store)
    assert monitor.run_once().runs == 1
    counts.clear()
    assert monitor.run_once().runs == 1
    assert counts == {"ListObjectsV2": 1}
    run_dir = make_guild_run(tmp_path / "more", "run5", {"lr": 0.5, "opt": "sgd"})
    _upload(run_dir, f"{bucket}/home/runs/run5")
    assert monitor.run_once().runs == 2
    assert session_of(tmp_path / "logdir" / monitor.run_dirs["run5"])["lr"] == 0.5


class _HexStore:
    """A store whose ETags are hex but no digest of the bytes (a version
    number, as some S3-compatible stores and encrypted objects give)."""

    async_impl = False

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.gets = 0

    def find(self, path: str, detail: bool = True) -> dict[str, dict]:
        etag = '"' + "0" * 31 + '1"'
        return {
            k: {"Key": k, "size": len(v), "ETag": etag, "LastModified": 1.7e9}
            for k, v in self.files.items()
        }

    def cat_file(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        self.gets += 1
        return self.files[key][start:end]


def test_bytes_are_shared_only_where_the_etag_is_their_md5():
    store = _HexStore({"b/runs/a/exit_status": b"0\n", "b/runs/b/exit_status": b"1\n"})
    fs = ObjectStoreFileSystem("s3://b/runs", store=store)
    assert fs.read_bytes(f"{fs.root}/a/exit_status") == b"0\n"
    assert fs.read_bytes(f"{fs.root}/b/exit_status") == b"1\n"  # same ETag and size, not shared
    assert store.gets == 2 and not fs._shared
