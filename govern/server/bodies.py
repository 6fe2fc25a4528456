"""Request bodies of the JSON routes, after they were read (:func:`govern.server.exchange.read_body`)
and decoded (:func:`govern.server.exchange.load_json`): validation against the route's model,
every failure a ``400 invalid-request`` naming the first bad field, never a stack trace."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from govern.errors import InvalidRequest

__all__ = ["validate"]

Model = TypeVar("Model", bound=BaseModel)


def validate(model: type[Model], data: Any) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid value')}") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None
