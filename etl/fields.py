"""Typed field validators: each returns the value exactly as it will be stored, or raises
``InvalidProduct`` naming the field and what arrived (never the value of a text field: reasons are
logged, and a field may hold personal data)."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeGuard

from etl.errors import InvalidProduct, excerpt

INT32 = (-(2**31), 2**31 - 1)
ZERO, FIVE = Decimal(0), Decimal(5)


def is_int(value: Any) -> TypeGuard[int]:
    """An integer that is not a bool (JSON true is not a quantity)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_product_id(value: Any) -> TypeGuard[int]:
    """An id a product can be stored under: a positive 32-bit integer (not a bool, not "5")."""
    return is_int(value) and 0 < value <= INT32[1]


def valid_text(
    value: Any, name: str, max_length: int | None = None, *, required: bool = False
) -> str | None:
    """A string field, kept verbatim; None when absent or null unless required."""
    if value is None:
        if required:
            raise InvalidProduct(f"{name}: required, but it is missing")
        return None
    if not isinstance(value, str):
        # The value is not quoted: reasons are logged, and a field may hold personal data.
        raise InvalidProduct(f"{name}: expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidProduct(f"{name}: required, but it is empty")
    if "\x00" in value:
        raise InvalidProduct(f"{name}: contains a NUL character, which a database text cannot hold")
    if not value.isascii() and not is_utf8(value):
        raise InvalidProduct(f"{name}: contains a lone surrogate, which UTF-8 text cannot hold")
    if max_length is not None and len(value) > max_length:
        raise InvalidProduct(f"{name}: longer than {max_length} characters ({len(value)})")
    return value


def is_utf8(text: str) -> bool:
    """False for text with a lone surrogate (JSON allows "\\ud83d"; no database stores it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@functools.cache
def numeric_bounds(precision: int, scale: int) -> tuple[Decimal, Decimal]:
    """The smallest magnitude ``Numeric(precision, scale)`` cannot hold, and its step."""
    return Decimal(10) ** (precision - scale), Decimal(1).scaleb(-scale)


def valid_decimal(
    value: Any,
    name: str,
    precision: int,
    scale: int,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
    *,
    required: bool = False,
    normalised: list[str] | None = None,
) -> Decimal | None:
    """An exact decimal that fits ``Numeric(precision, scale)`` without rounding.

    A value within floating-point precision of one with ``scale`` decimals is that value: a
    JavaScript backend writes 397.35 as ``397.34999999999997``. It is rounded, and its field
    name appended to ``normalised`` so the run can say so. Real extra precision (``9.999``)
    is still refused: rounding it would change the price.
    """
    if value is None:
        if required:
            raise InvalidProduct(f"{name}: required, but it is missing")
        return None
    if type(value) is Decimal:  # the common case first: the decoder's type for fractions
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise InvalidProduct(
            f"{name}: expected a number, got {type(value).__name__} {excerpt(repr(value), 60)}"
        )
    else:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise InvalidProduct(f"{name}: expected a finite number, got {value}")
    ceiling, step = numeric_bounds(precision, scale)
    # copy_abs, not abs(): abs() rounds in the context, and 1e1000000 overflows it.
    if number.copy_abs() >= ceiling:
        raise InvalidProduct(
            f"{name}: {excerpt(str(value), 40)} is too large "
            f"(at most {precision - scale} integer digits)"
        )
    if not isinstance(value, int):
        number = _to_scale(number, name, scale, step, normalised)
    if minimum is not None and number < minimum:
        raise InvalidProduct(f"{name}: {value} is below {minimum}")
    if maximum is not None and number > maximum:
        raise InvalidProduct(f"{name}: {value} is above {maximum}")
    return number


def _to_scale(
    number: Decimal, name: str, scale: int, step: Decimal, normalised: list[str] | None
) -> Decimal:
    """``number`` if it has at most ``scale`` decimals, rounded if the rest is float noise."""
    rounded = _quantized(number, step)
    if number == rounded:
        return number
    if rounded is None or not _is_float_noise(number, rounded):
        raise InvalidProduct(
            f"{name}: {excerpt(str(number), 40)} has more than {scale} decimals; "
            "it would be rounded"
        )
    if normalised is not None:
        normalised.append(name)
    return rounded


def _quantized(number: Decimal, step: Decimal) -> Decimal | None:
    """``number`` rounded to ``step``, or None when it has too many digits to round (1e-999999)."""
    try:
        return number.quantize(step)
    except ArithmeticError:
        return None


def _is_float_noise(number: Decimal, rounded: Decimal) -> bool:
    """True when ``number`` differs from ``rounded`` by no more than a binary float's precision
    (two units in the last place of the double nearest ``rounded``). Never around zero, where
    a double's precision is no bound at all."""
    if not rounded:
        return False
    return (number - rounded).copy_abs() <= 2 * Decimal(math.ulp(float(rounded)))


def valid_integer(value: Any, name: str) -> int | None:
    """An optional 32-bit integer."""
    if value is None:
        return None
    if not is_int(value):
        raise InvalidProduct(
            f"{name}: expected an integer, got {type(value).__name__} {excerpt(repr(value), 60)}"
        )
    if not INT32[0] <= value <= INT32[1]:
        raise InvalidProduct(f"{name}: {value} is out of the 32-bit integer range")
    return int(value)


def valid_timestamp(value: Any, name: str) -> dt.datetime | None:
    """An ISO-8601 timestamp with a zone ('2024-05-23T08:56:21.618Z'), as an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidProduct(f"{name}: expected an ISO-8601 timestamp, got {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidProduct(
            f"{name}: expected an ISO-8601 timestamp, got {excerpt(repr(value), 60)}"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidProduct(f"{name}: timestamp {value!r} has no timezone")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidProduct(
            f"{name}: timestamp {value!r} is outside years 1..9999 in UTC"
        ) from None


def valid_object(value: Any, name: str) -> Mapping[str, Any]:
    """An optional nested object (dimensions, meta); absent means empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidProduct(f"{name}: expected an object, got {type(value).__name__}")
    return value


def valid_list(value: Any, name: str) -> list[Any]:
    """An optional list (tags, images, reviews); absent means empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidProduct(f"{name}: expected a list, got {type(value).__name__}")
    return value


MAX_JSON_DEPTH = 32  # deeper extras are refused: no API field nests like that, an attacker might


def valid_json(value: Any, name: str, depth: int = 0) -> Any:
    """A value of a field the mapping does not know, as JSON any database can store.

    Text is checked as ``valid_text`` checks it (JSONB refuses ``\\u0000`` too); a decimal
    becomes a float when a float holds it exactly, else its exact text, so nothing is rounded.
    """
    if depth > MAX_JSON_DEPTH:
        raise InvalidProduct(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        return valid_text(value, name)
    if isinstance(value, Decimal):
        return _exact_json_number(value)
    if isinstance(value, dict):
        return {
            valid_text(key, f"{name} (a key)"): valid_json(item, f"{name}.{key}", depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [valid_json(item, f"{name}[{i}]", depth + 1) for i, item in enumerate(value)]
    return value  # int, bool, None


def _exact_json_number(number: Decimal) -> float | str:
    """A float if it holds ``number`` exactly (``9.99``), else the number's text (``NaN``,
    ``1E+400``, 30 significant digits)."""
    if number.is_finite():
        as_float = float(number)
        if math.isfinite(as_float) and Decimal(repr(as_float)) == number:
            return as_float
    return str(number)
