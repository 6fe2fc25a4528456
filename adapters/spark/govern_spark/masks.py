"""Masks as Spark ``Column`` expressions, where Spark's built-ins give exactly govern's bytes.

One function per mask, listed once in :data:`EXPRESSIONS`. Each takes the raw column (a Spark
Column), the mask's parameters and the column's Arrow type as the plan records it, and returns
the masked Column — or raises :class:`NotExact`, and the column is then computed by govern's own
Arrow kernels on the executors (``mapInArrow``, :mod:`govern_spark.stage`), so the bytes are the
gateway's by construction. A mask missing from the table is always computed that way.

Why these and not the others:

* keyed masks (``hash``, ``tokenize``, ``noise``, ``date_shift``, ``randomized_response``) need
  the masking keys, and a Spark expression could only hold them as literals of the query plan;
* ``regex_replace``: govern's patterns are RE2; Java's ``java.util.regex`` differs (``$1``
  versus ``\\1``, possessive quantifiers, character classes), so results could differ;
* everything kept here is exact: code points on both sides (Spark's ``UTF8String`` counts code
  points as Arrow's ``utf8_*`` kernels do), integer arithmetic checked by ANSI mode exactly where
  Arrow's checked kernels raise, floors computed in doubles without Spark's ``floor → bigint``.

Session-time-zone independence: truncating an instant (``generalize`` on a ``TimestampType``)
happens in UTC, as govern does, through its microseconds since the epoch — never through
``date_trunc``, which would read the session's zone.
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from govern.mask import function as family
from govern_spark.predicates import NotExact
from govern_spark.types import spark_type

__all__ = ["EXPRESSIONS", "can_fail", "to_column"]

MaskExpression = Callable[[Column, Mapping[str, Any], pa.DataType, bool], Column]
_DAY_US = 86_400_000_000


def _null(x: Column, params: Mapping[str, Any], t: pa.DataType, ansi: bool) -> Column:
    return F.lit(None).cast(spark_type(t))


def _redact(x: Column, params: Mapping[str, Any], t: pa.DataType, ansi: bool) -> Column:
    return F.when(x.isNotNull(), F.lit(params.get("value", "REDACTED")))


def _email_domain(x: Column, params: Mapping[str, Any], t: pa.DataType, ansi: bool) -> Column:
    # '*@' + what follows the last '@'; '*' without one; NULL stays NULL
    with_at = F.concat(F.lit("*@"), F.substring_index(x, "@", -1))
    return F.when(F.instr(x, "@") > 0, with_at).when(x.isNotNull(), F.lit("*"))


def _text(x: Column, t: pa.DataType) -> Column:
    """govern's canonical text for strings and integers (decimal digits, as Arrow's cast)."""
    return x if family.type_family(t) == family.STRING else x.cast(T.StringType())


def _show(last: bool) -> MaskExpression:
    def expression(x: Column, params: Mapping[str, Any], t: pa.DataType, ansi: bool) -> Column:
        n, mask_char = int(params.get("n", 4)), params.get("mask_char", "*")
        text = _text(x, t)
        pad = F.repeat(F.lit(mask_char), F.greatest(F.length(text) - F.lit(n), F.lit(0)))
        kept = F.right(text, F.lit(n)) if last else F.substring(text, 1, n)
        return F.concat(pad, kept) if last else F.concat(kept, pad)

    return expression


def _generalize(x: Column, params: Mapping[str, Any], t: pa.DataType, ansi: bool) -> Column:
    vt = t.value_type if pa.types.is_dictionary(t) else t
    fam = family.type_family(vt)
    if fam == family.STRING:
        return F.substring(x, 1, int(params["prefix"]))
    if fam == family.DATE:
        return F.trunc(x, params["date"])
    if fam == family.TIMESTAMP and vt.tz is None:  # wall clock: no zone is involved
        return F.trunc(x.cast(T.DateType()), params["date"]).cast(T.TimestampNTZType())
    if fam == family.TIMESTAMP:  # an instant: truncate its UTC wall clock, whatever the session zone
        micros = F.unix_micros(x)
        days = F.round((micros - F.pmod(micros, F.lit(_DAY_US))) / F.lit(_DAY_US)).cast(T.IntegerType())
        start = F.trunc(F.date_from_unix_date(days), params["date"])
        return F.timestamp_micros(F.unix_date(start).cast(T.LongType()) * F.lit(_DAY_US))
    if fam == family.FLOAT:
        bucket = float(params["bucket"])
        q = x.cast(T.DoubleType()) / F.lit(bucket)
        # floor in doubles: Spark's floor(double) is a bigint. |q| ≥ 2**52 (and ±inf, NaN) is
        # already whole; a zero keeps its sign, as Arrow's floor does
        whole = F.when((q == 0) | (F.abs(q) >= F.lit(2.0**52)) | F.isnan(q), q) \
            .otherwise(F.floor(q).cast(T.DoubleType()))
        return (whole * F.lit(bucket)).cast(spark_type(vt))
    if not ansi:
        raise NotExact("integer and decimal buckets overflow silently without ANSI mode")
    if fam == family.INTEGER:
        bucket_i = int(params["bucket"])
        wide = x.cast(T.LongType())
        return (wide - F.pmod(wide, F.lit(bucket_i))).cast(spark_type(vt))  # ANSI: raises if it does not fit
    if fam == family.DECIMAL:
        b = F.lit(decimal.Decimal(str(params["bucket"])))
        return (x - F.pmod(x, b)).cast(spark_type(vt))
    raise NotExact(f"generalize on {vt}")


EXPRESSIONS: dict[str, MaskExpression] = {
    "null": _null,
    "redact": _redact,
    "generalize": _generalize,
    "email_domain": _email_domain,
    "show_first": _show(last=False),
    "show_last": _show(last=True),
}


def can_fail(function: str, t: pa.DataType) -> bool:
    """Whether the Spark form may raise at run time (a bucket that does not fit the type)."""
    vt = t.value_type if pa.types.is_dictionary(t) else t
    return function == "generalize" and family.type_family(vt) in (family.INTEGER, family.DECIMAL)


def to_column(function: str, params: Mapping[str, Any], x: Column, t: pa.DataType, ansi: bool) -> Column:
    """The masked column as a Spark expression, or NotExact (then govern's Arrow kernel runs)."""
    try:
        build = EXPRESSIONS[function]
    except KeyError:
        raise NotExact(f"mask '{function}' has no exact Spark form") from None
    return build(x, params, t, ansi)
