"""Source snapshots: one folder per source run, JSON Lines parts and a manifest written last.

A snapshot is what one run of one source delivered: ``part-*.jsonl`` files of DummyJSON-shaped
records and ``manifest.json``, which says which source and run it is, whether the run saw the
whole catalog (``complete``), how many records it wrote and the source's priority. The manifest
is written last, so a folder without one is a run still landing; a folder whose parts disagree
with their manifest (a source that vanished mid-run) is refused before anything is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from etl.errors import ConfigError, SyncAborted

MANIFEST = "manifest.json"
PART_GLOB = "part-*.jsonl"
SOURCE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Manifest:
    """What a source run says about itself."""

    source_id: str
    run_id: int
    complete: bool
    records: int
    priority: int  # 1 = brand owner, 2 = authorised distributor, 3 = marketplace (design §4.4)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot folder and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def parts(self) -> list[Path]:
        """The data files, in name order."""
        return sorted(self.path.glob(PART_GLOB))

    def __str__(self) -> str:
        return f"{self.manifest.source_id} run {self.manifest.run_id}"


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest, last: a reader never sees a snapshot whose parts are still coming."""
    temporary = folder / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    temporary.replace(folder / MANIFEST)


def read_manifest(path: Path) -> Manifest:
    """A manifest, checked field by field; ``ConfigError`` says what is wrong."""
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable manifest: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    source_id = raw.get("source_id")
    if not isinstance(source_id, str) or not SOURCE_ID.fullmatch(source_id):
        raise ConfigError(f"{path}: source_id must be 1-64 letters, digits, - or _: {source_id!r}")
    numbers = {name: raw.get(name) for name in ("run_id", "records", "priority")}
    for name, value in numbers.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: {name} must be a non-negative integer, got {value!r}")
    if not isinstance(raw.get("complete"), bool):
        raise ConfigError(f"{path}: complete must be true or false, got {raw.get('complete')!r}")
    return Manifest(
        source_id=source_id,
        run_id=raw["run_id"],
        complete=raw["complete"],
        records=raw["records"],
        priority=raw["priority"],
    )


def find_snapshots(paths: list[Path]) -> list[Snapshot]:
    """Every snapshot under ``paths`` (a snapshot folder, or a folder holding several), sorted by
    source then run, so that each source's runs are merged in order."""
    found: dict[tuple[str, int], Snapshot] = {}
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"--snapshots: {path} is not a folder")
        manifests = [path / MANIFEST] if (path / MANIFEST).is_file() else []
        manifests = manifests or sorted(path.rglob(MANIFEST))
        if not manifests:
            raise ConfigError(f"--snapshots: no {MANIFEST} in or under {path}")
        for manifest_path in manifests:
            snapshot = Snapshot(manifest_path.parent, read_manifest(manifest_path))
            key = (snapshot.manifest.source_id, snapshot.manifest.run_id)
            if key in found and found[key].path != snapshot.path:
                raise ConfigError(f"two snapshots claim {snapshot}: {found[key].path}, {path}")
            found[key] = snapshot
    return [found[key] for key in sorted(found)]


def check_parts_present(snapshot: Snapshot) -> None:
    """Refuse a snapshot whose manifest announces records but whose parts are gone."""
    if snapshot.manifest.records and not snapshot.parts:
        raise SyncAborted(
            f"{snapshot}: the manifest announces {snapshot.manifest.records} records but "
            f"{snapshot.path} holds no {PART_GLOB}; nothing was changed"
        )


def check_record_count(snapshot: Snapshot, counted: int) -> None:
    """Refuse a snapshot whose parts do not hold what its manifest announces."""
    if counted != snapshot.manifest.records:
        raise SyncAborted(
            f"{snapshot}: the manifest announces {snapshot.manifest.records} records, the parts "
            f"hold {counted} (the source vanished or the files changed); nothing was changed"
        )
