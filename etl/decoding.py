"""Decoding a DummyJSON page so that each product keeps the content hash of its JSON text.

The sync skips a product whose content hash is unchanged. Hashing the text already in memory is
far cheaper than re-serialising the decoded product (``benchmarks/bench_extract.py`` measures the
decoder; the README quotes it), so the list page is split into one span of text per product.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# JSON with exact decimals: 9.99 stays Decimal('9.99'), never a binary float.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=Decimal)
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's four whitespace characters


class SourceProduct(dict[str, Any]):
    """A product decoded from a page, with the ``content_hash`` of its JSON text as sent."""

    __slots__ = ("content_hash",)

    def __init__(self, fields: dict[str, Any], content_hash: int) -> None:
        super().__init__(fields)
        self.content_hash = content_hash


def decode_json(body: bytes) -> Any:
    """Decode a response body; the products of a list page come out as ``SourceProduct``.

    The standard library's decoder does all the decoding; this walks only the top-level object,
    so that each element of its ``"products"`` list is decoded on its own and its span of text
    is known. Any other document is decoded in one call. Raises ``ValueError`` for invalid JSON.
    """
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    position = _skip_whitespace(text, 0)
    if not text.startswith("{", position):
        return _DECODER.decode(text)
    position = _after(text, position, "{")
    if text.startswith("}", position):
        return _DECODER.decode(text)
    document: dict[str, Any] = {}
    while True:
        if not text.startswith('"', position):
            raise json.JSONDecodeError("Expecting a property name", text, position)
        key, position = _DECODER.raw_decode(text, position)
        position = _after(text, _skip_whitespace(text, position), ":")
        if key == "products" and text.startswith("[", position):
            document[key], position = _decode_products(text, position)
        else:
            document[key], position = _DECODER.raw_decode(text, position)
        position = _skip_whitespace(text, position)
        if not text.startswith(",", position):
            break
        position = _after(text, position, ",")
    position = _after(text, position, "}")
    if position != len(text):
        raise json.JSONDecodeError("Extra data", text, position)
    return document


def _decode_products(text: str, position: int) -> tuple[list[Any], int]:
    """The list that starts at ``position`` (a ``[``), each object hashed; and where it ends."""
    products: list[Any] = []
    position = _after(text, position, "[")
    if text.startswith("]", position):
        return products, _after(text, position, "]")
    while True:
        start = position
        item, position = _DECODER.raw_decode(text, position)
        if isinstance(item, dict):
            span = text[start:position].encode("utf-8", "surrogatepass")
            item = SourceProduct(item, hash_bytes(span))
        products.append(item)
        position = _skip_whitespace(text, position)
        if not text.startswith(",", position):
            return products, _after(text, position, "]")
        position = _after(text, position, ",")


def _skip_whitespace(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not whitespace."""
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _after(text: str, position: int, token: str) -> int:
    """The position after ``token`` (at ``position``) and the whitespace that follows it."""
    if not text.startswith(token, position):
        raise json.JSONDecodeError(f"Expecting {token!r} delimiter", text, position)
    return _skip_whitespace(text, position + 1)


def hash_bytes(data: bytes | memoryview) -> int:
    """A signed 64-bit content hash (it fits PostgreSQL's BIGINT and SQLite's INTEGER)."""
    # SHA-256 rather than BLAKE2: with the CPU's SHA extensions it is the faster of the two.
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


def content_hash(raw: Mapping[str, Any], salt: int = 0) -> int:
    """A signed 64-bit hash of a product's whole content, children included, XOR ``salt``.

    ``salt`` is what else the stored hash depends on (the mapping's version: see
    ``data_pipeline.mapping_salt``); XOR with a constant keeps distinct hashes distinct.

    A product decoded from a page (``SourceProduct``) already carries the hash of its JSON
    text as the API sent it. Any other mapping (built in code, read back from a record) is
    hashed through its pickle in fast mode (no memo, so equal content gives equal bytes
    however objects are shared). The two never compare equal: a catalog written from one kind
    and synced from the other is rewritten once, which is correct, only slower. Likewise the
    text's key order and number formatting count: if the API changes how it writes a product,
    the next sync rewrites it.
    """
    if isinstance(raw, SourceProduct):
        return raw.content_hash ^ salt
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(raw)
    return hash_bytes(buffer.getbuffer()) ^ salt
