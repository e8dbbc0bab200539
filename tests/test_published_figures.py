"""Every measured figure the design document and the README quote equals a committed output.

A quoted figure is a number followed by its tag, as in
``5,395 products/s [M: sync#sync.initial.products]``: ``sync`` names a file in
``benchmarks/published/`` (``OUTPUTS`` below) and the key names one figure in it (``figures_of``,
parsed from the benchmark's own tables). The figure must equal the output rounded to the decimals
the document shows, so editing either side fails this test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "benchmarks" / "published"
DOCUMENTS = ("data_at_scale_design.md", "README.md")

# alias -> the committed output it stands for
OUTPUTS = {
    "sync": "bench_sync-2d4d540.txt",
    "extract": "bench_extract-2d4d540.txt",
    "footprint": "bench_footprint-2d4d540.txt",
    "sync_before_etl": "bench_sync-b04406d-before-etl.txt",
    "sync_after_etl": "bench_sync-bbf3780-after-etl.txt",
    "extract_before_etl": "bench_extract-b04406d-before-etl.txt",
    "extract_after_etl": "bench_extract-bbf3780-after-etl.txt",
    "sync_before_drift": "bench_sync-2d4d540-before-drift.txt",
    "sync_drift": "bench_sync-cb04958-drift.txt",
    "scale": "bench_scale-3x100k.txt",
    "scale_1m": "bench_scale-3x1m.txt",
    "scale_full_gold": "bench_scale-3x100k-1df8249-full-gold.txt",
    "scale_incremental_gold": "bench_scale-3x100k-a5bf82f-incremental-gold.txt",
    "normalise": "bench_normalise-1df8249.txt",
    "sync_history": "bench_sync-31d8e4b-history-postgresql.txt",
    "sync_history_sqlite": "bench_sync-31d8e4b-history-sqlite.txt",
    "sync_history_quiet": "bench_sync-d12fc5d-history-postgresql.txt",
    "sync_history_idle": "bench_sync-0770c98-history-idle.txt",
    "sync_history_both_5": "bench_sync-479115a-history.txt",
    "sync_history_pg_5": "bench_sync-67a1d85-history-5.txt",
    "sync_history_both_9": "bench_sync-67a1d85-history.txt",
}

NUMBER = r"\d[\d,]*(?:\.\d+)?"
UNIT = "[A-Za-z\u00b5\u00d7%/]+"  # products/s, MB, %, x or the multiplication sign
RANGE = rf"\[(?P<low>{NUMBER})\.\.(?P<high>{NUMBER})\]"  # a median's [min..max], checked too
TAG = re.compile(
    rf"(?P<number>{NUMBER})(?:\s?{UNIT})?(?:\s{RANGE})?\s\[M: (?P<alias>\w+)#(?P<key>[\w.@-]+)\]"
)
ANY_TAG = re.compile(r"\[M[:\]]")
CODE_SPAN = re.compile(r"`[^`]*`")  # a tag inside backticks is an example, not a quote
LEGEND = "| **[M: file#key]** |"
TARGET_LINE = r"\s+(?:PASS|FAIL|-|info)\s+(.+?)(?: \(EXTRAPOLATED[^)]*\))?: (.+)$"

SCENARIOS = {
    "initial load": "initial",
    "no-change re-sync": "nochange",
    "10% changed + 1% removed": "changed",
}
APPROACHES = {
    "COPY limit (four keyed tables)": "copy",
    "production sync, in-process source": "sync",
    "naive ORM upsert, commit per product": "naive",
    "production sync end to end (HTTP, page size 100)": "e2e",
    "production sync, an unknown field on every product (kept in extras)": "extra",
}
INFO_LINES = {  # bench_sync's "info" lines, per scenario
    "end to end ÷ in-process": "e2e",
    "an unknown field on every product ÷ none": "extra",
}
TARGETS = {
    "initial load throughput ÷ COPY limit throughput": "copy_fraction",
    "no-change re-sync speed-up over the initial load": "nochange_speedup",
    "10%-changed sync speed-up over the initial load": "changed_speedup",
    "initial load speed-up over the naive ORM upsert": "naive_speedup",
    "speed-up at concurrency 8 over sequential": "speedup_c8",
    "wall time ÷ ideal at concurrency 8": "ideal_c8",
    "history on ÷ off, initial load": "history_initial",
    "history on ÷ off, 10% changed + 1% removed": "history_changed",
    "history on ÷ off, no-change re-sync": "history_nochange",
    "version rows written by the no-change re-sync": "history_written",
}


# --- figures in the outputs -----------------------------------------------------------------


def first_number(cell: str) -> str:
    """``'0.79 [0.72..0.80]'`` -> ``'0.79'``; ``'81 MB'`` -> ``'81'``."""
    found = re.search(NUMBER, cell)
    if found is None:
        raise ValueError(f"no number in {cell!r}")
    return found.group(0)


def add_range(figures: dict[str, str], key: str, cell: str) -> None:
    """``median [min..max]`` as ``key``, ``key.min`` and ``key.max``."""
    figures[key] = first_number(cell)
    bounds = re.search(rf"\[({NUMBER})\.\.({NUMBER})\]", cell)
    if bounds:
        figures[f"{key}.min"], figures[f"{key}.max"] = bounds.groups()


def table_rows(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def bench_sync_figures(text: str) -> dict[str, str]:
    """Keys ``<approach>.<scenario>.<s|range|products|rows|written|ratio>@<n>``,
    ``target.<name>@<n>``, ``info.<e2e|extra>.<scenario>@<n>``, ``memory.<scenario>@<n>``;
    in a file that has PostgreSQL sections too (``--database both``), a SQLite section's keys
    start with ``sqlite.``."""
    figures: dict[str, str] = {}
    n = 0
    prefix = ""
    both = "\n## PostgreSQL " in text and "\n## SQLite " in text
    memory = False
    for line in text.splitlines():
        section = re.match(r"## (\w+) .*, ([\d,]+) products$", line)
        if section:
            n, memory = int(section.group(2).replace(",", "")), False
            prefix = "sqlite." if both and section.group(1) == "SQLite" else ""
            continue
        found: dict[str, str] = {}
        if line.startswith("peak memory, "):
            memory = True
            continue
        cells = table_rows(line) if line.startswith("|") else []
        if memory and cells and re.fullmatch(r"[\d,]+", cells[0]):
            size = int(cells[0].replace(",", ""))
            for scenario, cell in zip(SCENARIOS.values(), cells[1:4], strict=True):
                found[f"memory.{scenario}@{size}"] = first_number(cell)
            found[f"memory.baseline@{size}"] = first_number(cells[4])
        elif len(cells) == 7 and cells[0] in APPROACHES and cells[1] in SCENARIOS:
            key = f"{APPROACHES[cells[0]]}.{SCENARIOS[cells[1]]}"
            for name, cell in zip(("s", "range", "products", "rows"), cells[2:6], strict=True):
                found[f"{key}.{name}@{n}"] = cell if name == "range" else first_number(cell)
            if cells[6] != "not measured":
                found[f"{key}.written@{n}"] = first_number(cells[6])
        elif len(cells) == 4 and cells[0] in APPROACHES:
            for scenario, cell in zip(SCENARIOS.values(), cells[1:], strict=True):
                add_range(found, f"{APPROACHES[cells[0]]}.{scenario}.ratio@{n}", cell)
        target = re.match(TARGET_LINE, line)
        if target and target.group(1) in TARGETS:
            add_range(found, f"target.{TARGETS[target.group(1)]}@{n}", target.group(2))
        found.update(versions_figures(line, n))
        info = re.match(rf"\s+info ({'|'.join(INFO_LINES)}), (.+): (.+)$", line)
        if info:
            kind, scenario = INFO_LINES[info.group(1)], SCENARIOS[info.group(2)]
            add_range(found, f"info.{kind}.{scenario}@{n}", info.group(3))
        figures.update((prefix + key, value) for key, value in found.items())
    return figures


def versions_figures(line: str, n: int) -> dict[str, str]:
    """``versions.bytes@<n>`` (a version's size) and ``versions.growth@<n>`` (per changed
    product), from bench_sync's line on the versions table."""
    sizes = re.match(
        rf"\s+info product_versions after the initial load: ({NUMBER}) .*: ({NUMBER}) "
        r"\[.* B per changed product$",
        line,
    )
    if sizes is None:
        return {}
    return {f"versions.bytes@{n}": sizes.group(1), f"versions.growth@{n}": sizes.group(2)}


