"""The Flight SQL protocol messages govern reads and writes, as protobuf classes.

Python has no Flight SQL server layer (apache/arrow#37700) and pyarrow ships no generated
classes for ``FlightSql.proto``, so the messages the server needs are declared here as a
table — name, then each field as (name, number, type, flags) — from which ``protobuf`` builds
real message classes at start-up (``descriptor_pb2`` → ``message_factory``): the encoding is
protobuf's, not ours. Field numbers and types follow ``format/FlightSql.proto`` (package
``arrow.flight.protocol.sql``) and the session-option messages of ``format/Flight.proto``
(package ``arrow.flight.protocol``).

A command travels as a ``google.protobuf.Any`` whose type URL names the message; :func:`unpack`
returns the message's short name and the decoded message, :func:`pack` the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from govern.errors import InvalidRequest

__all__ = ["SQL_PACKAGE", "Messages", "blob", "flag", "pack", "text", "unpack", "values"]

SQL_PACKAGE = "arrow.flight.protocol.sql"
FLIGHT_PACKAGE = "arrow.flight.protocol"
TYPE_URL = "type.googleapis.com/"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL, "uint32": _F.TYPE_UINT32,
          "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "sfixed64": _F.TYPE_SFIXED64, "double": _F.TYPE_DOUBLE}

# (message, ((field, number, type, flags), ...)); flags: "optional" (proto3 presence),
# "repeated", "oneof:NAME"; a type that is not a scalar names another message of the file,
# "map:K:V" a map field.
_SQL_MESSAGES: tuple[tuple[str, tuple[tuple[str, int, str, str], ...]], ...] = (
    ("CommandGetSqlInfo", (("info", 1, "uint32", "repeated"),)),
    ("CommandGetXdbcTypeInfo", (("data_type", 1, "int32", "optional"),)),
    ("CommandGetCatalogs", ()),
    ("CommandGetDbSchemas", (("catalog", 1, "string", "optional"),
                             ("db_schema_filter_pattern", 2, "string", "optional"))),
    ("CommandGetTables", (("catalog", 1, "string", "optional"), ("db_schema_filter_pattern", 2, "string", "optional"),
                          ("table_name_filter_pattern", 3, "string", "optional"),
                          ("table_types", 4, "string", "repeated"), ("include_schema", 5, "bool", ""))),
    ("CommandGetTableTypes", ()),
    ("CommandGetPrimaryKeys", (("catalog", 1, "string", "optional"), ("db_schema", 2, "string", "optional"),
                               ("table", 3, "string", ""))),
    ("CommandGetExportedKeys", (("catalog", 1, "string", "optional"), ("db_schema", 2, "string", "optional"),
                                ("table", 3, "string", ""))),
    ("CommandGetImportedKeys", (("catalog", 1, "string", "optional"), ("db_schema", 2, "string", "optional"),
                                ("table", 3, "string", ""))),
    ("CommandGetCrossReference", ()),
    ("CommandStatementQuery", (("query", 1, "string", ""), ("transaction_id", 2, "bytes", "optional"))),
    ("CommandStatementSubstraitPlan", ()),
    ("CommandStatementUpdate", (("query", 1, "string", ""), ("transaction_id", 2, "bytes", "optional"))),
    ("CommandStatementIngest", ()),
    ("TicketStatementQuery", (("statement_handle", 1, "bytes", ""),)),
    ("CommandPreparedStatementQuery", (("prepared_statement_handle", 1, "bytes", ""),)),
    ("CommandPreparedStatementUpdate", (("prepared_statement_handle", 1, "bytes", ""),)),
    ("DoPutPreparedStatementResult", (("prepared_statement_handle", 1, "bytes", "optional"),)),
    ("ActionCreatePreparedStatementRequest", (("query", 1, "string", ""), ("transaction_id", 2, "bytes", "optional"))),
    ("ActionCreatePreparedStatementResult", (("prepared_statement_handle", 1, "bytes", ""),
                                             ("dataset_schema", 2, "bytes", ""), ("parameter_schema", 3, "bytes", ""))),
    ("ActionClosePreparedStatementRequest", (("prepared_statement_handle", 1, "bytes", ""),)),
)

_FLIGHT_MESSAGES: tuple[tuple[str, tuple[tuple[str, int, str, str], ...]], ...] = (
    ("StringListValue", (("values", 1, "string", "repeated"),)),
    ("SessionOptionValue", (("string_value", 1, "string", "oneof:option_value"),
                            ("bool_value", 2, "bool", "oneof:option_value"),
                            ("int64_value", 3, "sfixed64", "oneof:option_value"),
                            ("double_value", 4, "double", "oneof:option_value"),
                            ("string_list_value", 5, "StringListValue", "oneof:option_value"))),
    ("SetSessionOptionsRequest", (("session_options", 1, "map:string:SessionOptionValue", ""),)),
    ("SetSessionOptionsError", (("value", 1, "int32", ""),)),
    ("SetSessionOptionsResult", (("errors", 1, "map:string:SetSessionOptionsError", ""),)),
    ("GetSessionOptionsRequest", ()),
    ("GetSessionOptionsResult", (("session_options", 1, "map:string:SessionOptionValue", ""),)),
    ("CloseSessionRequest", ()),
    ("CloseSessionResult", (("status", 1, "int32", ""),)),
)


def _file(name: str, package: str, messages: tuple[tuple[str, tuple[tuple[str, int, str, str], ...]], ...]
          ) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    for message_name, fields in messages:
        message = proto.message_type.add(name=message_name)
        oneofs: dict[str, int] = {}
        for field_name, number, kind, flags in fields:
            field = message.field.add(name=field_name, number=number, json_name=field_name)
            field.label = _F.LABEL_REPEATED if flags == "repeated" else _F.LABEL_OPTIONAL
            if kind.startswith("map:"):
                _key, key_type, value_type = kind.split(":")
                entry = message.nested_type.add(name=_camel(field_name) + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_TYPES[key_type], json_name="key")
                value = entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, json_name="value")
                _set_type(value, value_type, package)
                field.label = _F.LABEL_REPEATED
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{package}.{message_name}.{entry.name}"
            else:
                _set_type(field, kind, package)
            if flags == "optional":  # proto3 ``optional``: a synthetic one-field oneof gives presence
                field.proto3_optional = True
                field.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name="_" + field_name)
            elif flags.startswith("oneof:"):
                group = flags.split(":", 1)[1]
                if group not in oneofs:
                    oneofs[group] = len(message.oneof_decl)
                    message.oneof_decl.add(name=group)
                field.oneof_index = oneofs[group]
    return proto


def _set_type(field: descriptor_pb2.FieldDescriptorProto, kind: str, package: str) -> None:
    if kind in _TYPES:
        field.type = _TYPES[kind]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{package}.{kind}"


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True)
class Messages:
    """Message classes by short name (``CommandStatementQuery``, ``SessionOptionValue``, …)."""

    classes: dict[str, type[Message]]

    @classmethod
    def build(cls) -> Messages:
        """Build the classes in a private descriptor pool (no global registration, so two
        servers in one process, or another library's copy of the same protos, never clash)."""
        pool = descriptor_pool.DescriptorPool()
        classes: dict[str, type[Message]] = {}
        for file_name, package, table in (("govern_flight_sql.proto", SQL_PACKAGE, _SQL_MESSAGES),
                                          ("govern_flight_session.proto", FLIGHT_PACKAGE, _FLIGHT_MESSAGES)):
            pool.Add(_file(file_name, package, table))
            for message_name, _fields in table:
                descriptor = pool.FindMessageTypeByName(f"{package}.{message_name}")
                classes[message_name] = message_factory.GetMessageClass(descriptor)
        return cls(classes)

    def new(self, name: str, **fields: object) -> Message:
        return self.classes[name](**fields)

    def parse(self, name: str, data: bytes) -> Message:
        """``data`` as message ``name``; malformed bytes are a clean 400, never a crash."""
        message = self.classes[name]()
        try:
            message.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError):
            raise InvalidRequest(f"malformed {name} message") from None
        return message


