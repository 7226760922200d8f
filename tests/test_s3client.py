"""runsmon's own S3 client: quick timestamps (with botocore's parser behind them)."""

from __future__ import annotations

import datetime

import pytest

from runsmon import s3client
from runsmon.s3client import parse_timestamp

botocore_utils = pytest.importorskip("botocore.utils")

UTC = datetime.timezone.utc


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-30T14:20:00.000Z",
        "2026-11-30T14:20:00Z",
        "2026-11-30T14:20:00.123456Z",
        "1999-01-01T00:00:59.999Z",
        "Mon, 30 Nov 2026 14:20:00 GMT",
        "Sun, 01 Feb 2026 00:00:09 GMT",
        "Wed, 29 Feb 2024 23:59:59 GMT",
    ],
)
def test_quick_forms_read_as_botocore_reads_them(text, monkeypatch):
    expected = botocore_utils.parse_timestamp(text)
    monkeypatch.setattr(botocore_utils, "parse_timestamp", _not_called)
    got = parse_timestamp(text)
    assert got == expected
    assert got.utcoffset() == datetime.timedelta(0)


def _not_called(value):
    raise AssertionError(f"botocore's parser asked for {value!r}")


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T15:20:00+01:00",  # an offset
        "2026-11-30T14:20:00.12Z",  # two digits below the second
        "Monday, 30-Nov-26 14:20:00 GMT",  # RFC 850
        "30 Nov 2026 14:20:00 GMT",  # no weekday
        1796048400,  # an epoch
        "1796048400",
    ],
)
def test_other_forms_go_to_botocore(value, monkeypatch):
    asked = []
    real = botocore_utils.parse_timestamp

    def spy(v):
        asked.append(v)
        return real(v)

    monkeypatch.setattr(botocore_utils, "parse_timestamp", spy)
    got = parse_timestamp(value)
    assert asked == [value]
    assert got == real(value)


@pytest.mark.parametrize(
    "text", ["2026-02-30T14:20:00.000Z", "Mon, 31 Nov 2026 14:20:00 GMT", "nonsense", ""]
)
def test_bad_timestamps_fail_as_botocore_fails(text):
    with pytest.raises(ValueError):
        botocore_utils.parse_timestamp(text)
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_only_runsmons_client_parses_quickly(monkeypatch):
    s3fs = pytest.importorskip("s3fs")
    from runsmon.remotefs import ObjectStoreFileSystem

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    other = s3fs.S3FileSystem()  # made by someone else, cached by fsspec
    fs = ObjectStoreFileSystem("s3://bucket/runs")
    assert fs.store is not other and other.session is None
    factory = fs.store.session.get_component("response_parser_factory")
    assert factory._defaults["timestamp_parser"] is parse_timestamp
    client = fs.store.s3  # the client, made now (no request)
    parser = client._endpoint._response_parser_factory.create_parser("rest-xml")
    assert parser._timestamp_parser is parse_timestamp  # what reads its responses
    assert not s3client.use_quick_timestamps(fs.store)  # once, before its client
    given = ObjectStoreFileSystem("s3://bucket/runs", store=other)
    assert given.store.session is None  # a store given is left as it is
