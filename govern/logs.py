"""Structured JSON logs with the request id. Never log secrets: records carry only the fields
passed in ``extra`` and the message; tokens and keys are never passed.

:func:`configure_logging` (``create_app``) gives govern's own loggers their JSON handler.
:func:`log_everything_as_json` is for a process govern owns (``govern serve``, and the worker
processes it spawns: SQL workers, synthetic fits): every logger (uvicorn, sqlglot, SDV, …),
Python warnings and uncaught exceptions, in threads too, become one JSON object per line, a
traceback being a field of its line. It sits below every room (it imports nothing of govern),
so the processes of ``sql`` and ``privacy`` use it as the server does.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from types import TracebackType

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("govern_request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                         "color_message"}  # uvicorn's ANSI copy


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        rid = request_id_var.get()
        if rid:
            body["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "error"
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _message(record: logging.LogRecord) -> str:
    """The record's message; a library's format/argument mismatch is logged as it came, not as
    a plain-text "Logging error" report on stderr."""
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        return f"{record.msg} {record.args!r}"


def configure_logging(level: str = "info") -> None:
    root = logging.getLogger("govern")
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def log_everything_as_json(level: str = "info") -> None:
    """Send every log record of this process to one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in list(logging.root.manager.loggerDict):  # libraries that brought their own handlers
        logger = logging.getLogger(name)
        if logger.handlers:
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.propagate = True
    logging.getLogger("govern").propagate = True  # its own handler was removed above
    logging.captureWarnings(True)  # warnings.warn(...) → the "py.warnings" logger
    crash = logging.getLogger("govern.crash")

    def uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        crash.critical("uncaught exception", exc_info=(kind, value, tb))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        crash.error("uncaught exception in a thread", exc_info=args.exc_value,
                    extra={"thread_name": args.thread.name if args.thread else None})

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
