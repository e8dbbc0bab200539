"""Source drift: the fields a run sees, against the fields the mapping expects.

A source changes its schema without notice: a field appears (DummyJSON adding ``color``, or a key
inside ``meta`` or a review), vanishes, or arrives with another JSON type. A run profiles the
products it transforms and reports each such change with how many products showed it and one
example id. What the run then does is a policy, like dlt's schema contracts (evolve / freeze /
discard, https://dlthub.com/docs/general-usage/schema-contracts):

* ``keep`` (default): record the drift, load the products, keep unknown fields' values in
  ``products.extras``;
* ``refuse``: record the drift and fail the run (exit 1) before it changes the catalog;
* ``ignore``: neither record nor keep (the unknown values are dropped).

Only products a run transforms are profiled: an unchanged product (same content hash, which
covers the mapping version) was profiled when it was written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from etl.errors import SyncAborted

# A field inside an object is named "dimensions.width"; inside list elements, "reviews[].rating".
NESTED_OBJECT = "{}.{}"
NESTED_LIST = "{}[].{}"


class DriftPolicy(StrEnum):
    """What a run does when the source's fields differ from the mapping's."""

    KEEP = "keep"
    REFUSE = "refuse"
    IGNORE = "ignore"


class DriftChange(StrEnum):
    """How a field differs from what the mapping expects."""

    NEW = "new"  # a field the mapping does not know
    VANISHED = "vanished"  # a field the mapping expects, absent
    RETYPED = "retyped"  # a field the mapping knows, with another JSON type


@dataclass(frozen=True)
class SourceShape:
    """The fields a mapping reads, each with the JSON type it expects.

    ``fields`` maps a path (``"title"``, ``"meta.barcode"``, ``"reviews[].rating"``) to a JSON
    type; ``objects`` and ``lists`` name the top-level fields whose keys, or whose elements'
    keys, are fields too; ``optional`` are fields a product may lack without it being drift.
    """

    fields: Mapping[str, str]
    objects: frozenset[str]
    lists: frozenset[str]
    optional: frozenset[str] = frozenset()

    @cached_property
    def known_keys(self) -> dict[str, frozenset[str]]:
        """The keys the mapping knows: at the top level (``""``) and inside each container."""
        known = {"": frozenset(path for path in self.fields if "." not in path)}
        for container in self.objects | self.lists:
            prefix = f"{container}[]." if container in self.lists else f"{container}."
            known[container] = frozenset(
                path.removeprefix(prefix) for path in self.fields if path.startswith(prefix)
            )
        return known


def unknown_fields(raw: Mapping[str, Any], shape: SourceShape) -> dict[str, Any] | None:
    """The values of the fields ``shape`` does not know, nested as the source nests them.

    ``{"color": "red", "meta": {"batch": 7}, "reviews": [{}, {"likes": 3}]}``; None when there
    are none (the common case costs a few key-set comparisons).
    """
    known_keys = shape.known_keys
    extras = {key: value for key, value in raw.items() if key not in known_keys[""]}
    for container in shape.objects:
        value = raw.get(container)
        if isinstance(value, Mapping):
            known = known_keys[container]
            unknown = {k: v for k, v in value.items() if k not in known}
            if unknown:
                extras[container] = unknown
    for container in shape.lists:
        value = raw.get(container)
        if isinstance(value, list):
            known = known_keys[container]
            elements = [
                {k: v for k, v in item.items() if k not in known}
                if isinstance(item, Mapping)
                else {}
                for item in value
            ]
            if any(elements):
                extras[container] = elements
    return extras or None


@dataclass(frozen=True)
class Drift:
    """One change of one field in one run."""

    change: DriftChange
    field: str
    expected: str | None
    seen: str | None
    products: int
    example_id: int | None

    def describe(self) -> str:
        """One line for the run summary."""
        example = f", e.g. product {self.example_id}" if self.example_id is not None else ""
        what = {
            DriftChange.NEW: f"new field {self.field} ({self.seen})",
            DriftChange.VANISHED: f"field {self.field} vanished",
            DriftChange.RETYPED: f"field {self.field} is {self.seen}, expected {self.expected}",
        }[self.change]
        return f"{what}: {self.products} product(s){example}"


class DriftProfile:
    """The fields of the products a run transforms, counted against a ``SourceShape``.

    Products of one source share a handful of shapes, so each product is reduced to a cheap
    signature (its keys and their Python types, nested ones included) and only a signature seen
    for the first time is expanded into field paths.
    """

    def __init__(self, shape: SourceShape) -> None:
        self.shape = shape
        self.products = 0
        self._signatures: Counter[tuple[Any, ...]] = Counter()
        self._examples: dict[tuple[Any, ...], int | None] = {}

    def observe(self, raw: Mapping[str, Any], product_id: int | None) -> None:
        """Count one product's fields."""
        self.products += 1
        signature = self._signature(raw)
        self._signatures[signature] += 1
        self._examples.setdefault(signature, product_id)

    def _signature(self, raw: Mapping[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = [tuple(raw), tuple(map(type, raw.values()))]
        for container in self.shape.objects:
            value = raw.get(container)
            if isinstance(value, Mapping):
                parts.append((tuple(value), tuple(map(type, value.values()))))
        for container in self.shape.lists:
            value = raw.get(container)
            if isinstance(value, list):
                parts.append(
                    frozenset(
                        (tuple(item), tuple(map(type, item.values())))
                        for item in value
                        if isinstance(item, Mapping)
                    )
                )
        return tuple(parts)

    def drifts(self) -> list[Drift]:
        """Every new, vanished and retyped field, most frequent first within each kind."""
        seen: Counter[tuple[str, str]] = Counter()
        missing: Counter[str] = Counter()
        examples: dict[tuple[str, str], int | None] = {}
        for signature, count in self._signatures.items():
            example = self._examples[signature]
            paths = _paths(self._expand(signature))
            for path_type in paths:
                seen[path_type] += count
                examples.setdefault(path_type, example)
            present = {path for path, _ in paths}
            for path in self._expected_paths(present):
                if path not in present:
                    missing[path] += count
                    examples.setdefault((path, ""), example)
        fields = self.shape.fields
        vanished = [
            Drift(DriftChange.VANISHED, path, fields[path], None, n, examples[(path, "")])
            for path, n in missing.most_common()
        ]
        return self._new_and_retyped(seen, examples) + vanished

    def _new_and_retyped(
        self, seen: Counter[tuple[str, str]], examples: dict[tuple[str, str], int | None]
    ) -> list[Drift]:
        new, retyped = [], []
        for (path, kind), count in seen.most_common():
            expected, example = self.shape.fields.get(path), examples[(path, kind)]
            if expected is None:
                new.append(Drift(DriftChange.NEW, path, None, kind, count, example))
            elif kind != expected:
                retyped.append(Drift(DriftChange.RETYPED, path, expected, kind, count, example))
        return new + retyped

    def _expected_paths(self, present: set[str]) -> list[str]:
        """The non-optional fields a product with ``present`` fields should carry: a nested
        field only where its object is there, or its list has an element."""
        containers = {""} | {path for path in present if path in self.shape.objects}
        containers |= {_container(path) for path in present if "[]." in path}
        return [
            path
            for path in self.shape.fields
            if path not in self.shape.optional and _container(path) in containers
        ]

    def _expand(self, signature: tuple[Any, ...]) -> dict[str, Any]:
        """A signature back into ``{path: python type}`` (list elements merged)."""
        keys, types = signature[0], signature[1]
        fields: dict[str, Any] = dict(zip(keys, types, strict=True))
        rest = iter(signature[2:])
        for container in self.shape.objects:
            if fields.get(container) is not None and issubclass(fields[container], Mapping):
                nested_keys, nested_types = next(rest)
                for key, kind in zip(nested_keys, nested_types, strict=True):
                    fields[NESTED_OBJECT.format(container, key)] = kind
        for container in self.shape.lists:
            if fields.get(container) is not None and issubclass(fields[container], list):
                for nested_keys, nested_types in next(rest):
                    for key, kind in zip(nested_keys, nested_types, strict=True):
                        fields[NESTED_LIST.format(container, key)] = kind
        return fields


def refuse_drift(drifts: list[Drift], policy: DriftPolicy) -> None:
    """Under ``refuse``, raise ``SyncAborted`` for any drift: the run then changes nothing."""
    if drifts and policy is DriftPolicy.REFUSE:
        raise SyncAborted(
            f"the source's fields differ from the mapping's in {len(drifts)} way(s), nothing "
            f"changed (--on-drift refuse): {drifts[0].describe()}; see source_drift"
        )


def format_drifts(drifts: list[Drift], limit: int = 10) -> list[str]:
    """The run summary's lines on drift (none when the source matched the mapping)."""
    if not drifts:
        return []
    lines = ["source drift (see source_drift; new fields' values kept in products.extras):"]
    lines.extend(f"  {drift.describe()}" for drift in drifts[:limit])
    if len(drifts) > limit:
        lines.append(f"  ... and {len(drifts) - limit} more")
    return lines


def _paths(fields: dict[str, Any]) -> set[tuple[str, str]]:
    """``{path: python type}`` as ``{(path, JSON type)}``."""
    return {(path, _JSON_TYPES.get(kind, "array")) for path, kind in fields.items()}


def _container(path: str) -> str:
    """The top-level field a nested path lives in ("" for a top-level field)."""
    head, dot, _ = path.partition(".")
    return head.removesuffix("[]") if dot else ""


_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    Decimal: "number",
    str: "string",
    dict: "object",
    list: "array",
}
