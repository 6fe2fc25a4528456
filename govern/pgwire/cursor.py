"""The rows of one started statement, encoded for the wire a piece at a time.

A cursor pulls Arrow record batches and turns them into DataRow messages, so a portal can be
suspended after any number of rows (``Execute`` with a row limit). When it draws from an
audited stream (:meth:`govern.deliver.lifecycle.Exchange.stream`), that stream writes the
statement's one audit record: ``ok`` once the last batch has been encoded (before
CommandComplete is sent), ``aborted`` if the cursor is closed before that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from govern.pgwire.protocol import data_rows, row_description
from govern.pgwire.session import LocalResult, Session
from govern.pgwire.types import TEXT, PgType, column_encoder, pg_type_of

__all__ = ["CHUNK_ROWS", "Columns", "Cursor"]

CHUNK_ROWS = 2048  # rows encoded per step of a stream

Columns = list[tuple[str, pa.DataType | None]]


@dataclass
class Cursor:
    columns: Columns | None  # None: the statement returns no rows
    batches: Iterator[pa.RecordBatch] = field(default_factory=lambda: iter(()))
    tag: str = "SELECT"  # CommandComplete tag (SELECT n for row sets)
    local: LocalResult | None = None
    release: Callable[[], None] | None = None  # stop the source (close the audited stream)
    rows: int = 0  # rows encoded so far (what the audit record counts)
    nbytes: int = 0  # bytes encoded so far
    sent: int = 0  # rows handed to the connection (what CommandComplete counts)
    finished: bool = False
    closed: bool = False
    notices: list[str] = field(default_factory=list)  # NoticeResponses sent before CommandComplete
    _encoders: list[Callable[[pa.Array], list[bytes | None]]] | None = None
    _pending: list[bytes] = field(default_factory=list)
    _exhausted: bool = False

    def types(self) -> list[tuple[str, PgType]]:
        assert self.columns is not None
        return [(name, pg_type_of(t) if t is not None else TEXT) for name, t in self.columns]

    def row_description(self, formats: list[int]) -> bytes:
        return describe_rows(self.columns or [], formats)

    def prepare(self, formats: list[int], session: Session) -> None:
        """Choose text/binary encoders for the result columns (raises for unsupported binary)."""
        if self.columns is not None and self._encoders is None:
            self._encoders = [column_encoder(t if t is not None else pa.string(), result_format(formats, i) == 1,
                                             session.tz) for i, (_n, t) in enumerate(self.columns)]

    def fetch(self, max_rows: int) -> tuple[bytes, int, bool]:
        """Up to ``max_rows`` (0: a chunk) DataRows, how many, and ``True`` once the last row is
        out. Blocking."""
        assert self._encoders is not None
        want = max_rows or CHUNK_ROWS
        # one batch of lookahead: a result of exactly ``want`` rows ends now (CommandComplete and
        # an ``ok`` audit record), not at a later Execute that a client may never send
        while len(self._pending) <= want and not self._exhausted:
            try:
                batch = next(self.batches)
            except StopIteration:
                self._exhausted = True
                break
            if batch.num_rows:
                encoded = [enc(col) for enc, col in zip(self._encoders, batch.columns, strict=True)]
                rows = _split_rows(encoded, batch.num_rows)
                self.rows += len(rows)
                self.nbytes += sum(len(r) for r in rows)
                self._pending.extend(rows)
        out, self._pending = self._pending[:want], self._pending[want:]
        self.sent += len(out)
        done = self._exhausted and not self._pending
        if done:
            self.finished = True
            self.closed = True
        return b"".join(out), len(out), done

    def command_tag(self) -> str:
        return f"SELECT {self.sent}" if self.tag == "SELECT" else self.tag

    def close(self) -> None:
        """Stop the statement: an audited source records the rows it did not deliver as aborted."""
        if self.closed:
            return
        self.closed = True
        if self.release is not None:
            self.release()


def describe_rows(columns: Columns, formats: list[int]) -> bytes:
    types = [(name, pg_type_of(t) if t is not None else TEXT) for name, t in columns]
    return row_description([(n, pg, result_format(formats, i)) for i, (n, pg) in enumerate(types)])


def result_format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else formats[i] if i < len(formats) else 0


def _split_rows(encoded: list[list[bytes | None]], n: int) -> list[bytes]:
    data = data_rows(encoded, n)
    # DataRow messages are self-delimiting: cut the joined bytes back into one piece per row.
    out, pos = [], 0
    for _ in range(n):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append(data[pos:pos + 1 + length])
        pos += 1 + length
    return out
