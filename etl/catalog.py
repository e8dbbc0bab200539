"""The catalog as it was before a run: ids, content hashes and skus, compact enough for millions.

The sync classifies each product it reads as new, changed or unchanged against this picture,
marks what it saw (what is left unseen is stale), and refuses a sku another product holds.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from enum import StrEnum

from sqlalchemy import Connection, select

from etl.errors import InvalidProduct
from models import Product

# Read big results in chunks (a server-side cursor on PostgreSQL): a million rows never sit in
# memory at once.
STREAMED = {"stream_results": True, "yield_per": 10_000}


class Change(StrEnum):
    """What a product read from the API is, compared with the catalog."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


class CatalogIndex:
    """The ids and content hashes already in the catalog, in two sorted arrays.

    Sixteen bytes a product plus one byte to mark it seen, where a dict of ints would take ten
    times that (the memory figures are in the README, from ``benchmarks/bench_sync.py``).
    """

    def __init__(self, ids: array[int], content_hashes: array[int]) -> None:
        self.ids = ids
        self.content_hashes = content_hashes
        self.seen = bytearray(len(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def classify(self, product_id: int, content_hash: int) -> Change:
        """New, changed or unchanged; and mark the product as seen by this run."""
        position = bisect_left(self.ids, product_id)
        if position == len(self.ids) or self.ids[position] != product_id:
            return Change.NEW
        self.seen[position] = 1
        same = self.content_hashes[position] == content_hash
        return Change.UNCHANGED if same else Change.CHANGED

    def unseen_ids(self) -> list[int]:
        """Ids in the catalog that this run did not see: the stale products."""
        return [pid for pid, seen in zip(self.ids, self.seen, strict=True) if not seen]


class SkuRegistry:
    """Which product holds each sku, so a second product with the same sku is set aside.

    The catalog's skus are kept as 64-bit keys in two arrays sorted by key (16 bytes a product);
    only the skus this run writes go into a dict. The keys are Python's own string hash: it is
    fast and cached on the string, and a registry lives for one run, in one process. Two skus
    with the same key (about one chance in 30 million a run at a million products) would set
    the second product aside as a duplicate: recorded with its reason, nothing lost.
    """

    def __init__(self, keys: array[int] | None = None, owners: array[int] | None = None) -> None:
        keys, owners = keys or array("q"), owners or array("q")
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self.keys = array("q", [keys[i] for i in order])
        self.owners = array("q", [owners[i] for i in order])
        self.claimed: dict[int, int] = {}

    def claim(self, product_id: int, sku: str | None) -> None:
        """Record the product's sku, or raise ``InvalidProduct`` if another product has it."""
        if sku is None:
            return
        key = hash(sku)
        owner = self.claimed.get(key)
        if owner is None:
            position = bisect_left(self.keys, key)
            if position < len(self.keys) and self.keys[position] == key:
                owner = self.owners[position]
        if owner is None or owner == product_id:
            self.claimed[key] = product_id
            return
        raise InvalidProduct(
            f"sku: {sku!r} is already used by product {owner}", source_id=product_id
        )


def read_catalog(conn: Connection) -> tuple[CatalogIndex, SkuRegistry]:
    """The catalog as it was before the run, in one streamed read in id order."""
    ids, content_hashes = array("q"), array("q")
    sku_keys, sku_owners = array("q"), array("q")
    query = select(Product.id, Product.content_hash, Product.sku).order_by(Product.id)
    for product_id, content_hash, sku in conn.execute(query, execution_options=STREAMED):
        ids.append(product_id)
        content_hashes.append(content_hash)
        if sku is not None:
            sku_keys.append(hash(sku))
            sku_owners.append(product_id)
    return CatalogIndex(ids, content_hashes), SkuRegistry(sku_keys, sku_owners)
