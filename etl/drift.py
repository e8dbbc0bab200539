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
    are none. This runs for every product written, so the common case is a few key-set
    comparisons done in C (``dict.keys() <= frozenset``).
    """
    known = shape.known_keys
    extras = {}
    if not raw.keys() <= known[""]:
        extras = {key: value for key, value in raw.items() if key not in known[""]}
    for container in shape.objects:
        value = raw.get(container)
        if isinstance(value, dict) and not value.keys() <= known[container]:
            extras[container] = {k: v for k, v in value.items() if k not in known[container]}
    for container in shape.lists:
        value = raw.get(container)
        if isinstance(value, list) and not all(
            item.keys() <= known[container] for item in value if isinstance(item, dict)
        ):
            extras[container] = [
                {k: v for k, v in item.items() if k not in known[container]}
                if isinstance(item, dict)
                else {}
                for item in value
            ]
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

    This runs for every product written, so a product costs a few tuples built in C: each of its
    objects (the product, each nested object, the set of its list elements) is counted by its
    shape, its keys and the Python types of their values. A source's products share a handful of
    shapes per object (they differ in which numbers are integers), and only when the run ends is
    each distinct shape turned into field paths.
    """

    def __init__(self, shape: SourceShape) -> None:
        self.shape = shape
        # Per container ("" = the product itself): shape -> [products, an example id].
        self._counts: dict[str, dict[Any, list[Any]]] = {
            container: {} for container in ("", *shape.objects, *shape.lists)
        }

    def observe(self, raw: Mapping[str, Any], product_id: int | None) -> None:
        """Count one product's fields."""
        counts = self._counts
        _count(counts[""], (tuple(raw), tuple(map(type, raw.values()))), product_id)
        for container in self.shape.objects:
            value = raw.get(container)
            if isinstance(value, dict):
                shape = tuple(value), tuple(map(type, value.values()))
                _count(counts[container], shape, product_id)
        for container in self.shape.lists:
            value = raw.get(container)
            if isinstance(value, list) and value:
                elements = frozenset(
                    (tuple(item), tuple(map(type, item.values())))
                    for item in value
                    if isinstance(item, dict)
                )
                _count(counts[container], elements, product_id)

    def drifts(self) -> list[Drift]:
        """Every new, retyped and vanished field, most frequent first within each kind."""
        seen: dict[tuple[str, str], list[Any]] = {}
        missing: dict[str, list[Any]] = {}
        for container, shapes in self._counts.items():
            expected = self._expected(container)
            for shape, (count, example) in shapes.items():
                found = self._fields(container, shape)
                for path_type in found.items():
                    _add(seen, path_type, count, example)
                for path in expected - found.keys():
                    _add(missing, path, count, example)
        fields = self.shape.fields
        new = [
            Drift(DriftChange.NEW, path, None, kind, n, example)
            for (path, kind), (n, example) in _by_count(seen)
            if path not in fields
        ]
        retyped = [
            Drift(DriftChange.RETYPED, path, fields[path], kind, n, example)
            for (path, kind), (n, example) in _by_count(seen)
            if path in fields and kind != fields[path]
        ]
        vanished = [
            Drift(DriftChange.VANISHED, path, fields[path], None, n, example)
            for path, (n, example) in _by_count(missing)
        ]
        return new + retyped + vanished

    def _expected(self, container: str) -> set[str]:
        """The non-optional fields of a container (``""``: the top level) as paths."""
        return {
            path
            for path in self.shape.fields
            if _container(path) == container and path not in self.shape.optional
        }

    def _fields(self, container: str, shape: Any) -> dict[str, str]:
        """A counted shape as ``{path: JSON type}`` (list elements merged)."""
        if not container:
            return {key: _json_type(kind) for key, kind in zip(*shape, strict=True)}
        template = NESTED_LIST if container in self.shape.lists else NESTED_OBJECT
        shapes = shape if container in self.shape.lists else [shape]
        return {
            template.format(container, key): _json_type(kind)
            for keys, kinds in shapes
            for key, kind in zip(keys, kinds, strict=True)
        }


def _count(counts: dict[Any, list[Any]], shape: Any, product_id: int | None) -> None:
    """One more product with ``shape``; the first one seen is the example."""
    counted = counts.get(shape)
    if counted is None:
        counts[shape] = [1, product_id]
    else:
        counted[0] += 1


def _add(totals: dict[Any, list[Any]], key: Any, count: int, example: int | None) -> None:
    """Add ``count`` products to ``key``, keeping the first example id."""
    total = totals.setdefault(key, [0, example])
    total[0] += count


def _by_count(totals: dict[Any, list[Any]]) -> list[tuple[Any, list[Any]]]:
    """The totals, most products first (then by name, so the order is stable)."""
    return sorted(totals.items(), key=lambda item: (-item[1][0], str(item[0])))


def _json_type(kind: type) -> str:
    """The JSON type of values of a Python type, as the decoder makes them."""
    for base, name in _JSON_TYPES.items():
        if issubclass(kind, base):
            return name
    return "unknown"


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


def _container(path: str) -> str:
    """The top-level field a nested path lives in ("" for a top-level field)."""
    head, dot, _ = path.partition(".")
    return head.removesuffix("[]") if dot else ""


# Python type -> JSON type, for the values the decoder makes (and floats, for products built in
# code); bool before int, which it subclasses.
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
