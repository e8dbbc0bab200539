"""The catalog as it was before a run: ids, content hashes and skus, compact enough for millions.

The sync classifies each product it reads as new, changed or unchanged against this picture,
marks what it saw (what is left unseen is stale), and refuses a sku another product holds.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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


@dataclass
class SkuClaim:
    """A product of this run asking for a sku that the catalog gives to another product."""

    product_id: int
    sku: str
    owner: int  # the product that holds the sku in the catalog
    raw: Any  # the product as it arrived, for its rejection record if the claim fails


class SkuRegistry:
    """Which product holds each sku, so that two products never share one.

    The catalog's skus are kept as 64-bit keys in arrays (16 bytes a product, twice: sorted by
    key to find a sku's owner, and by product id to find a product's sku); only the skus this
    run writes go into a dict. The keys are Python's own string hash: fast, cached on the
    string, and a registry lives for one run in one process. Two skus with the same key (about
    one chance in 30 million a run at a million products) would set the second product aside
    as a duplicate: recorded with its reason, nothing lost.

    Skus move: products exchange them, or one hands its sku on to another. So a claim on a sku
    that the catalog gives to another product is provisional: ``settle`` grants it at the end
    of the run if that product let the sku go (its new version has another sku, or it is
    deleted), and refuses it otherwise. Two products of the same run with one sku are refused
    at once.
    """

    def __init__(self, keys: array[int] | None = None, owners: array[int] | None = None) -> None:
        keys, owners = keys or array("q"), owners or array("q")
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self.keys = array("q", [keys[i] for i in order])
        self.owners = array("q", [owners[i] for i in order])
        # The same pairs in product id order (read_catalog reads in id order).
        self.owned_by = owners
        self.owned_keys = keys
        self.claimed: dict[int, int] = {}
        self.provisional: list[SkuClaim] = []
        self.released: set[int] = set()  # catalog owners whose new version has another sku

    def claim(self, product_id: int, sku: str | None, raw: Any = None) -> bool:
        """Record the product's new sku; True when the claim is provisional (see the class).

        Raise ``InvalidProduct`` when another product of this run already holds the sku.
        """
        if sku is None:
            self._note_release(product_id, sku)
            return False
        key = hash(sku)
        holder = self.claimed.get(key)
        owner = self._catalog_owner(key)
        if holder is not None and product_id not in (holder, owner):
            raise sku_taken(sku, holder, product_id)
        self._note_release(product_id, sku)
        self.claimed[key] = product_id  # the catalog owner keeping its sku wins over a claimant
        if owner is None or owner == product_id:
            return False
        self.provisional.append(SkuClaim(product_id, sku, owner, raw))
        return True

    def settle(self, deleted: set[int]) -> list[tuple[SkuClaim, InvalidProduct]]:
        """The provisional claims refused, each with its reason; grant the others.

        A claim stands when its owner lets the sku go: deleted, or released by a new version
        that is itself granted. Refusing one claim can keep its product on its old sku and so
        refuse another claim: repeat until nothing changes.
        """
        refused: dict[int, SkuClaim] = {}
        changed = True
        while changed:
            changed = False
            for claim in self.provisional:
                if claim.product_id in refused:
                    continue
                lets_go = claim.owner in deleted or (
                    claim.owner in self.released and claim.owner not in refused
                )
                if not lets_go:
                    refused[claim.product_id] = claim
                    changed = True
        return [
            (claim, sku_taken(claim.sku, claim.owner, claim.product_id))
            for claim in refused.values()
        ]

    def releasing(self, refused: Iterable[int] = ()) -> list[int]:
        """Catalog owners whose granted new version gives their sku up: their stored sku must be
        cleared before the merge, so that a sku can change hands within one transaction."""
        kept = set(refused)
        return sorted(self.released - kept)

    def _catalog_owner(self, key: int) -> int | None:
        position = bisect_left(self.keys, key)
        if position < len(self.keys) and self.keys[position] == key:
            return self.owners[position]
        return None

    def _note_release(self, product_id: int, sku: str | None) -> None:
        """Remember that a catalog owner's new version no longer has its stored sku."""
        position = bisect_left(self.owned_by, product_id)
        if position == len(self.owned_by) or self.owned_by[position] != product_id:
            return
        if sku is None or hash(sku) != self.owned_keys[position]:
            self.released.add(product_id)


def sku_taken(sku: str, owner: int, product_id: int) -> InvalidProduct:
    """The reason a product cannot have ``sku``: another product holds it."""
    return InvalidProduct(f"sku: {sku!r} is already used by product {owner}", source_id=product_id)


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
