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
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from multiprocessing import get_context
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
CHUNK_IDS = 10_000  # product ids per unit of parallel work


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
    digits = [int(digit) for digit in reversed(body)]
    total = 3 * sum(digits[0::2]) + sum(digits[1::2])
    return (10 - total % 10) % 10


def gtin13(product_id: int) -> str:
    """A valid, unique GTIN-13 for a product (GS1 prefix 4, so never an in-store number)."""
    body = f"4{product_id * 1_000_003 % 10**11:011d}"
    return body + str(gtin_check_digit(body))


def _roll(*key: int) -> int:
    """A deterministic number in 0..99 for a key of ints (a tuple of ints hashes the same in
    every process; one holding strings would not, PYTHONHASHSEED salts them)."""
    return hash(key) % 100


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


def product_lines(
    seed: int, sources: Sequence[SourceProfile], products: int, runs: int, product_id: int
) -> Iterator[tuple[str, int, str]]:
    """Every (source id, run, JSON line) for one product, over all runs: the product is built
    once, and an offer that did not change between runs is encoded once."""
    product: dict[str, Any] | None = None
    encoded: dict[tuple[str, int], str] = {}  # (source id, variant) -> line
    for run in range(1, runs + 1):
        if product_id > universe_size(products, run):
            continue
        for source in sources:
            variant = offer_state(seed, source, product_id, run)
            if variant is None:
                continue
            line = encoded.get((source.source_id, variant))
            if line is None:
                product = product or make_product(product_id, seed)
                line = offer_record(seed, source, product, variant)
                encoded[source.source_id, variant] = line
            yield source.source_id, run, line
            shifted = _roll(seed, 2, product_id, run, 4) == 0
            if source.priority == 2 and shifted and _roll(seed, 2, product_id, run, 5) < 10:
                yield source.source_id, run, line  # a shifted page: the same record twice (0.1%)


def chunk_text(
    seed: int, sources: Sequence[SourceProfile], products: int, runs: int, ids: range
) -> dict[tuple[str, int], tuple[str, int]]:
    """The lines a range of product ids contributes to each (source id, run) file, as one text
    and its line count: one large write per file and chunk, cheap to hand between processes."""
    lines: dict[tuple[str, int], list[str]] = {}
    for product_id in ids:
        for source_id, run, line in product_lines(seed, sources, products, runs, product_id):
            lines.setdefault((source_id, run), []).append(line)
    return {key: ("".join(f"{line}\n" for line in found), len(found))
            for key, found in lines.items()}  # fmt: skip


def chunk_ranges(products: int, runs: int) -> list[range]:
    """The universe's product ids (as large as the last run's) in chunks of ``CHUNK_IDS``."""
    last = universe_size(products, runs)
    return [range(first, min(first + CHUNK_IDS, last + 1))
            for first in range(1, last + 1, CHUNK_IDS)]  # fmt: skip


def generate(out: Path, products: int, runs: int, seed: int, sources: int = 3) -> list[Manifest]:
    """Write runs 1..``runs`` of the first ``sources`` sources; return their manifests.

    Product ids are generated in chunks, in parallel on every core when there is more than one
    chunk, and written in id order, so the bytes do not depend on the number of processes."""
    started = time.perf_counter()
    profiles = SOURCES[:sources]
    keys = [(p.source_id, run) for run in range(1, runs + 1) for p in profiles]
    folders = {(s, run): out / f"source={s}" / f"run={run}" for s, run in keys}
    counts = dict.fromkeys(keys, 0)
    work = partial(chunk_text, seed, profiles, products, runs)
    ranges = chunk_ranges(products, runs)
    with ExitStack() as stack:
        files: dict[tuple[str, int], TextIO] = {}
        for key, folder in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifest.json").unlink(missing_ok=True)
            files[key] = stack.enter_context(
                (folder / "part-00000.jsonl").open("w", encoding="utf-8")
            )
        chunks: Iterator[dict[tuple[str, int], tuple[str, int]]] = map(work, ranges)
        if len(ranges) > 1:
            # spawn, not fork: the caller may hold threads (a Spark gateway in the tests).
            pool = ProcessPoolExecutor(os.cpu_count(), mp_context=get_context("spawn"))
            chunks = stack.enter_context(pool).map(work, ranges)
        for done, chunk in enumerate(chunks, start=1):
            for key, (text, lines) in chunk.items():
                files[key].write(text)
                counts[key] += lines
            log.debug("chunk %d of %d written", done, len(ranges))
    manifests = []
    for run in range(1, runs + 1):
        for profile in profiles:
            key = (profile.source_id, run)
            manifest = Manifest(profile.source_id, run, True, counts[key], profile.priority)
            write_manifest(folders[key], manifest)
            manifests.append(manifest)
        log.info("run %d: %s", run, {s: n for (s, r), n in counts.items() if r == run})
    log.info("generated %d runs in %.1f s", runs, time.perf_counter() - started)
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