def bench_extract_figures(text: str) -> dict[str, str]:
    """Keys ``c<level>.<s|products|pages|cpu|ideal|speedup>``, ``parse.<mb_s|products_s>``,
    ``target.<name>``, ``memory@<n>``, ``memory.baseline@<n>``."""
    figures: dict[str, str] = {}
    for line in text.splitlines():
        cells = table_rows(line) if line.startswith("|") else []
        if len(cells) == 9 and cells[0].isdigit():
            key = f"c{cells[0]}"
            figures[f"{key}.s"] = cells[1]
            figures[f"{key}.products"] = cells[3]
            figures[f"{key}.pages"] = cells[4]
            figures[f"{key}.cpu"] = cells[5]
            add_range(figures, f"{key}.ideal", cells[7])
            add_range(figures, f"{key}.speedup", cells[8])
        elif len(cells) == 5 and re.fullmatch(r"[\d,]+", cells[0]):
            size = int(cells[0].replace(",", ""))
            figures[f"memory@{size}"] = first_number(cells[1])
            figures[f"memory.baseline@{size}"] = first_number(cells[2])
        parse = re.match(rf"parse: .* = ({NUMBER}) MB/s, ({NUMBER}) products/s", line)
        if parse:
            figures["parse.mb_s"], figures["parse.products_s"] = parse.groups()
        target = re.match(r"\s+(?:PASS|FAIL)\s+(.+?): (.+?)  \(target", line)
        if target and target.group(1) in TARGETS:
            add_range(figures, f"target.{TARGETS[target.group(1)]}", target.group(2))
    return figures


