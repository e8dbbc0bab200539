"""Benchmark extraction: paging ``/products`` from the local server with latency (issue 4).

In one run, against ``tools.local_api.FakeDummyJson`` with an injected latency per request (20 ms
by default), ``data_pipeline.iter_products`` pages through N products (100,000 at page size 100
by default) at each concurrency asked for (1, 4 and 8), repetitions interleaved. For each it
prints wall time, products/s, pages/s, the client's CPU time, the ideal time
(pages x latency / concurrency + parse time) and the ratio to it, and the speed-up over the
sequential run, paired within a repetition. Parse time is the client's ``decode_json`` (exact
decimals, each product digested) of the same page bodies, fetched beforehand and parsed on
their own, which also gives the parse throughput in MB/s. Peak memory (``VmHWM``) is read in a
child process per N (100,000, and 1,000,000 with ``--million``), at the highest concurrency.

The server runs in a process of its own (on this 2-core machine its threads would otherwise
share the client's GIL), with its JSON cached and pre-warmed by one untimed pass, so the
server's JSON encoding is not part of any timed run.

    python -m benchmarks.bench_extract [--products 100000] [--latency-ms 20]
        [--concurrency 1,4,8] [--million] [--repeats 3] [--page-size 100]

The output also goes to ``benchmarks/results/bench_extract-<date>.txt``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import inspect
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import requests

from benchmarks.harness import (
    MILLION,
    ROOT,
    CatalogServer,
    Output,
    command_line,
    machine_lines,
    median_range,
    results_path,
    run_in_child,
    verdict,
    vm_kib,
)
from data_pipeline import Extraction, iter_products, page_plan
from etl.client import DummyJsonClient
from etl.decoding import decode_json

log = logging.getLogger(__name__)

TARGET_SPEEDUP = 5.0  # at concurrency 8 over sequential
TARGET_IDEAL_RATIO = 1.5  # wall time at most 1.5x the ideal
TARGET_CONCURRENCY = 8


def make_client(url: str, concurrency: int) -> DummyJsonClient:
    """A client with a connection per concurrent request and no request pacing, where supported."""
    wanted: dict[str, Any] = {"pool_size": max(concurrency, 1), "rate_limit": 0.0}
    accepted = inspect.signature(DummyJsonClient).parameters
    return DummyJsonClient(url, **{k: v for k, v in wanted.items() if k in accepted})


def start_paging(
    client: DummyJsonClient, page_size: int, extraction: Extraction, concurrency: int
) -> Any:
    """``iter_products`` at this concurrency; TypeError if this version cannot page in parallel."""
    if concurrency == 1:
        return iter_products(client, page_size, extraction)
    return iter_products(client, page_size, extraction, concurrency=concurrency)


@dataclass
class Run:
    """One timed extraction."""

    seconds: float
    cpu_seconds: float
    pages: int
    received: int
    complete: bool


@dataclass
class Results:
    """Timed runs per concurrency, one per repetition; None where it is not available."""

    runs: dict[int, list[Run]] = field(default_factory=dict)
    unavailable: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def seconds(self, concurrency: int) -> list[float]:
        return [run.seconds for run in self.runs.get(concurrency, [])]


def time_extraction(url: str, page_size: int, concurrency: int) -> Run:
    """Page through the whole catalog once, counting products, timed from first request to end."""
    client = make_client(url, concurrency)
    extraction = Extraction()
    try:
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        products = start_paging(client, page_size, extraction, concurrency)
        received = sum(1 for _ in products)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    finally:
        client.close()
    return Run(seconds, cpu_seconds, extraction.pages, received, extraction.complete)


def fetch_bodies(url: str, page_size: int) -> list[bytes]:
    """The page bodies a sequential extraction receives: the same requests, made beforehand."""
    with requests.Session() as session:

        def body(skip: int, limit: int) -> bytes:
            response = session.get(
                f"{url}/products", params={"limit": limit, "skip": skip}, timeout=30
            )
            response.raise_for_status()
            return response.content

        first = body(0, page_size)
        total = json.loads(first)["total"]
        return [first, *(body(skip, limit) for skip, limit in page_plan(total, page_size))]


def time_parse(bodies: Sequence[bytes], passes: int = 3) -> float:
    """Median seconds to decode every body as the client does (exact decimals, digests)."""
    timings = []
    for _ in range(passes):
        gc.collect()
        started = time.perf_counter()
        for body in bodies:
            decode_json(body)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _extract_child(url: str, page_size: int, concurrency: int, pipe: Pipe) -> None:
    """Child process: extract everything, then report this process's peak RSS."""
    try:
        client = make_client(url, concurrency)
        extraction = Extraction()
        baseline = vm_kib("VmHWM")
        started = time.perf_counter()
        received = sum(1 for _ in start_paging(client, page_size, extraction, concurrency))
        seconds = time.perf_counter() - started
        client.close()
        pipe.send(
            {
                "peak_kib": vm_kib("VmHWM"),
                "baseline_kib": baseline,
                "seconds": seconds,
                "received": received,
                "complete": extraction.complete,
            }
        )
    except Exception as exc:
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def measure_memory(url: str, page_size: int, concurrency: int) -> dict[str, Any]:
    """Run one extraction in a spawned child and return its peak RSS (``VmHWM``)."""
    return run_in_child(_extract_child, url, page_size, concurrency)