def pack(message: Message) -> bytes:
    """``message`` wrapped in a ``google.protobuf.Any`` and serialized (a command or ticket)."""
    wrapper = any_pb2.Any(type_url=TYPE_URL + message.DESCRIPTOR.full_name, value=message.SerializeToString())
    return wrapper.SerializeToString()


def unpack(messages: Messages, data: bytes) -> tuple[str, Message | None]:
    """The short name of the Flight SQL message in ``data`` (an ``Any``) and the message, or
    ``(type name, None)`` for a message of the protocol this server does not decode."""
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        raise InvalidRequest("the command is not a Flight SQL message (a google.protobuf.Any)") from None
    full = wrapper.type_url.rsplit("/", 1)[-1]
    package, _, name = full.rpartition(".")
    if package != SQL_PACKAGE or not name:
        raise InvalidRequest("the command is not a Flight SQL message" + (f" ({full[:100]})" if full else ""))
    if name not in messages.classes:
        return name, None
    return name, messages.parse(name, wrapper.value)


def text(message: Message, name: str) -> str:
    """A string field of a message built at run time (typed for the checker)."""
    return str(getattr(message, name))


def blob(message: Message, name: str) -> bytes:
    return bytes(getattr(message, name))


def flag(message: Message, name: str) -> bool:
    return bool(getattr(message, name))


def values(message: Message, name: str) -> list[object]:
    """A repeated field's values."""
    return list(getattr(message, name))
