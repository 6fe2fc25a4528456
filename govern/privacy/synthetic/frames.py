"""Arrow ↔ pandas for the synthesizer: the learned columns in the form SDV handles well, and
the sampled frame back into the dataset's own Arrow types.

Dates become day numbers and timestamps integers in their unit (see ``roles``); integers use
pandas' nullable ``Int64`` so nulls survive; dictionary strings are plain strings. The way
back casts every column to the type found in storage, so the engine applies the principal's
plan to a table that looks exactly like the real one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from govern.privacy.synthetic.roles import ColumnRole

__all__ = ["SDTYPES", "from_frame", "metadata_dict", "to_frame"]

SDTYPES = {"numerical": "numerical", "integer": "numerical", "date": "numerical", "timestamp": "numerical",
           "categorical": "categorical", "boolean": "boolean"}


def metadata_dict(table_name: str, roles: Sequence[ColumnRole]) -> dict:
    """SDV metadata (spec V2) for the learned columns, written out rather than detected, so the
    synthesizer sees exactly the sdtypes govern chose."""
    columns = {r.name: {"sdtype": SDTYPES[r.kind or ""]} for r in roles if r.role == "model"}
    return {"tables": {table_name: {"columns": columns}}, "relationships": [], "METADATA_SPEC_VERSION": "V2"}


def to_frame(table: pa.Table, roles: Sequence[ColumnRole]) -> pd.DataFrame:
    """The learned columns of ``table`` as a DataFrame SDV can fit."""
    data: dict[str, pd.Series] = {}
    for r in roles:
        if r.role != "model":
            continue
        col = table.column(r.name)
        if r.kind in ("integer", "date", "timestamp"):
            if r.kind == "date" and pa.types.is_date64(col.type):
                col = col.cast(pa.date32())
            as_int = col.cast(pa.int32() if r.kind == "date" else pa.int64()).cast(pa.int64())
            data[r.name] = as_int.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        elif r.kind == "numerical":
            data[r.name] = col.cast(pa.float64()).to_pandas()
        elif r.kind == "categorical":
            data[r.name] = col.cast(pa.string()).to_pandas()
        elif r.kind == "boolean":
            data[r.name] = col.to_pandas()
    return pd.DataFrame(data)


def from_frame(frame: pd.DataFrame, roles: Sequence[ColumnRole], schema: pa.Schema) -> dict[str, pa.Array]:
    """The sampled learned columns, cast back to the types of ``schema``."""
    out: dict[str, pa.Array] = {}
    for r in roles:
        if r.role != "model":
            continue
        target = schema.field(r.name).type
        values = frame[r.name]
        if r.kind in ("integer", "date", "timestamp"):
            numbers = pd.to_numeric(values, errors="coerce").astype("Float64").round().astype("Int64")
            arr = pa.array(numbers, type=pa.int64(), from_pandas=True)
            if r.kind == "date":
                arr = arr.cast(pa.int32()).cast(pa.date32())
            out[r.name] = arr.cast(target)
        elif r.kind == "numerical":
            arr = pa.array(pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan),
                           type=pa.float64(), from_pandas=True)
            if pa.types.is_decimal(target):
                arr = pc.round(arr, ndigits=target.scale)
            out[r.name] = arr.cast(target, safe=False)
        elif r.kind == "categorical":
            out[r.name] = pa.array(values.astype(object), type=pa.string(), from_pandas=True).cast(target)
        elif r.kind == "boolean":
            out[r.name] = pa.array(values.astype(object), type=pa.bool_(), from_pandas=True)
    return out