# --- command line -----------------------------------------------------------------------------


def parse_concurrency(text_value: str) -> tuple[int, ...]:
    """``1,4,8`` -> (1, 4, 8); 1 is always measured, as the baseline."""
    try:
        levels = {int(part) for part in text_value.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected levels like 1,4,8, got {text_value!r}"
        ) from None
    if not levels or min(levels) < 1 or max(levels) > 64:
        raise argparse.ArgumentTypeError(f"expected levels in 1..64, got {text_value!r}")
    return tuple(sorted(levels | {1}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_extract",
        description="Benchmark paging /products from the local server, sequential vs parallel.",
    )
    parser.add_argument("--products", type=int, default=100_000, help="catalog size")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="server latency per request")
    parser.add_argument("--concurrency", type=parse_concurrency, default=(1, 4, 8))
    parser.add_argument(
        "--million", action="store_true", help="also read peak memory at 1,000,000 products"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--page-size", type=int, default=100, help="products per request")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran, 1 when a run failed (or --strict and a target failed)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.repeats < 1 or args.products < 1 or not 1 <= args.page_size <= 10_000:
        print(
            "error: expected --repeats >= 1, --products >= 1, --page-size 1..10000", file=sys.stderr
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("data_pipeline").setLevel(logging.WARNING)
    out = Output(results_path("bench_extract"))
    try:
        return _run(args, arguments, out)
    finally:
        out.close()
        log.info("results written to %s", out.path.relative_to(ROOT))


def _run(args: argparse.Namespace, arguments: list[str], out: Output) -> int:
    latency = args.latency_ms / 1000
    levels: tuple[int, ...] = args.concurrency
    out(f"# bench_extract, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    out()
    out(f"command: {command_line('benchmarks.bench_extract', arguments)}")
    for line in machine_lines():
        out(line)
    with CatalogServer(args.products) as server:
        out(
            f"server: tools.local_api.FakeDummyJson with {args.products:,} products in its own "
            f"process (not sharing the client's GIL); JSON cached and pre-warmed by one untimed "
            f"pass ({server.warmup_seconds:.1f} s), so its encoding is not timed; "
            f"latency {args.latency_ms:g} ms per request"
        )
        out(
            f"client: data_pipeline.iter_products, page size {args.page_size}, "
            "DummyJsonClient with pool_size = concurrency and no request pacing"
        )
        out(
            f"repetitions: {args.repeats}, interleaved (each runs every concurrency, the first "
            "one rotating); ratios paired within a repetition"
        )
        out()
        bodies = fetch_bodies(server.url, args.page_size)
        parse_seconds = time_parse(bodies)
        total_bytes = sum(map(len, bodies))
        out(
            f"parse: {len(bodies):,} page bodies, {total_bytes / 1e6:,.1f} MB of JSON, "
            f"decode_json in {parse_seconds:.3f} s = "
            f"{total_bytes / 1e6 / parse_seconds:,.1f} MB/s, "
            f"{args.products / parse_seconds:,.0f} products/s (median of 3 passes, one thread)"
        )
        del bodies
        server.command("latency", latency)
        results = Results()
        out()
        out("raw timings:")
        for rep in range(args.repeats):
            shift = rep % len(levels)
            for level in levels[shift:] + levels[:shift]:
                if level in results.unavailable:
                    continue
                try:
                    run = time_extraction(server.url, args.page_size, level)
                except TypeError as exc:
                    results.unavailable[level] = str(exc)
                    out(f"  rep {rep + 1} concurrency {level}: not available ({exc})")
                    continue
                if not run.complete or run.received != args.products:
                    results.errors.append(
                        f"concurrency {level} rep {rep + 1}: received {run.received:,} of "
                        f"{args.products:,}, complete={run.complete}"
                    )
                results.runs.setdefault(level, []).append(run)
                out(
                    f"  rep {rep + 1} concurrency {level:>2}: {run.seconds:8.3f} s, "
                    f"client CPU {run.cpu_seconds:7.3f} s, {run.pages} pages, "
                    f"{run.received:,} products, complete={run.complete}"
                )
        memory: dict[int, dict[str, Any]] = {}
        measured_level = max(level for level in levels if level not in results.unavailable)
        if not args.no_memory:
            memory[args.products] = measure_memory(server.url, args.page_size, measured_level)
    if not args.no_memory and args.million:
        with CatalogServer(MILLION, latency=latency) as big:
            out(f"(server with 1,000,000 products pre-warmed in {big.warmup_seconds:.1f} s)")
            memory[MILLION] = measure_memory(big.url, args.page_size, measured_level)
    parse = (total_bytes, parse_seconds)
    passed = summarize(args, results, parse, latency, memory, measured_level, out)
    out()
    if results.errors:
        out("ERRORS:")
        for error in results.errors:
            out(f"  {error}")
        return 1
    out(f"all targets passed: {'yes' if passed else 'no'}")
    return 1 if args.strict and not passed else 0


def summarize(
    args: argparse.Namespace,
    results: Results,
    parse: tuple[int, float],
    latency: float,
    memory: dict[int, dict[str, Any]],
    measured_level: int,
    out: Output,
) -> bool:
    """The table, the target checks and the memory figures; True if every target passed."""
    total_bytes, parse_seconds = parse
    out()
    out(
        f"## Extraction of {args.products:,} products, page size {args.page_size}, "
        f"latency {args.latency_ms:g} ms"
    )
    out()
    out(
        "ideal = pages x latency / concurrency + parse time "
        f"({parse_seconds:.3f} s); ratios are medians [min..max] of per-repetition ratios."
    )
    out()
    out(
        "| concurrency | median s | min..max s | products/s | pages/s | client CPU s | ideal s "
        "| ÷ ideal | speed-up over 1 |"
    )
    out("|---|---|---|---|---|---|---|---|---|")
    ideal_ratios: dict[int, list[float]] = {}
    speedups: dict[int, list[float]] = {}
    sequential = results.seconds(1)
    for level in args.concurrency:
        if level in results.unavailable:
            out(f"| {level} | not available | | | | | | | |")
            continue
        runs = results.runs.get(level, [])
        if not runs:
            continue
        seconds = [run.seconds for run in runs]
        middle = statistics.median(seconds)
        pages = runs[0].pages
        ideal = pages * latency / level + parse_seconds
        ideal_ratios[level] = [s / ideal for s in seconds]
        speedups[level] = [a / b for a, b in zip(sequential, seconds, strict=False)]
        cpu = statistics.median(run.cpu_seconds for run in runs)
        out(
            f"| {level} | {middle:.3f} | {min(seconds):.3f}..{max(seconds):.3f} | "
            f"{args.products / middle:,.0f} | {pages / middle:,.1f} | {cpu:.2f} | {ideal:.3f} | "
            f"{median_range(ideal_ratios[level])} | {median_range(speedups[level])} |"
        )
    out()
    out("targets:")
    passed = True
    target = TARGET_CONCURRENCY if TARGET_CONCURRENCY in args.concurrency else measured_level
    if target in results.unavailable or target not in speedups:
        out(f"  FAIL concurrency {target}: not available, so neither target can be met")
        passed = False
    else:
        ok = statistics.median(speedups[target]) >= TARGET_SPEEDUP
        out(
            f"  {verdict(ok):<4} speed-up at concurrency {target} over sequential: "
            f"{median_range(speedups[target])}  (target >= {TARGET_SPEEDUP:.0f}x)"
        )
        passed &= ok
        ok = statistics.median(ideal_ratios[target]) <= TARGET_IDEAL_RATIO
        out(
            f"  {verdict(ok):<4} wall time ÷ ideal at concurrency {target}: "
            f"{median_range(ideal_ratios[target])}  (target <= {TARGET_IDEAL_RATIO:g})"
        )
        passed &= ok
    out(
        f"  info parse throughput: {total_bytes / 1e6 / parse_seconds:,.1f} MB/s of JSON, "
        f"{args.products / parse_seconds:,.0f} products/s; decoding holds the GIL, so the "
        "parse time is a floor at every concurrency"
    )
    if memory:
        memory_table(memory, measured_level, results, out)
    return passed


def memory_table(
    memory: dict[int, dict[str, Any]], measured_level: int, results: Results, out: Output
) -> None:
    """Peak RSS per N, to show it flat; a child that fell short is an error."""
    out()
    out(f"peak memory (child process, concurrency {measured_level}, VmHWM):")
    out()
    out("| products | peak | after imports | seconds | complete |")
    out("|---|---|---|---|---|")
    for n, result in sorted(memory.items()):
        if "error" in result:
            results.errors.append(f"memory at {n:,}: {result['error']}")
            out(f"| {n:,} | ERROR {result['error']} | | | |")
            continue
        out(
            f"| {n:,} | {result['peak_kib'] / 1024:.0f} MB | "
            f"{result['baseline_kib'] / 1024:.0f} MB | {result['seconds']:.1f} | "
            f"{result['complete']} ({result['received']:,}) |"
        )
        if result["received"] != n or not result["complete"]:
            results.errors.append(f"memory at {n:,}: received {result['received']:,}")
    if MILLION not in memory:
        out()
        out("(peak memory at 1,000,000 products: pass --million)")


if __name__ == "__main__":
    raise SystemExit(main())