def bench_footprint_figures(text: str) -> dict[str, str]:
    """The ``figures:`` block, ``key = value`` per line."""
    block = text.split("\nfigures:\n", 1)[1]
    return dict(re.findall(r"^\s+(\S+) = (\S+)$", block, flags=re.MULTILINE))


SCALE_TABLES = {
    "bronze.snapshots": "bronze",
    "silver.offers": "silver",
    "gold.products": "gold",
    "gold.offer_keys": "offer_keys",
}


def bench_scale_figures(text: str) -> dict[str, str]:
    """Keys ``run<N>.<stage>.<records|s|per_core|jvm|python>`` (stage ``bronze``,
    ``silver.<source>``, ``gold``, ``publish``, ``total``), ``bytes.<layer>``,
    ``data_mib.<layer>`` (``offer_keys`` for gold's second table), ``live_offers``, ``golden``,
    ``run<N>.gold.<golden|new|changed|unchanged|retired|recomputed>`` (the last where the output
    has it), ``changes.run<N>.<upserted|retired|percent>``, ``generate.s``, ``warehouse_mib``."""
    figures: dict[str, str] = {}
    run = 0
    for line in text.splitlines():
        if heading := re.match(r"## run (\d+)$", line):
            run = int(heading.group(1))
        if generated := re.match(rf"generated .*: ({NUMBER}) s ", line):
            figures["generate.s"] = generated.group(1)
        cells = table_rows(line) if line.startswith("|") else []
        if len(cells) == 6 and run and re.fullmatch(NUMBER, cells[1]):
            stage = re.sub(r"^silver (\w+) run \d+$", r"silver.\1", cells[0])
            stage = "total" if "total" in stage else stage
            for name, cell in zip(("records", "s", "per_core"), cells[1:4], strict=True):
                figures[f"run{run}.{stage}.{name}"] = cell
            if cells[4]:
                figures[f"run{run}.{stage}.jvm"] = first_number(cells[4])
                figures[f"run{run}.{stage}.python"] = first_number(cells[5])
        elif len(cells) == 4 and cells[0] in SCALE_TABLES:
            layer = SCALE_TABLES[cells[0]]
            figures[f"bytes.{layer}"] = cells[3]
            figures[f"data_mib.{layer}"] = first_number(cells[1])
        if gold := re.match(rf"\s+gold: ({NUMBER}) golden products \((.*)\)$", line):
            figures[f"run{run}.gold.golden"] = gold.group(1)
            for number, name in re.findall(rf"({NUMBER}) (\w+)", gold.group(2)):
                figures[f"run{run}.gold.{name}"] = number
        if counts := re.match(rf"live offers ({NUMBER}); active golden products ({NUMBER})", line):
            figures["live_offers"], figures["golden"] = counts.groups()
        if change := re.match(
            rf"run (\d): ({NUMBER}) upserted, ({NUMBER}) retired \(({NUMBER})%", line
        ):
            key = f"changes.run{change.group(1)}"
            figures[f"{key}.upserted"], figures[f"{key}.retired"] = change.group(2, 3)
            figures[f"{key}.percent"] = change.group(4)
        if disk := re.match(rf"warehouse on disk .*: ({NUMBER}) MiB", line):
            figures["warehouse_mib"] = disk.group(1)
    return figures


def bench_normalise_figures(text: str) -> dict[str, str]:
    """Keys ``<translate_table|python_udf>.<s|per_s>`` and ``ratio`` (the UDF's time over the
    table's)."""
    figures: dict[str, str] = {}
    for line in text.splitlines():
        cells = table_rows(line) if line.startswith("|") else []
        if len(cells) == 3 and re.fullmatch(NUMBER, cells[1]):
            method = cells[0].replace(" ", "_")
            figures[f"{method}.s"], figures[f"{method}.per_s"] = cells[1], cells[2]
        if ratio := re.match(rf"python udf / translate table: ({NUMBER})x", line):
            figures["ratio"] = ratio.group(1)
    return figures


