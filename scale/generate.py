"""Make overlapping, conflicting source snapshots to reconcile: seeded, at any size.

Three sources sell from one universe of products (the local DummyJSON server's generator,
``tools.local_api.make_product``), each about 80% of it, each in its own words:

- ``brand_owner`` (priority 1): its own ids, a valid 13-digit GTIN (5% sent none), brand, MPN;
- ``distributor`` (priority 2): other ids, the same GTIN as 14 digits or with a hyphen, titles in
  capitals, prices 3% lower, its own stock, now and then the same record twice (a shifted page);
- ``marketplace`` (priority 3): other ids again, no GTIN on 30% of offers and a wrong check digit
  on 10% (those match by brand + MPN, written in lower case with spaces), prices within ±10%, 1%
  of them a hundred times too high (a unit error), a brand in lower case.

Run 1 is the first snapshot of each source. Each later run changes about 10% of a source's
offers (price, stock, update time), removes about 1% and adds about 1% new products. The
snapshots land as ``OUT/source=S/run=R/part-00000.jsonl`` plus ``manifest.json``.

    python -m scale.generate --out data/sources --products 10000 --runs 2 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from etl.errors import ConfigError
from scale.snapshots import Manifest, write_manifest
from tools.local_api import make_product

log = logging.getLogger(__name__)

MEMBER_PERCENT = 80  # each source sells about this share of the universe
GONE_PERCENT = 1  # of a source's offers, removed in each later run
CHANGED_PERCENT = 10  # of a source's offers, changed in each later run
NEW_PERCENT = 1  # of the universe, added in each later run


@dataclass(frozen=True)
class SourceProfile:
    """One source: its id, its priority and the offset of its own record ids."""

    source_id: str
    priority: int
    id_offset: int
    id_stride: int


SOURCES = (
    SourceProfile("brand_owner", 1, 0, 1),
    SourceProfile("distributor", 2, 100_000_000, 7),
    SourceProfile("marketplace", 3, 200_000_000, 13),
)


def gtin_check_digit(body: str) -> int:
    """The GS1 check digit of a GTIN body: weights 3, 1, 3, ... from the rightmost digit."""
    total = sum(int(digit) * (3 if i % 2 == 0 else 1) for i, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def gtin13(product_id: int) -> str:
    """A valid, unique GTIN-13 for a product (GS1 prefix 4, so never an in-store number)."""
    body = f"4{product_id * 1_000_003 % 10**11:011d}"
    return body + str(gtin_check_digit(body))


def _roll(*key: Any) -> int:
    """A deterministic number in 0..99 for a key (a tuple of ints and strings hashes the same
    in every process only for ints, so strings are turned into their position first)."""
    return hash(tuple(k if isinstance(k, int) else sum(map(ord, k)) * 131 for k in key)) % 100


def universe_size(products: int, run: int) -> int:
    """Products in the universe at a run: enough for each source to hold ``products`` offers in
    run 1, plus the products each later run adds."""
    base = products * 100 // MEMBER_PERCENT
    return base + (run - 1) * max(1, base * NEW_PERCENT // 100)


def offer_state(seed: int, source: SourceProfile, product_id: int, run: int) -> int | None:
    """The variant of a source's offer for a product at a run (how many times it changed), or
    None when the source does not sell it then."""
    if _roll(seed, source.priority, product_id) >= MEMBER_PERCENT:
        return None
    variant = 0
    for later in range(2, run + 1):
        if _roll(seed, source.priority, product_id, later, 1) < GONE_PERCENT:
            return None
        if _roll(seed, source.priority, product_id, later, 2) < CHANGED_PERCENT:
            variant += 1
    return variant


def offer_record(seed: int, source: SourceProfile, product: dict[str, Any], variant: int) -> str:
    """One source's record for a product, as a JSON line in DummyJSON's shape plus ``mpn`` and
    ``currency``."""
    product_id = product["id"]
    roll = _roll(seed, source.priority, product_id, 0, 3)
    brand = product.get("brand") or "Generic"
    mpn = f"{brand[:3].upper()}-{product_id:07d}"
    price = float(product["price"])
    stock = int(product["stock"])
    gtin = gtin13(product_id)
    barcode: str | None = gtin
    title = product["title"]
    if source.priority == 2:
        title, price = title.upper(), price * 0.97
        stock = (stock * 3 + 7) % 160
        barcode = "0" + gtin if roll >= 10 else f"{gtin[:12]}-{gtin[12]}"
    elif source.priority == 3:
        brand, mpn = brand.lower(), mpn.lower().replace("-", " ")
        price = price * (0.9 + (roll % 21) / 100)
        stock = roll % 40
        if roll < 30:
            barcode = None
        elif roll < 40:
            barcode = gtin[:12] + str((int(gtin[12]) + 1) % 10)
        if roll == 99 and price < 10_000:
            price *= 100  # a unit error (cents sent as dollars)
    elif roll < 5:
        barcode = None
    updated = datetime.fromisoformat(product["meta"]["updatedAt"].rstrip("Z"))
    if variant:
        price, stock = price * (1 + 0.07 * variant), stock + variant
        updated += timedelta(hours=variant)
    meta: dict[str, Any] = {"updatedAt": updated.isoformat(timespec="milliseconds") + "Z"}
    if barcode is not None:
        meta["barcode"] = barcode
    record = {
        "id": source.id_offset + product_id * source.id_stride,
        "title": title,
        "description": product["description"],
        "category": product["category"],
        "brand": brand,
        "mpn": mpn,
        "price": round(price, 2),
        "currency": "USD",
        "stock": stock,
        "meta": meta,
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def source_lines(
    seed: int, sources: Sequence[SourceProfile], products: int, run: int
) -> Iterator[tuple[SourceProfile, str]]:
    """Every (source, JSON line) of a run, product by product (one product in memory at once)."""
    for product_id in range(1, universe_size(products, run) + 1):
        product: dict[str, Any] | None = None
        for source in sources:
            variant = offer_state(seed, source, product_id, run)
            if variant is None:
                continue
            product = product or make_product(product_id, seed)
            line = offer_record(seed, source, product, variant)
            yield source, line
            shifted = _roll(seed, 2, product_id, run, 4) == 0
            if source.priority == 2 and shifted and _roll(seed, 2, product_id, run, 5) < 10:
                yield source, line  # a shifted page: the same record twice (0.1%)


def generate(out: Path, products: int, runs: int, seed: int, sources: int = 3) -> list[Manifest]:
    """Write runs 1..``runs`` of the first ``sources`` sources; return their manifests."""
    profiles = SOURCES[:sources]
    manifests = []
    for run in range(1, runs + 1):
        started = time.perf_counter()
        folders = {p.source_id: out / f"source={p.source_id}" / f"run={run}" for p in profiles}
        files: dict[str, TextIO] = {}
        counts = dict.fromkeys(folders, 0)
        try:
            for source_id, folder in folders.items():
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "manifest.json").unlink(missing_ok=True)
                files[source_id] = (folder / "part-00000.jsonl").open("w", encoding="utf-8")
            for source, line in source_lines(seed, profiles, products, run):
                files[source.source_id].write(line + "\n")
                counts[source.source_id] += 1
        finally:
            for file in files.values():
                file.close()
        for profile in profiles:
            manifest = Manifest(profile.source_id, run, True, counts[profile.source_id],
                                profile.priority)  # fmt: skip
            write_manifest(folders[profile.source_id], manifest)
            manifests.append(manifest)
        log.info("run %d: %s in %.1f s", run, counts, time.perf_counter() - started)
    return manifests


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scale.generate",
        description="Write overlapping, conflicting source snapshots for scale.reconcile.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write snapshots in")
    parser.add_argument("--products", type=int, default=10_000, help="offers per source in run 1")
    parser.add_argument("--runs", type=int, default=2, help="runs per source (default 2)")
    parser.add_argument("--sources", type=int, default=3, help="how many sources, 1-3")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the snapshots; 0 on success, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if not 1 <= args.sources <= len(SOURCES):
            raise ConfigError(f"--sources: expected 1..{len(SOURCES)}, got {args.sources}")
        if not 1 <= args.products <= 100_000_000 or not 1 <= args.runs <= 100:
            raise ConfigError("--products must be 1..100,000,000 and --runs 1..100")
        manifests = generate(args.out, args.products, args.runs, args.seed, args.sources)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    total = sum(manifest.records for manifest in manifests)
    print(f"wrote {len(manifests)} snapshots, {total:,} records, under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
