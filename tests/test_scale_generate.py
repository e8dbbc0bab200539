"""The source generator of the Spark job: seeded, overlapping, conflicting, changing (no Spark)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from etl.errors import ConfigError
from scale import generate
from scale.snapshots import find_snapshots, read_manifest
from tests.cli import exit_status


def records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "part-00000.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_generate_writes_one_snapshot_per_source_and_run_with_a_true_manifest(
    tmp_path: Path,
) -> None:
    assert generate.main(["--out", str(tmp_path), "--products", "300", "--runs", "2"]) == 0
    snapshots = find_snapshots([tmp_path])
    assert [(s.manifest.source_id, s.manifest.run_id) for s in snapshots] == [
        (source, run) for source in ("brand_owner", "distributor", "marketplace") for run in (1, 2)
    ]
    for snapshot in snapshots:
        assert snapshot.manifest.complete
        assert snapshot.manifest.records == len(records(snapshot.path))
        assert 240 <= snapshot.manifest.records <= 360  # about --products each


def test_sources_overlap_and_disagree_the_way_the_rules_expect(tmp_path: Path) -> None:
    generate.generate(tmp_path, 2000, runs=1, seed=1)
    owner = records(tmp_path / "source=brand_owner" / "run=1")
    distributor = records(tmp_path / "source=distributor" / "run=1")
    market = records(tmp_path / "source=marketplace" / "run=1")
    owner_gtins = {r["meta"]["barcode"] for r in owner if "barcode" in r["meta"]}
    # The distributor writes the same GTINs as 14 digits (or with a hyphen); keys differ.
    shared = {r["meta"]["barcode"].lstrip("0").replace("-", "") for r in distributor}
    assert len(owner_gtins & shared) > 1000
    assert not {r["id"] for r in owner} & {r["id"] for r in distributor}
    # The marketplace leaves the GTIN out of some offers, gets the check digit wrong on others,
    # writes the MPN its own way, and sends a few prices a hundred times too high.
    assert 0.25 < sum("barcode" not in r["meta"] for r in market) / len(market) < 0.35
    assert sum(r["meta"].get("barcode", "") not in owner_gtins for r in market) > 0.35 * len(market)
    assert all(r["mpn"] == r["mpn"].lower() for r in market)
    duplicates = len(distributor) - len({r["id"] for r in distributor})
    assert duplicates >= 0


def test_a_later_run_changes_removes_and_adds_offers(tmp_path: Path) -> None:
    generate.generate(tmp_path, 5000, runs=2, seed=2, sources=1)
    first = {r["id"]: r for r in records(tmp_path / "source=brand_owner" / "run=1")}
    second = {r["id"]: r for r in records(tmp_path / "source=brand_owner" / "run=2")}
    gone, new = first.keys() - second.keys(), second.keys() - first.keys()
    changed = [k for k in first.keys() & second.keys() if first[k] != second[k]]
    assert 0.005 < len(gone) / len(first) < 0.02
    assert 0.005 < len(new) / len(first) < 0.02
    assert 0.07 < len(changed) / len(first) < 0.13


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate.generate(tmp_path / name, 200, runs=2, seed=5)
    for part in (tmp_path / "a").rglob("*.jsonl"):
        twin = tmp_path / "b" / part.relative_to(tmp_path / "a")
        assert part.read_bytes() == twin.read_bytes()


def test_chunks_written_by_a_pool_of_processes_give_the_bytes_of_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate.generate(tmp_path / "one", 300, runs=2, seed=4)
    monkeypatch.setattr(generate, "CHUNK_IDS", 70)
    assert len(generate.chunk_ranges(300, 2)) > 2
    generate.generate(tmp_path / "pool", 300, runs=2, seed=4)
    parts = sorted((tmp_path / "one").rglob("*.json*"))
    assert len(parts) == 12
    for part in parts:
        twin = tmp_path / "pool" / part.relative_to(tmp_path / "one")
        assert part.read_bytes() == twin.read_bytes()


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    assert exit_status(generate.main, ["--out", str(tmp_path), "--sources", "4"]) == 2
    assert exit_status(generate.main, ["--products", "1"]) == 2  # --out is required
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"source_id": "x y", "run_id": 1}')
    with pytest.raises(ConfigError, match="source_id must be"):
        read_manifest(manifest)
