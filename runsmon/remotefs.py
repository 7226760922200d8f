"""Runs in object storage (S3 and any fsspec store), read from listings.

:class:`ObjectStoreFileSystem` is a :class:`~runsmon.fs.FileSystem` over an
fsspec store whose answers come from the last listing of the store's prefix
(one LIST request per 1,000 keys: on S3 ``ListObjectsV2``'s pages through
runsmon's own client, see :mod:`runsmon.s3client`; elsewhere
``find(prefix, detail=True)``), with the pages of a listing under way that
brought news (:meth:`~ObjectStoreFileSystem.refresh`). ``stat`` and
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
changes. :class:`BackgroundListing` (``runsmon serve``'s) lists in a thread
of its own every ``interval`` and hands on each page's news as the page
comes, so a change waits for its page, not for a whole listing and a poll.
A small object whose ETag is a digest of its bytes (S3's MD5) is fetched
once for all objects with that ETag (:func:`content_key`).

Paths inside runsmon are ``SCHEME:/bucket/key``: one slash, so that
``os.path.normpath`` and ``os.path.join`` keep them as they are.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
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

#: Objects up to this size are kept by their content's ETag as well (see
#: :func:`content_key`), up to :data:`SHARED_BYTES` in all: a file many runs
#: hold alike (a Guild run's ``opref``, its ``exit_status`` of 0, a config
#: left at its defaults) is fetched once, not once a run.
SHARED_MAX = 4 << 10
SHARED_BYTES = 4 << 20

#: ETags that may be the MD5 of the bytes (S3's, for an object written in one
#: part); an object's bytes are shared only once their MD5 is its ETag. Other
#: forms (multipart ``MD5-parts``, GCS generations, Azure's ``0x8D...``) and
#: hex ETags that are no digest (SSE-KMS) are never shared.
_DIGEST_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')

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


def content_key(obj: Obj) -> tuple[str, int] | None:
    """What a small object's bytes are known by when its ETag may be their MD5:
    its ETag and size (see :func:`is_digest_of` for the proof).

    >>> content_key(Obj(2, 0, '"897316929176464ebc9ad085f31e7284"'))
    ('"897316929176464ebc9ad085f31e7284"', 2)
    >>> content_key(Obj(2, 0, "CNCo7bLh0fECEAE=")) is None  # a GCS generation
    True
    """
    if obj.size <= SHARED_MAX and _DIGEST_ETAG.match(obj.etag):
        return obj.etag, obj.size
    return None


def is_digest_of(etag: str, data: bytes) -> bool:
    """Whether ``etag`` is the MD5 of ``data``: then any object with that ETag
    holds these bytes (an MD5 collision aside).

    >>> is_digest_of('"900150983cd24fb0d6963f7d28e17f72"', b"abc")
    True
    >>> is_digest_of('"900150983cd24fb0d6963f7d28e17f72"', b"abd")
    False
    """
    m = _DIGEST_ETAG.match(etag)
    return m is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() == m[1].lower()


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


class _View:
    """One listing as readers see it. It is replaced whole, never changed, so a
    reader holding it sees one listing; the memos made from it go with it."""

    __slots__ = ("objects", "dirs", "dir_stats", "shapes")

    def __init__(self, objects: dict[str, Obj], dirs: dict[str, tuple[str, ...]]) -> None:
        self.objects = objects
        self.dirs = dirs  # dir -> sorted names below it
        self.dir_stats: dict[str, Stat] = {}
        self.shapes: dict[tuple[str, str], list[str]] | None = None  # see _shape


def _dirs_of(
    objects: Iterable[str], root: str, owns: Callable[[str], bool]
) -> dict[str, tuple[str, ...]]:
    """The made-up directories of these object paths: each with its sorted names."""
    dirs: dict[str, set[str]] = {root: set()}
    for path in objects:
        _enter(dirs, path, root, owns)
    return {d: tuple(sorted(names)) for d, names in dirs.items()}


def _enter(
    dirs: dict[str, set[str]],
    path: str,
    root: str,
    owns: Callable[[str], bool],
    known: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Put ``path`` into the made-up directories above it, up to ``root``: each
    directory a set of names, one not in ``dirs`` yet starting from its names
    in ``known``."""
    parent, _, name = path.rpartition("/")
    while True:
        entry = dirs.get(parent)
        if entry is None:
            entry = dirs[parent] = set(known.get(parent, ()) if known is not None else ())
        if name in entry:
            break  # its directories are known already
        entry.add(name)
        if parent == root or not owns(parent):
            break
        parent, _, name = parent.rpartition("/")


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
        self._lock = threading.RLock()  # the reads' caches
        self._list_lock = threading.Lock()  # one listing at a time
        self._view: _View | None = None  # the last listing, as readers see it
        self._retry: set[str] = set()  # paths whose read failed: reported again, re-read
        self._bump: collections.Counter[str] = collections.Counter()
        self._reads: collections.OrderedDict[str, tuple[str, int, bytes]] = (
            collections.OrderedDict()
        )
        self._read_bytes = 0
        self._shared: collections.OrderedDict[tuple[str, int], bytes] = (
            collections.OrderedDict()
        )  # small objects by content_key
        self._shared_size = 0
        self._seen: set[str] = set()  # objects read at least once
        self._failures = 0
        self._next_try = 0.0
        self.listings = 0
        """Listings made (each is one LIST request per 1,000 keys)."""
        self.listed_at = 0.0
        """When (``time.monotonic()``) the last listing began."""

    # -- listing -----------------------------------------------------------------

    def owns(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def _key(self, path: str) -> str:
        """The fsspec path (``bucket/key``) of an inner path."""
        return path.partition(":/")[2]

    def check(self) -> None:
        """List now; raise OSError with a one-line cause when the store cannot be read."""
        with self._list_lock:
            self.listed_at = time.monotonic()
            try:
                self._list()
            except Exception as e:
                raise OSError(f"cannot read {self.url}: {describe_store_error(e, self.url)}") from e

    def _list(self, on_page: Callable[[set[str]], None] | None = None) -> set[str]:
        """One listing; returns the paths that changed since the last one.

        With ``on_page``, each page that holds news goes into the listing
        readers see as soon as it comes, and ``on_page`` is told its paths
        (empty for a page with no news; a page's keys follow the last
        page's: what it holds is news at once); what went away is known at
        the end, and returned then with nothing that was told already. The
        first listing is made whole before readers see it (no ``on_page``).
        """
        prefix = self._key(self.root)
        head = prefix + "/"
        before = self._view
        old = before.objects if before is not None else {}
        objects: dict[str, Obj] = {}
        fresh: dict[str, Obj] = {}
        told: set[str] = set()
        for page in self._pages(prefix):
            news: dict[str, Obj] = {}
            for name, info in page:
                # Keys ending in "/" are folder markers (consoles make them), not files.
                if name.endswith("/") or not name.startswith(head):
                    continue
                if info.get("type") == "directory":
                    continue
                path = f"{self.protocol}:/{name}"
                obj = objects[path] = object_of(info)
                if old.get(path) != obj:
                    news[path] = obj
            fresh.update(news)
            if on_page is not None and before is not None:
                merged = self._merge(news, old) if news else set()
                told |= merged
                on_page(merged)  # each page, news or not
        self.listings += 1
        if not objects and before is None and not self._prefix_exists(prefix):
            raise FileNotFoundError(f"no objects below {self.url}")
        gone = old.keys() - objects.keys()
        if before is None or gone or (fresh and on_page is None):
            self._view = _View(objects, _dirs_of(objects, self.root, self.owns))
        # A file that came or went changes its directories' listings.
        came = set(fresh) - told
        self._add_parents(came, fresh.keys() - old.keys() - told)
        went = set(gone)
        self._add_parents(went, gone)
        if gone:
            with self._lock:
                for path in gone:
                    self._forget(path)
                    self._seen.discard(path)
        return came | went

    def _add_parents(self, paths: set[str], of: Iterable[str]) -> None:
        """Add to ``paths`` the directories above each of ``of``, up to the root."""
        done: set[str] = set()
        for path in of:
            parent = path.rpartition("/")[0]
            while self.owns(parent) and parent not in done:
                done.add(parent)
                parent = parent.rpartition("/")[0]
        paths |= done

    def _merge(self, news: dict[str, Obj], listed: Mapping[str, Obj]) -> set[str]:
        """Put one page's new and changed objects into the listing readers see
        (a new view: readers holding the last one keep it whole); their paths
        and those of the directories they come into."""
        view = self._view
        assert view is not None
        came = news.keys() - listed.keys()
        grown: dict[str, set[str]] = {}
        for path in came:
            _enter(grown, path, self.root, self.owns, view.dirs)
        dirs = {**view.dirs, **{d: tuple(sorted(names)) for d, names in grown.items()}}
        self._view = _View({**view.objects, **news}, dirs)
        told = set(news)
        self._add_parents(told, came)
        return told

    def _pages(self, prefix: str) -> Iterator[list[tuple[str, Mapping[str, Any]]]]:
        """Every object below ``prefix`` (``bucket/key``), a page at a time: its
        ``bucket/key`` and what the listing says of it. On S3, ``ListObjectsV2``'s
        pages as they come (no directories made up); elsewhere fsspec's ``find``,
        one page."""
        if not s3client.lists_plainly(self.store, self.protocol):
            yield list(self.store.find(prefix, detail=True).items())
            return
        from fsspec.asyn import sync

        bucket, _, key = prefix.partition("/")
        pages = s3client.list_pages(self.store, bucket, key + "/" if key else "")
        try:
            while True:
                try:
                    contents = sync(self.store.loop, pages.__anext__)
                except StopAsyncIteration:
                    return
                yield [(f"{bucket}/{c['Key']}", c) for c in contents]
        finally:
            sync(self.store.loop, pages.aclose)

    def _prefix_exists(self, prefix: str) -> bool:
        """An empty listing: the prefix may be empty, or its bucket missing."""
        bucket = prefix.partition("/")[0]
        try:
            return bool(self.store.exists(bucket)) if hasattr(self.store, "exists") else True
        except Exception:
            return True

    def refresh(self, on_page: Callable[[set[str]], None] | None = None) -> set[str]:
        """List again (one listing, once per poll); the paths that changed
        (see :meth:`_list` for ``on_page``).

        When the store cannot be listed, the last listing stays (nothing is
        taken for gone; pages already told stay in), the cause is one
        warning line, and listing is tried again with backoff.
        """
        with self._list_lock:
            now = time.monotonic()
            if now < self._next_try:
                return set()
            self.listed_at = now
            try:
                changed = self._list(on_page)
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
            with self._lock:
                retry, self._retry = self._retry, set()
            return changed | retry

    def _listing(self) -> _View:
        view = self._view
        if view is None:
            with self._list_lock:
                if self._view is None:
                    self.listed_at = time.monotonic()
                    try:
                        self._list()
                    except Exception as e:
                        raise OSError(
                            f"cannot list {self.url}: {describe_store_error(e, self.url)}"
                        ) from e
                view = self._view
        return view  # type: ignore[return-value]

    # -- the FileSystem interface ----------------------------------------------

    def stat(self, path: str) -> Stat | None:
        try:
            view = self._listing()
        except OSError:
            return None
        obj = view.objects.get(path)
        if obj is not None:
            return Stat(obj.size, obj.mtime_ns + self._bump.get(path, 0), False, True)
        st = view.dir_stats.get(path)
        if st is None:
            names = view.dirs.get(path)
            if names is None:
                return None
            st = view.dir_stats[path] = Stat(len(names), _dir_key(names), True, False)
        return st

    def scandir(self, path: str) -> list[Entry]:
        view = self._listing()
        objects = view.objects
        names = view.dirs.get(path)
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
        view = self._listing()
        obj = view.objects.get(path)
        if obj is None:
            if path in view.dirs:
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
            shared = self._shared_bytes(obj)
            if shared is not None:
                self._seen.add(path)
                return shared[offset:end]
        if alike and offset == 0 and path not in self._seen and obj.size <= PREFETCH_MAX:
            data = self._fetch_alike(view, path, obj)
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
            if fetch == 0 and len(data) == obj.size:
                self._share(obj, data)
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

    def _fetch_alike(self, view: _View, path: str, obj: Obj) -> bytes | None:
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
        objects = view.objects
        wanted = [(path, obj)]
        total = obj.size
        contents = {content_key(obj)} - {None}
        if getattr(self.store, "async_impl", False):
            shapes = view.shapes
            if shapes is None:
                shapes = {}
                for p in objects:
                    shapes.setdefault(_shape(p), []).append(p)
                view.shapes = shapes
            for other in shapes.get(_shape(path), ()):
                o = objects.get(other)
                if other == path or other in self._seen or o is None or o.size > PREFETCH_MAX:
                    continue
                cached = self._reads.get(other)
                if cached is not None and cached[0] == o.etag:
                    continue
                key = content_key(o)
                if key is not None and (key in contents or key in self._shared):
                    continue  # the same bytes as one fetched (see _read)
                if key is not None:
                    contents.add(key)
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
                    self._share(o, data)
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

    def _shared_bytes(self, obj: Obj) -> bytes | None:
        key = content_key(obj)
        data = self._shared.get(key) if key is not None else None
        if data is not None:
            self._shared.move_to_end(key)
        return data

    def _share(self, obj: Obj, data: bytes) -> None:
        """Keep ``data`` for every object with ``obj``'s ETag, once its MD5 is
        that ETag (a store whose hex ETags are no digest, or an object
        rewritten at the same size since it was listed, never shares)."""
        key = content_key(obj)
        if key is None or key in self._shared or not is_digest_of(obj.etag, data):
            return
        self._shared[key] = data
        self._shared_size += len(data)
        while self._shared_size > SHARED_BYTES:
            _, dropped = self._shared.popitem(last=False)
            self._shared_size -= len(dropped)

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
    """The monitor's change feed for runs in object storage: each :meth:`take`
    lists every store once (see the module's docstring), so a poll of the
    monitor is a listing. For a monitor that polls in a loop of its caller's;
    ``runsmon serve`` lists in the background (:class:`BackgroundListing`).

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
        return self.list_all()

    def list_all(self, on_page: Callable[[set[str]], None] | None = None) -> set[str]:
        """One listing of every store now; the paths that changed."""
        changed: set[str] = set()
        for store in self.stores:
            changed |= store.refresh(on_page)
        return changed

    def set_watches(self, wanted: Iterable[tuple[str, bool]]) -> set[tuple[str, bool]]:
        return set()

    def retry_failed(self) -> None:
        pass


class _Stopped(BaseException):
    """The feed was stopped during a listing: it ends the listing at once
    (a BaseException, so that no store takes it for a failed listing)."""


class BackgroundListing(ListingFeed):
    """A :class:`ListingFeed` whose listings run in a thread of their own, one
    every ``interval`` seconds (from one's start to the next, however long a
    listing takes), each page handed on as it comes: ``on_change`` is called
    as soon as a page holds news, and :meth:`take` gives what was found
    since the last call, at once.

    So a change waits for its page to be listed again: ``interval``, or the
    length of a listing when one takes longer (or the backoff after a
    failed one), not for the rest of a listing and a poll besides. The
    first listing comes ``interval`` after the stores' last one (the
    monitor's first sync lists them).
    """

    def __init__(
        self,
        stores: list[ObjectStoreFileSystem],
        interval: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(stores)
        self.interval = interval
        self.on_change = on_change
        self._found: set[str] = set()
        self._found_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = threading.Event()  # its own: an old thread still on a page stays stopped
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop,), name="runsmon-listing", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listing; a listing under way ends at its next page (the thread
        is a daemon: a page stuck on the network does not hold the stop up)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(1.0)

    def take(self) -> set[str]:
        with self._found_lock:
            found, self._found = self._found, set()
        return found

    def _loop(self, stop: threading.Event) -> None:
        last = max((s.listed_at for s in self.stores), default=0.0)
        began = last or time.monotonic()

        def tell(paths: set[str]) -> None:
            self._tell(paths)
            if stop.is_set():
                raise _Stopped

        while not stop.wait(max(0.0, began + self.interval - time.monotonic())):
            began = time.monotonic()
            try:
                tell(self.list_all(on_page=tell))
            except _Stopped:
                return
            except Exception as e:  # the stores warn of their own failures
                log.warning("listing failed: %s", e)
                log.debug("listing failure", exc_info=True)

    def _tell(self, paths: set[str]) -> None:
        if not paths:
            return
        with self._found_lock:
            self._found |= paths
        if self.on_change is not None:
            self.on_change()


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