PARSERS: dict[str, Callable[[str], dict[str, str]]] = {
    "bench_sync": bench_sync_figures,
    "bench_extract": bench_extract_figures,
    "bench_footprint": bench_footprint_figures,
    "bench_scale": bench_scale_figures,
    "bench_normalise": bench_normalise_figures,
}


def figures_of(alias: str) -> dict[str, str]:
    """Every figure of a committed output, by key."""
    name = OUTPUTS[alias]
    return PARSERS[name.split("-", 1)[0]]((PUBLISHED / name).read_text(encoding="utf-8"))


# --- figures in the documents ---------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    document: str
    line: int
    number: str
    alias: str
    key: str
    low: str | None = None
    high: str | None = None

    def figures(self) -> list[tuple[str, str]]:
        """(number as quoted, key) for the figure and, when quoted, its [min..max]."""
        shown = [(self.number, self.key)]
        if self.low is not None and self.high is not None:
            shown += [(self.low, f"{self.key}.min"), (self.high, f"{self.key}.max")]
        return shown


def quotes_in(document: str, text: str) -> list[Quote]:
    """Every tagged figure of a document."""
    found = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for match in TAG.finditer(CODE_SPAN.sub("", line)):
            found.append(
                Quote(
                    document,
                    line_number,
                    match["number"],
                    match["alias"],
                    match["key"],
                    match["low"],
                    match["high"],
                )
            )
    return found


def output_value(figures: dict[str, str], key: str) -> str | None:
    """An output's figure: the key as written, else the key at the file's largest N."""
    if key in figures:
        return figures[key]
    sizes = {int(size) for size in re.findall(r"@(\d+)", " ".join(figures))}
    if not sizes:
        return None
    at = f"@{max(sizes)}"
    base, _, bound = key.rpartition(".")
    if bound in ("min", "max"):
        return figures.get(f"{base}{at}.{bound}")
    return figures.get(f"{key}{at}")


def as_shown(value: str, number: str) -> Decimal:
    """The output's value rounded to the decimals the document shows."""
    places = len(number.split(".")[1]) if "." in number else 0
    return Decimal(value.replace(",", "")).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def mismatches(document: str, text: str) -> list[str]:
    """Why the document's quotes do not agree with the committed outputs (empty = they do)."""
    problems = []
    outputs = {alias: figures_of(alias) for alias in OUTPUTS}
    for quote in quotes_in(document, text):
        where = f"{quote.document}:{quote.line} {quote.number} [M: {quote.alias}#{quote.key}]"
        if quote.alias not in OUTPUTS:
            problems.append(f"{where}: unknown output {quote.alias!r}")
            continue
        for number, key in quote.figures():
            value = output_value(outputs[quote.alias], key)
            if value is None:
                problems.append(f"{where}: no {key} in {OUTPUTS[quote.alias]}")
            elif as_shown(value, number) != Decimal(number.replace(",", "")):
                problems.append(f"{where}: {key} is {value} in the output, not {number}")
    return problems


def read(document: str) -> str:
    return (ROOT / document).read_text(encoding="utf-8")


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_quoted_figure_equals_its_committed_output(document: str) -> None:
    assert quotes_in(document, read(document)), f"{document} quotes no measured figure"
    assert mismatches(document, read(document)) == []


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_measured_tag_names_its_output_and_follows_a_number(document: str) -> None:
    unreadable = [
        f"{document}:{number}: {line.strip()[:120]}"
        for number, line in enumerate(read(document).splitlines(), 1)
        if not line.startswith(LEGEND)
        and len(ANY_TAG.findall(CODE_SPAN.sub("", line))) != len(quotes_in(document, line))
    ]
    assert unreadable == []


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_document_names_every_output_it_quotes(document: str) -> None:
    text = read(document)
    for alias in {quote.alias for quote in quotes_in(document, text)}:
        assert f"benchmarks/published/{OUTPUTS[alias]}" in text, alias


def test_every_output_is_committed_and_parses() -> None:
    for alias, name in OUTPUTS.items():
        assert (PUBLISHED / name).is_file(), name
        assert figures_of(alias), name


def test_an_edited_figure_fails_the_check() -> None:
    text = read(DOCUMENTS[0])
    quote = quotes_in(DOCUMENTS[0], text)[0]
    edited_number = quote.number[:-1] + ("1" if quote.number[-1] != "1" else "2")
    tag = f"[M: {quote.alias}#{quote.key}]"
    edited = text.replace(f"{quote.number} {tag}", f"{edited_number} {tag}", 1)
    assert edited != text
    assert mismatches(DOCUMENTS[0], edited)


def test_a_tag_without_a_figure_before_it_is_caught() -> None:
    line = "the initial load [M: sync#sync.initial.products] was fast"
    assert len(ANY_TAG.findall(line)) == 1
    assert quotes_in("x", line) == []
