"""Runs in object storage (S3 and any fsspec store), read from listings.

:class:`ObjectStoreFileSystem` is a :class:`~runsmon.fs.FileSystem` over an
fsspec store whose answers come from one listing of the store's prefix per
poll (one LIST request per 1,000 keys: on S3 ``ListObjectsV2``'s pages
through runsmon's own client, see :mod:`runsmon.s3client`; elsewhere
``find(prefix, detail=True)``), kept until the next
:meth:`~ObjectStoreFileSystem.refresh`. ``stat`` and
``scandir`` cost no request: a file's size and ETag come from the listing,
"directories" are made up from the keys. Reads are ranged GETs of what the
listing holds (never past its size, and on S3 only of the object listed:
``If-Match`` its ETag), and a small file read once is read again only when
its (size, ETag) moved. There are no links in object storage:
:meth:`~ObjectStoreFileSystem.local_path` is None, so the monitor's mirror
copies each event file into the local logdir, appending what is new.

:class:`ListingFeed` is the monitor's change feed for such stores: each poll
it lists every store once and reports the paths whose (size, ETag) moved,
appeared or went away (and their directories), as a watcher reports local
changes. Paths inside runsmon are ``SCHEME:/bucket/key``: one slash, so that
``os.path.normpath`` and ``os.path.join`` keep them as they are.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from runsmon import s3client
from runsmon.fs import LOCAL, Entry, FileSystem, Stat, read_one
from runsmon.report import Reporter

log = logging.getLogger("runsmon")

#: Schemes that are not object stores: MLflow servers, SQLite URIs, local files.
NOT_STORES = frozenset({"http", "https", "sqlite", "file", ""})

#: Bytes of recent reads kept, so that the scanner and the mirror reading the
#: same new bytes of an event file cost one GET, and small files one GET per
#: (size, ETag).
READ_CACHE_BYTES = 64 << 20

#: Objects read at first sight together with the objects like them (see
#: ObjectStoreFileSystem._fetch_alike), when they are at most this large.
PREFETCH_MAX = 4 << 20
#: GETs in flight at once while prefetching.
PREFETCH_CONCURRENCY = 32

#: Bytes read before the offset asked for, kept with the rest.
READ_BEHIND = 64

#: Seconds between listings after a failed one, doubling up to the last.
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def is_store_url(text: str) -> bool:
    """Whether ``text`` names a prefix in an object store (``s3://bucket/prefix``).

    >>> [is_store_url(t) for t in ("s3://b/p", "gs://b", "memory://x", "mlruns")]
    [True, True, True, False]
    >>> [is_store_url(t) for t in ("http://host:5000", "sqlite:///mlflow.db", "file:///tmp")]
    [False, False, False]
    """
    parsed = urllib.parse.urlsplit(text)
    return "://" in text and len(parsed.scheme) > 1 and parsed.scheme.lower() not in NOT_STORES


def inner_path(url: str) -> str:
    """The path runsmon uses for a store URL: ``SCHEME:/bucket/key``, no trailing slash.

    >>> inner_path("s3://bucket/runs/"), inner_path("s3://bucket")
    ('s3:/bucket/runs', 's3:/bucket')
    """
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}:/{rest.strip('/')}"


def store_url(path: str) -> str:
    """The URL of a path of :func:`inner_path`'s form.

    >>> store_url("s3:/bucket/runs/a")
    's3://bucket/runs/a'
    """
    scheme, _, rest = path.partition(":/")
    return f"{scheme}://{rest}"


def shown_urls(text: str, stores: Iterable[ObjectStoreFileSystem]) -> str:
    """``text`` with the stores' paths as the URLs the user gave.

    >>> class Store: root, url = "s3:/b/runs", "s3://b/runs"
    >>> shown_urls("guild runs in s3:/b/runs", [Store()])
    'guild runs in s3://b/runs'
    """
    for store in stores:
        text = text.replace(store.root, store.url)
    return text


class Obj(NamedTuple):
    """One object as the listing gave it."""

    size: int
    mtime_ns: int  # LastModified (whole seconds), with a hash of the ETag below the second
    etag: str


def _etag(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "md5Hash", "crc32c", "checksum"):
        value = info.get(key)
        if value:
            return str(value)
    return ""


def _seconds(info: Mapping[str, Any]) -> float:
    for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        if isinstance(value, (int, float)):
            return float(value)
        try:
            from datetime import datetime

            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
    return 0.0


def object_of(info: Mapping[str, Any]) -> Obj:
    """An :class:`Obj` from one entry of an fsspec listing.

    The time keeps its whole seconds (what S3 records), so run sources that
    judge idleness by it stay right; below the second goes a hash of the
    ETag, so that an object rewritten in the same second at the same size
    still changes its stat key.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 11, 30, tzinfo=timezone.utc)
    >>> a = object_of({"Size": 5, "LastModified": t, "ETag": '"abc"'})
    >>> b = object_of({"Size": 5, "LastModified": t, "ETag": '"abd"'})
    >>> a.mtime_ns // 10**9 == int(t.timestamp()), a.mtime_ns != b.mtime_ns
    (True, True)
    """
    etag = _etag(info)
    size = int(info.get("size", info.get("Size", 0)) or 0)
    below = zlib.crc32(etag.encode()) % 999_999_937 if etag else 0
    return Obj(size, int(_seconds(info)) * 1_000_000_000 + below, etag or f"{size}")


def _shape(path: str) -> tuple[str, str]:
    """What a file is like: its directory's name and its own, digits aside.

    >>> _shape("s3:/b/runs/ab12/train/events.out.tfevents.1700000000.host.7.0")
    ('train', 'events.out.tfevents.#.host.#.#')
    >>> _shape("s3:/b/runs/ab12/.guild/attrs/flags") == _shape("s3:/b/runs/cd34/.guild/attrs/flags")
    True
    >>> _shape("s3:/b/runs/0f3a9c2e77d14b0c/events.out.tfevents.1.h")  # a run id is a number
    ('#', 'events.out.tfevents.#.h')
    """
    parent, _, name = path.rpartition("/")
    return _DIGITS.sub("#", parent.rpartition("/")[2]), _DIGITS.sub("#", name)


_DIGITS = re.compile(r"[0-9a-f]{8,}|\d+")  # numbers, hex ids among them


def _dir_key(names: Iterable[str]) -> int:
    """A directory's stand-in for an mtime: it moves when an entry comes or goes.

    Kept below 2**60 ns (1.15e9 s, in 2006): never newer than a real file's time.
    """
    digest = zlib.crc32("\0".join(names).encode())
    return (digest << 28) % (1 << 60)


def describe_store_error(error: BaseException, url: str = "") -> str:
    """One line for what went wrong talking to a store: what to do about it."""
    chain = []
    e: BaseException | None = error
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    names = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain)
    low = text.lower()
    if "NoCredentialsError" in names or "unable to locate credentials" in low:
        return (
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or give -o key=... -o secret=..."
        )
    if "nosuchbucket" in low.replace(" ", "") or "bucket does not exist" in low:
        return "no such bucket"
    if any(isinstance(x, PermissionError) for x in chain) or "access denied" in low:
        return "access denied (check the credentials and the policy on this prefix)"
    if "invalidaccesskeyid" in low.replace(" ", "") or "signaturedoesnotmatch" in low.replace(
        " ", ""
    ):
        return "the credentials were refused"
    if "slowdown" in low.replace(" ", "") or "reduce your request rate" in low or "503" in low:
        return "the store is throttling requests (503 SlowDown); retrying"
    connection = (
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "TimeoutError",
    )
    if names & set(connection) or "connect" in low:
        where = f" at {url}" if url else ""
        return f"cannot reach the store{where}: connection failed; retrying"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return first[:200]


class ObjectStoreFileSystem:
    """A :class:`~runsmon.fs.FileSystem` over one prefix of an fsspec store.

    ``url`` is the prefix (``s3://bucket/prefix``); ``storage_options`` go to
    ``fsspec.filesystem`` (``endpoint_url``, ``key``, ``anon``...), or
    ``store`` is an fsspec filesystem made already. Credentials and the
    endpoint otherwise come as the store's own client takes them (for S3:
    the AWS credential chain, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``).
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        store: Any = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.protocol = url.partition("://")[0].lower()
        self.root = inner_path(url)
        if store is None:
            import fsspec

            options = dict(storage_options or {})
            if self.protocol in s3client.S3_SCHEMES:
                options.setdefault("skip_instance_cache", True)  # a client of its own
            store = fsspec.filesystem(self.protocol, **options)
            if self.protocol in s3client.S3_SCHEMES:
                s3client.use_quick_timestamps(store)
        self.store = store
        self.reporter = reporter or Reporter()
        self._lock = threading.RLock()
        self._objects: dict[str, Obj] | None = None
        self._dirs: dict[str, tuple[str, ...]] = {}  # dir -> sorted names below it
        self._dir_stats: dict[str, Stat] = {}
        self._retry: set[str] = set()  # paths whose read failed: reported again, re-read
        self._bump: collections.Counter[str] = collections.Counter()
        self._reads: collections.OrderedDict[str, tuple[str, int, bytes]] = (
            collections.OrderedDict()
        )
        self._read_bytes = 0
        self._seen: set[str] = set()  # objects read at least once
        self._shapes: dict[tuple[str, str], list[str]] | None = None  # see _shape
        self._failures = 0
        self._next_try = 0.0
        self.listings = 0
        """Listings made (each is one LIST request per 1,000 keys)."""

    # -- listing -----------------------------------------------------------------

    def owns(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def _key(self, path: str) -> str:
        """The fsspec path (``bucket/key``) of an inner path."""
        return path.partition(":/")[2]

    def check(self) -> None:
        """List now; raise OSError with a one-line cause when the store cannot be read."""
        with self._lock:
            try:
                self._list()
            except Exception as e:
                raise OSError(f"cannot read {self.url}: {describe_store_error(e, self.url)}") from e

    def _list(self) -> set[str]:
        """One listing; returns the paths that changed since the last one."""
        prefix = self._key(self.root)
        found = self._find(prefix)
        self.listings += 1
        objects: dict[str, Obj] = {}
        head = prefix + "/"
        for name, info in found:
            # Keys ending in "/" are folder markers (consoles make them), not files.
            if name.endswith("/") or not name.startswith(head) or info.get("type") == "directory":
                continue
            objects[f"{self.protocol}:/{name}"] = object_of(info)
        if not objects and self._objects is None and not self._prefix_exists(prefix):
            raise FileNotFoundError(f"no objects below {self.url}")
        old = self._objects or {}
        changed = {p for p, o in objects.items() if old.get(p) != o}
        gone = {p for p in old if p not in objects}
        dirs: dict[str, set[str]] = {self.root: set()}
        for path in objects:
            parent, _, name = path.rpartition("/")
            while True:
                entry = dirs.get(parent)
                if entry is None:
                    entry = dirs[parent] = set()
                elif name in entry:
                    break  # its directories are known already
                entry.add(name)
                if parent == self.root or not self.owns(parent):
                    break
                parent, _, name = parent.rpartition("/")
        self._shapes = None  # made when a first read wants them (see _fetch_alike)
        self._objects = objects
        self._dirs = {d: tuple(sorted(names)) for d, names in dirs.items()}
        self._dir_stats = {}
        # A file that came or went changes its directories' listings.
        for path in changed - set(old) | gone:
            parent = path.rpartition("/")[0]
            while self.owns(parent):
                changed.add(parent)
                if parent == self.root:
                    break
                parent = parent.rpartition("/")[0]
        for path in gone:
            self._forget(path)
            self._seen.discard(path)
        changed |= gone
        return changed

    def _find(self, prefix: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        """Every object below ``prefix`` (``bucket/key``): its ``bucket/key`` and what
        the listing says of it. On S3, ``ListObjectsV2``'s pages as they come
        (no directories made up); elsewhere fsspec's ``find``."""
        if not s3client.lists_plainly(self.store, self.protocol):
            return self.store.find(prefix, detail=True).items()
        from fsspec.asyn import sync

        bucket, _, key = prefix.partition("/")
        contents = sync(
            self.store.loop, s3client.list_objects, self.store, bucket, key + "/" if key else ""
        )
        return ((f"{bucket}/{c['Key']}", c) for c in contents)

    def _prefix_exists(self, prefix: str) -> bool:
        """An empty listing: the prefix may be empty, or its bucket missing."""
        bucket = prefix.partition("/")[0]
        try:
            return bool(self.store.exists(bucket)) if hasattr(self.store, "exists") else True
        except Exception:
            return True

    def refresh(self) -> set[str]:
        """List again (one listing, once per poll); the paths that changed.

        When the store cannot be listed, the last listing stays (nothing is
        taken for gone), the cause is one warning line, and listing is tried
        again with backoff.
        """
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                return set()
            try:
                changed = self._list()
            except Exception as e:
                self._failures += 1
                wait = BACKOFF[min(self._failures, len(BACKOFF)) - 1]
                self._next_try = now + wait
                self.reporter.warn(
                    self.url,
                    "list",
                    f"cannot list {self.url}: {describe_store_error(e, self.url)}",
                )
                log.debug("listing %s failed", self.url, exc_info=True)
                return set()
            if self._failures:
                log.warning("%s: listed again", self.url)
            self._failures = 0
            self._next_try = 0.0
            self.reporter.clear(self.url, "list")
            retry, self._retry = self._retry, set()
            return changed | retry

    def _listing(self) -> dict[str, Obj]:
        if self._objects is None:
            with self._lock:
                if self._objects is None:
                    try:
                        self._list()
                    except Exception as e:
                        raise OSError(
                            f"cannot list {self.url}: {describe_store_error(e, self.url)}"
                        ) from e
        return self._objects  # type: ignore[return-value]

    # -- the FileSystem interface ----------------------------------------------

    def stat(self, path: str) -> Stat | None:
        try:
            objects = self._listing()
        except OSError:
            return None
        obj = objects.get(path)
        if obj is not None:
            return Stat(obj.size, obj.mtime_ns + self._bump.get(path, 0), False, True)
        st = self._dir_stats.get(path)
        if st is None:
            names = self._dirs.get(path)
            if names is None:
                return None
            st = self._dir_stats[path] = Stat(len(names), _dir_key(names), True, False)
        return st

    def scandir(self, path: str) -> list[Entry]:
        objects = self._listing()
        names = self._dirs.get(path)
        if names is None:
            if path in objects:
                raise NotADirectoryError(path)
            raise FileNotFoundError(path)
        out = []
        for name in names:
            child = f"{path}/{name}"
            is_file = child in objects
            out.append(Entry(name, child, not is_file, is_file, False))
        return out

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        """Bytes of the object as listed, from ``offset``: a ranged GET, or
        none where the listing holds nothing past ``offset``."""
        return self._read(path, offset, size, alike=True)

    def read_one(self, path: str) -> bytes:
        """The object as listed, bringing no object like it along (see
        :meth:`_fetch_alike`): for a file read for a few runs only."""
        return self._read(path, 0, -1, alike=False)

    def _read(self, path: str, offset: int, size: int, alike: bool) -> bytes:
        obj = self._listing().get(path)
        if obj is None:
            if path in self._dirs:
                raise OSError(f"not a regular file: {path}")
            raise FileNotFoundError(path)
        end = obj.size if size < 0 else min(obj.size, offset + size)
        if offset >= end:
            return b""
        with self._lock:
            cached = self._reads.get(path)
            if cached is not None and cached[0] == obj.etag:
                start, data = cached[1], cached[2]
                if start <= offset and end <= start + len(data):
                    self._reads.move_to_end(path)
                    return data[offset - start : end - start]
        if alike and offset == 0 and path not in self._seen and obj.size <= PREFETCH_MAX:
            data = self._fetch_alike(path, obj)
            if data is not None:
                return data[:end]
        # A little before ``offset`` too: the mirror checks a copy's last
        # bytes against them before it appends (see mirror.COPY_OVERLAP).
        fetch = max(0, offset - READ_BEHIND)
        try:
            data = self._get(path, obj, fetch, end)
        except FileNotFoundError:
            raise
        except Exception as e:
            # Changed since the listing (If-Match failed), throttled, a
            # dropped connection: nothing new for now. The path is reported
            # again after the next listing, with a stat key of its own, so
            # every reader reads it again then.
            cause = describe_store_error(e, self.url)
            if "pre-condition" not in str(e).lower() and "precondition" not in str(e).lower():
                self.reporter.warn(self.url, "read", f"cannot read {store_url(path)}: {cause}")
            with self._lock:
                self._retry.add(path)
                self._bump[path] += 1
            return b""
        self.reporter.clear(self.url, "read")
        with self._lock:
            self._bump.pop(path, None)
            self._seen.add(path)
            self._remember(path, obj.etag, fetch, data)
        return data[offset - fetch :]

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def local_path(self, path: str) -> str | None:
        return None  # no links into object storage: copies

    # -- reading -------------------------------------------------------------

    def _get(self, path: str, obj: Obj, start: int, end: int) -> bytes:
        if getattr(self.store, "async_impl", False):
            from fsspec.asyn import sync

            return sync(self.store.loop, self._aget, path, obj, start, end)
        return bytes(self.store.cat_file(self._key(path), start=start, end=end))

    async def _aget(self, path: str, obj: Obj, start: int, end: int) -> bytes:
        """A ranged GET of the object as listed (on S3: ``If-Match`` its ETag)."""
        key = self._key(path)
        if self.protocol in ("s3", "s3a") and hasattr(self.store, "_call_s3"):
            bucket, _, name = key.partition("/")
            resp = await self.store._call_s3(
                "get_object",
                Bucket=bucket,
                Key=name,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=obj.etag,
            )
            try:
                return await resp["Body"].read()
            finally:
                resp["Body"].close()
        return bytes(await self.store._cat_file(key, start=start, end=end))

    def _fetch_alike(self, path: str, obj: Obj) -> bytes | None:
        """Fetch ``path`` whole, and with it every object like it not read yet,
        many at a time, into the read cache; ``path``'s bytes, or None when
        its GET failed (read again the plain way, which says why).

        A source reads the same few files of every run (a Guild run's
        ``attrs/flags``, its ``opref``, its ``train/events.out.tfevents.*``)
        and the scanner every event file, one at a time: fetched one request
        after the other, 1,000 Guild runs cost two minutes. "Like it" is the
        same file name in a directory of the same name, digits aside
        (:func:`_shape`); only objects up to :data:`PREFETCH_MAX` bytes come
        along, :data:`PREFETCH_CONCURRENCY` GETs at a time, and never one
        that was read already (a grown event file is read from its offset).
        """
        objects = self._objects or {}
        wanted = [(path, obj)]
        total = obj.size
        if getattr(self.store, "async_impl", False):
            shapes = self._shapes
            if shapes is None:
                shapes = {}
                for p in objects:
                    shapes.setdefault(_shape(p), []).append(p)
                self._shapes = shapes
            for other in shapes.get(_shape(path), ()):
                o = objects.get(other)
                if other == path or other in self._seen or o is None or o.size > PREFETCH_MAX:
                    continue
                cached = self._reads.get(other)
                if cached is not None and cached[0] == o.etag:
                    continue
                total += o.size
                if total > READ_CACHE_BYTES // 2:
                    break
                wanted.append((other, o))
        if len(wanted) == 1:
            return None  # nothing alike: the plain way
        import asyncio

        from fsspec.asyn import sync

        async def fetch_all() -> list[bytes | BaseException]:
            gate = asyncio.Semaphore(PREFETCH_CONCURRENCY)

            async def one(p: str, o: Obj) -> bytes | BaseException:
                async with gate:
                    try:
                        return await self._aget(p, o, 0, o.size)
                    except Exception as e:
                        return e

            return await asyncio.gather(*(one(p, o) for p, o in wanted))

        try:
            results = sync(self.store.loop, fetch_all)
        except Exception:  # a batch is a saving, never a failure: read one by one
            log.debug("batch read from %s failed", self.url, exc_info=True)
            return None
        mine = None
        with self._lock:
            for (p, o), data in zip(wanted, results, strict=True):
                if isinstance(data, bytes) and len(data) == o.size:
                    self._seen.add(p)
                    self._remember(p, o.etag, 0, data)
                    if p == path:
                        mine = data
        return mine

    def _remember(self, path: str, etag: str, start: int, data: bytes) -> None:
        old = self._reads.pop(path, None)
        if old is not None:
            self._read_bytes -= len(old[2])
            # Read on from where the last read ended (a scan in chunks): one range.
            if old[0] == etag and old[1] <= start <= old[1] + len(old[2]):
                joined = start - old[1] + len(data)
                if joined <= READ_CACHE_BYTES // 4:
                    data = old[2][: start - old[1]] + data
                    start = old[1]
        if len(data) > READ_CACHE_BYTES // 4:
            return
        self._reads[path] = (etag, start, data)
        self._read_bytes += len(data)
        while self._read_bytes > READ_CACHE_BYTES and self._reads:
            _, (_, _, dropped) = self._reads.popitem(last=False)
            self._read_bytes -= len(dropped)

    def _forget(self, path: str) -> None:
        old = self._reads.pop(path, None)
        if old is not None:
            self._read_bytes -= len(old[2])
        self._bump.pop(path, None)


class RoutedFileSystem:
    """Local paths to the local filesystem, store paths to their store."""

    def __init__(self, stores: list[ObjectStoreFileSystem], local: FileSystem = LOCAL) -> None:
        self.stores = stores
        self.local = local

    def _fs(self, path: str) -> FileSystem:
        for store in self.stores:
            if store.owns(path):
                return store
        return self.local

    def scandir(self, path: str) -> list[Entry]:
        return self._fs(path).scandir(path)

    def stat(self, path: str) -> Stat | None:
        return self._fs(path).stat(path)

    def read_bytes(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        return self._fs(path).read_bytes(path, offset, size)

    def read_text(self, path: str) -> str:
        return self._fs(path).read_text(path)

    def read_one(self, path: str) -> bytes:
        return read_one(self._fs(path), path)

    def local_path(self, path: str) -> str | None:
        return self._fs(path).local_path(path)


def routed(stores: list[ObjectStoreFileSystem]) -> FileSystem:
    """The filesystem for a monitor reading these stores (and local paths)."""
    return RoutedFileSystem(stores) if stores else LOCAL


class ListingFeed:
    """The monitor's change feed for runs in object storage (see the module's docstring).

    It sets no watches and does not count as running, so each poll also
    re-checks the roots and the runs that have not ended (local ones
    included); for runs in a store those answers come from the listing.
    """

    watches = False
    running = False

    def __init__(self, stores: list[ObjectStoreFileSystem]) -> None:
        self.stores = stores

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def take(self) -> set[str]:
        changed: set[str] = set()
        for store in self.stores:
            changed |= store.refresh()
        return changed

    def set_watches(self, wanted: Iterable[tuple[str, bool]]) -> set[tuple[str, bool]]:
        return set()

    def retry_failed(self) -> None:
        pass


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``-o KEY=VALUE`` pairs as fsspec storage options; values as YAML reads them.

    >>> parse_storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=true", "retries=3"])
    {'endpoint_url': 'http://127.0.0.1:9000', 'anon': True, 'retries': 3}
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r}: give KEY=VALUE")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        out[key.strip()] = parsed if isinstance(parsed, (bool, int, float)) else value
    return out
