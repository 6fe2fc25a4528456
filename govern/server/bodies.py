"""Request bodies of the JSON routes: read with a size limit, parse, validate — every failure a
problem (``413 limit-exceeded``, ``400 invalid-request`` naming the first bad field), never a
stack trace or a body read whole before its size is known."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from govern.errors import InvalidRequest, LimitExceeded

__all__ = ["load_json", "parse", "read_body", "validate"]

Model = TypeVar("Model", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it (or its declared length) passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(f"the request body may be at most {limit} bytes", limit=limit)
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(f"the request body may be at most {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(raw: bytes, shape: str = "") -> Any:
    """``raw`` as JSON (empty: null); ``shape`` shows the expected object in the error."""
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body must be a JSON object" + (f": {shape}" if shape else "")) from None


def validate(model: type[Model], data: Any) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid value')}") from None


def parse(model: type[Model], raw: bytes) -> Model:
    return validate(model, load_json(raw))
