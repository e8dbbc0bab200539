"""Benchmark the two ways the Spark job could give text NFKD: a fixed ``translate`` table in the
JVM (what ``scale.rules.normalise_text`` does) against a Python UDF calling ``unicodedata``.

Both normalise the same N brand and title strings (the local catalog's words, a third of them
with accents added) in local Spark; the output gives seconds and strings per second for each,
and how many strings the two disagree on (the table leaves characters that decompose to several
letters, like ``ﬁ``).

    python -m benchmarks.bench_normalise --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, Output, command_line, machine_lines, results_path
from scale.session import SparkSettings, start_session
from tools.local_api import BRANDS, TITLES

log = logging.getLogger("bench_normalise")

ACCENTED = {"e": "é", "a": "à", "o": "ô", "u": "ü", "c": "ç", "n": "ñ", "i": "ï"}


def sample_words() -> list[str]:
    """The catalog's brands and titles, each also with its vowels accented, and a ligature."""
    words = [*BRANDS, *TITLES]
    accented = ["".join(ACCENTED.get(char, char) for char in word) for word in words]
    full_width = "\uff26\uff4f\uff4f\uff44"  # "Food" in full-width letters
    return [*words, *accented, f"\ufb01ne {full_width} 250g"]  # \ufb01: the "fi" ligature


def python_nfkd(text: str | None) -> str | None:
    """The exact rule in Python: NFKD, combining marks removed, lower case, units split, one
    space between words."""
    if text is None:
        return None
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char)).lower()
    spaced = "".join(f"{a} " if a.isdigit() and b.isalpha() else a
                     for a, b in zip(stripped, [*stripped[1:], ""], strict=True))  # fmt: skip
    return " ".join("".join(c if c.isalnum() else " " for c in spaced).split())


def timed(frame: Any) -> float:
    """Seconds to compute every row of ``frame`` (Spark's no-op sink evaluates and drops it)."""
    started = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_normalise", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="strings to normalise")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran, 2 on bad usage."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.rows < 1:
        print("error: expected --rows >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from pyspark.sql import functions as F  # noqa: PLC0415 (the job's optional dependency)

    from scale.rules import normalise_text  # noqa: PLC0415 (imports pyspark)

    out = Output(results_path("bench_normalise"))
    with tempfile.TemporaryDirectory() as scratch:
        settings = SparkSettings(master=args.master, driver_memory="2g", local_dir=Path(scratch))
        spark = start_session(settings, app_name="bench-normalise")
        try:
            out(f"# bench_normalise, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
            out()
            out(f"command: {command_line('benchmarks.bench_normalise', arguments)}")
            for line in machine_lines():
                out(line)
            words = sample_words()
            position = (F.col("id") % len(words) + 1).cast("int")
            pick = F.element_at(F.array(*map(F.lit, words)), position)
            texts = spark.range(args.rows).select(pick.alias("text")).cache()
            texts.count()
            udf = F.udf(python_nfkd, "string")
            table = timed(texts.select(normalise_text(F.col("text"))))
            python = timed(texts.select(udf(F.col("text"))))
            both = texts.select(normalise_text(F.col("text")).alias("a"), udf("text").alias("b"))
            differ = both.where("a != b").select("a", "b").distinct().collect()
            out(f"{args.rows:,} strings, {len(words)} distinct, {args.master}")
            out()
            out("| method | seconds | strings/s |")
            out("|---|---|---|")
            out(f"| translate table | {table:.1f} | {args.rows / table:,.0f} |")
            out(f"| python udf | {python:.1f} | {args.rows / python:,.0f} |")
            out(f"python udf / translate table: {python / table:.1f}x the time")
            out(f"distinct strings the two disagree on: {len(differ)}")
            for row in differ:
                out(f"  translate {row['a']!r}, python {row['b']!r}")
        finally:
            spark.stop()
            out.close()
            log.info("results written to %s", out.path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
