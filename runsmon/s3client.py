"""runsmon's own S3 client (through s3fs): quick timestamps and plain listings.

Listing 15,000 keys through s3fs's ``find`` cost the client more CPU than the
store took to answer: botocore parses every ``LastModified`` with dateutil,
and ``find`` makes up every directory of every key. Here the client parses
the two forms S3 sends (ISO 8601 in listings, RFC 1123 in headers) directly
(:func:`parse_timestamp`, set on a session of runsmon's own by
:func:`use_quick_timestamps`), and :func:`list_pages` pages
``ListObjectsV2`` and gives each page's ``Contents`` as it comes
(:func:`list_objects`: all of them at once).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator
from typing import Any

#: Schemes s3fs serves.
S3_SCHEMES = frozenset({"s3", "s3a"})

_UTC = datetime.timezone.utc
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}|\.\d{6})?Z\Z")
_RFC = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) ([A-Z][a-z]{2}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT\Z"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


def _quick(value: str) -> datetime.datetime | None:
    """ISO 8601 (``...T14:20:00.000Z``) or RFC 1123 (``... 14:20:00 GMT``), else None."""
    if _ISO.match(value):
        return datetime.datetime.fromisoformat(value[:-1] + "+00:00")  # as Python 3.10 reads it
    m = _RFC.match(value)
    if m is None or m.group(2) not in _MONTHS:
        return None
    day, month, year, hour, minute, second = m.groups()
    return datetime.datetime(
        int(year),
        _MONTHS[month],
        int(day),
        int(hour),
        int(minute),
        int(second),
        tzinfo=_UTC,
    )


def parse_timestamp(value: Any) -> datetime.datetime:
    """A timestamp of an S3 response as a tz-aware datetime (UTC for the two
    forms S3 sends); what it cannot read quickly, botocore's own parser reads
    (and judges).

    >>> parse_timestamp("2026-11-30T14:20:00.000Z")
    datetime.datetime(2026, 11, 30, 14, 20, tzinfo=datetime.timezone.utc)
    >>> parse_timestamp("Mon, 30 Nov 2026 14:20:00 GMT")
    datetime.datetime(2026, 11, 30, 14, 20, tzinfo=datetime.timezone.utc)
    >>> parse_timestamp("2026-11-30T15:20:00+01:00") == parse_timestamp("2026-11-30T14:20:00Z")
    True
    >>> parse_timestamp(1796048400).timestamp()  # an epoch: botocore's parser
    1796048400.0
    """
    if isinstance(value, str):
        try:
            quick = _quick(value)
        except ValueError:  # a day or an hour out of range: botocore says how
            quick = None
        if quick is not None:
            return quick
    from botocore.utils import parse_timestamp as botocore_parse

    return botocore_parse(value)


def use_quick_timestamps(store: Any) -> bool:
    """Give an s3fs filesystem that has no client yet a session of its own whose
    clients parse timestamps with :func:`parse_timestamp`; whether it did.

    The session is made as s3fs makes its own (with its extra options, such
    as ``profile``), and kept when s3fs renews its client.
    """
    if getattr(store, "_s3", True) is not None or getattr(store, "session", True) is not None:
        return False
    try:
        import aiobotocore.session
    except ImportError:
        return False
    session = aiobotocore.session.AioSession(**getattr(store, "kwargs", {}))
    factory = session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    store.session = session
    store._session_is_owned = False  # renewing the client keeps this session
    return True


def lists_plainly(store: Any, protocol: str) -> bool:
    """Whether :func:`list_objects` can list this store (s3fs, not version-aware)."""
    return (
        protocol in S3_SCHEMES
        and hasattr(store, "_call_s3")
        and getattr(store, "async_impl", False)
        and not getattr(store, "version_aware", False)
    )


async def list_objects(store: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object below ``prefix`` in ``bucket`` as ``ListObjectsV2`` gives it
    (``Key``, ``Size``, ``ETag``, ``LastModified``...): one request a page of
    1,000, each retried as s3fs retries any request."""
    out: list[dict[str, Any]] = []
    async for page in list_pages(store, bucket, prefix):
        out += page
    return out


async def list_pages(store: Any, bucket: str, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
    """:func:`list_objects` a page at a time, in key order, each as it comes."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **store.req_kw}
    while True:
        page = await store._call_s3("list_objects_v2", **kwargs)
        yield list(page.get("Contents", ()))
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")
        if not token or token == kwargs.get("ContinuationToken"):
            # botocore's own paginator stops here too: a store that says "more"
            # and gives no new place to go on from would be listed forever.
            raise OSError(f"the listing of s3://{bucket}/{prefix} stopped giving pages")
        kwargs["ContinuationToken"] = token
