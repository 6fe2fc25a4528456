"""How an executor task fetches its fragment (``GovernReader.read``, no Spark needed): over a
raw HTTP server on loopback that answers exactly the bytes each test chooses, a whole body
gives every row, and a body cut short — at an Arrow message boundary, where the stream format
itself cannot tell, with a ``Content-Length`` or with chunked framing — fails the task with
``GatewayError`` and yields no row past the cut. A refusal carries the gateway's problem."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from govern_spark.source import (
    ARROW_STREAM,
    Described,
    FragmentPartition,
    GatewayError,
    GovernReader,
    Options,
)
from tests.rawhttp import RawServer, arrow_stream, chunked, head

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
TABLE = pa.table({"id": list(range(30)), "name": [f"n{i}" for i in range(30)]}, schema=SCHEMA)


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    s = RawServer()
    yield s
    s.close()


def _read(server: RawServer) -> list[pa.RecordBatch]:
    options = Options(url=server.url, dataset="d", purpose="p", columns=None, api_key_file=None,
                      api_key_env="UNUSED", timeout=10)
    reader = GovernReader(options, Described(SCHEMA, frozenset()), SCHEMA.names)
    return list(reader.read(FragmentPartition(server.url + "/v1/fragments/0", "gt1.ticket", 10)))


def test_a_whole_body_gives_every_row_with_a_length_orchunked(server: RawServer) -> None:
    body, _ = arrow_stream(TABLE, 10)
    server.answer = head("200 OK", ARROW_STREAM, content_length=str(len(body))) + body
    assert pa.Table.from_batches(_read(server)).equals(TABLE)
    server.answer = head("200 OK", ARROW_STREAM, transfer_encoding="chunked") + chunked(body, last=True)
    assert pa.Table.from_batches(_read(server)).equals(TABLE)


def test_a_body_cut_at_a_message_boundary_fails_the_task(server: RawServer) -> None:
    body, boundary = arrow_stream(TABLE, 10)
    cut = body[:boundary]  # two whole batches: a valid, shorter stream on its own
    assert pa.ipc.open_stream(cut).read_all().num_rows == 20
    server.answer = head("200 OK", ARROW_STREAM, content_length=str(len(body))) + cut
    with pytest.raises(GatewayError, match="cut short"):
        _read(server)
    server.answer = head("200 OK", ARROW_STREAM, transfer_encoding="chunked") + chunked(cut, last=False)
    with pytest.raises(GatewayError, match="cut short"):
        _read(server)


def test_a_stored_fragment_cut_short_fails_before_decoding(server: RawServer) -> None:
    server.answer = head("200 OK", "application/vnd.govern.parquet-fragment", content_length="1000",
                          x_govern_file_size="2000", x_govern_byte_span="4-900",
                          x_govern_row_groups="0-1") + b"\0" * 500
    with pytest.raises(GatewayError, match="cut short"):
        _read(server)


def test_a_refusal_carries_the_gateways_problem(server: RawServer) -> None:
    problem = b'{"type": "https://govern.dev/errors/ticket-stale", "detail": "ask for a new one"}'
    server.answer = head("401 Unauthorized", "application/problem+json", content_length=str(len(problem))) + problem
    with pytest.raises(GatewayError, match=r"401 .*ticket-stale: ask for a new one"):
        _read(server)
