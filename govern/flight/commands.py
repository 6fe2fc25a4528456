"""What each Flight SQL command does inside its exchange: describe or run a statement, answer
a metadata question.

Statements go through the same shared steps as ``POST /v1/sql`` and the PostgreSQL wire
(:func:`govern.deliver.queries.run_query` / ``describe_query``: refused before parsing without
a readable dataset, a read slot, one deadline, the SQL worker's sandbox) and differentially
private SQL (a ``/*+ dp epsilon=… */`` hint) the same release
(:func:`govern.deliver.releases.release_table`: audited ``query_dp`` and charged before its first
row is sent). Results stream batch by batch from the SQL worker to the client: memory is
bounded by ``sql_batch_bytes`` and gRPC's flow control, whatever the result's size.

Metadata commands take a read slot too and are audited like the wire's catalog queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import Message

import govern
from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import AuditedStream, Exchange
from govern.deliver.queries import describe_query, note_text, run_query
from govern.deliver.releases import describe_sql, release_table, translate_sql
from govern.errors import GovernError, SqlError
from govern.flight import metadata
from govern.flight.handles import Statement
from govern.flight.messages import flag, text, values
from govern.flight.status import flight_error
from govern.privacy.dp.sql import has_hint

__all__ = ["METADATA", "describe", "metadata_schema", "metadata_table", "run"]

METADATA = frozenset({"CommandGetSqlInfo", "CommandGetCatalogs", "CommandGetDbSchemas", "CommandGetTables",
                      "CommandGetTableTypes"})



def describe(gw: Gateway, ex: Exchange, statement: Statement) -> pa.Schema:
    """The result schema of a statement, computed over empty views: nothing is read or charged."""
    if has_hint(statement.sql):
        ex.action = "query_dp"
        note_text(ex, statement.sql)
        ex.permitted("query_dp")
        translated = translate_sql(ex, statement.sql, epsilon=None)
        ex.admit(seconds=gw.settings.sql_timeout)
        return describe_sql(ex, gw.governor, translated)
    return describe_query(ex, gw.sql_service, statement.sql, statement.values())


def run(gw: Gateway, ex: Exchange, statement: Statement) -> flight.FlightDataStream:
    """Run a statement: a stream whose audit record is written just before its end (``ok``),
    or when the client leaves (``aborted``); DP SQL is released and recorded before it is sent."""
    if has_hint(statement.sql):
        ex.action = "query_dp"
        note_text(ex, statement.sql)
        if statement.values():
            raise SqlError("differentially private SQL takes no parameters", sqlstate="0A000")
        ex.permitted("query_dp")
        translated = translate_sql(ex, statement.sql, epsilon=None)
        return flight.RecordBatchStream(release_table(ex, gw.dp, translated))
    result = run_query(ex, gw.sql_service, statement.sql, statement.values())
    sent = {"rows": 0, "bytes": 0}

    def source(finish: Callable[[int, int], None]) -> Iterator[pa.RecordBatch]:
        for batch in result.reader:
            sent["rows"] += batch.num_rows
            sent["bytes"] += batch.nbytes
            yield batch
        finish(sent["rows"], sent["bytes"])

    try:
        stream = ex.stream(source, close=result.close, progress=lambda: (sent["rows"], sent["bytes"]))
        return flight.GeneratorStream(result.schema, _batches(stream))
    except BaseException:
        result.close()
        raise


def _batches(stream: AuditedStream[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The audited stream as pyarrow pulls it; a client that leaves closes it (``aborted``)."""
    try:
        yield from stream
    except GovernError as exc:
        raise flight_error(exc) from None
    except Exception:
        raise flight.FlightInternalError("the query failed while streaming") from None
    finally:
        stream.close()


def metadata_schema(name: str, command: Message) -> pa.Schema:
    if name == "CommandGetSqlInfo":
        return metadata.SQL_INFO
    if name == "CommandGetCatalogs":
        return metadata.CATALOGS
    if name == "CommandGetDbSchemas":
        return metadata.DB_SCHEMAS
    if name == "CommandGetTables":
        return metadata.TABLES_WITH_SCHEMA if flag(command, "include_schema") else metadata.TABLES
    return metadata.TABLE_TYPES


def catalog_filter(command: Message) -> str | None:
    """The command's catalog (a purpose), if it names one."""
    if command.DESCRIPTOR.fields_by_name.get("catalog") is not None and command.HasField("catalog"):
        return text(command, "catalog")
    return None


def metadata_table(gw: Gateway, ex: Exchange, name: str, command: Message, scope: list[str]) -> pa.Table:
    """The answer to a metadata command, for the purposes in ``scope`` (the catalogs asked
    about). The exchange is authenticated and admitted."""
    principal = ex.principal
    assert principal is not None
    if name == "CommandGetSqlInfo":
        settings = gw.settings
        info = metadata.server_info(version=govern.__version__, arrow_version=pa.__version__,
                                    statement_timeout_ms=int(settings.sql_timeout * 1000),
                                    max_statement_length=settings.sql_max_length)
        return metadata.sql_info_table(info, [int(str(i)) for i in values(command, "info")])
    if name == "CommandGetCatalogs":
        return metadata.catalogs_table(ex.state.decider.purposes(principal))
    if name == "CommandGetDbSchemas":
        return metadata.db_schemas_table(scope, _optional(command, "db_schema_filter_pattern"))
    if name == "CommandGetTables":
        assert ex.deadline is not None
        tables = {p: gw.sql_service.tables(principal, p, ex.state.policy, deadline=ex.deadline.at,
                                           settings=gw.settings) for p in scope}
        return metadata.tables_table(tables, schema_pattern=_optional(command, "db_schema_filter_pattern"),
                                     table_pattern=_optional(command, "table_name_filter_pattern"),
                                     table_types=[str(t) for t in values(command, "table_types")],
                                     include_schema=flag(command, "include_schema"))
    return metadata.table_types_table()


def _optional(command: Message, field: str) -> str | None:
    return text(command, field) if command.HasField(field) else None
