"""What the benchmarks share: the synthetic source's scenarios, the local server in a process of
its own, child processes for memory, results files, and how figures are printed."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg2
import sqlalchemy

from tools.local_api import Catalog, FakeDummyJson

SEED = 0
MILLION = 1_000_000
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
# The code whose figures a benchmark measures: a results file says if it had uncommitted changes.
PIPELINE_MODULES = ("models.py", "data_pipeline.py", "production_pipeline.py", "etl")


def scenario_variant(product_id: int, scenario: str) -> int | None:
    """A product's variant in a scenario's source, or None when the scenario removed it.

    "changed": every tenth id changes (variant 1, as ``Catalog.touch`` makes it), and ids ending
    in 01 are removed (1%, none of them changed).
    """
    if scenario != "changed":
        return 0
    if product_id % 100 == 1:
        return None
    return 1 if product_id % 10 == 0 else 0


def vm_kib(key: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmHWM`` = peak RSS of this process image)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise KeyError(key)


def _serve_catalogs(n: int, seed: int, changed: bool, latency: float, pipe: Pipe) -> None:
    """Child process: warm the catalogs' caches, serve, and obey (command, argument) messages."""
    catalogs = {"base": Catalog(n, seed, cache_size=n)}
    if changed:
        catalogs["changed"] = Catalog(n, seed, cache_size=n)
        for product_id in range(1, n + 1):
            variant = scenario_variant(product_id, "changed")
            if variant is None:
                catalogs["changed"].delete(product_id)
            elif variant:
                catalogs["changed"].touch(product_id)
    for catalog in catalogs.values():
        catalog.encoded_page(0, 0)  # one untimed pass: every product's JSON is in the cache
    api = FakeDummyJson(catalogs["base"], latency=latency).start()
    pipe.send(api.url)
    try:
        while True:
            command, argument = pipe.recv()
            if command == "stop":
                break
            if command == "catalog":
                api.catalog = catalogs[argument]
            elif command == "latency":
                api.latency = float(argument)
            pipe.send("ok")
    finally:
        api.stop()


class CatalogServer(AbstractContextManager["CatalogServer"]):
    """``FakeDummyJson`` in a spawned process, so its threads do not share this process's GIL.

    Its catalogs' JSON is cached and pre-warmed (``cache_size=n``, one untimed pass), so the
    server's own JSON encoding is not part of any timed run.
    """

    def __init__(
        self, n: int, *, seed: int = SEED, changed: bool = False, latency: float = 0.0
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(
            target=_serve_catalogs, args=(n, seed, changed, latency, child), daemon=True
        )
        started = time.perf_counter()
        self.process.start()
        child.close()
        try:
            self.url: str = self.pipe.recv()
        except EOFError:
            self.process.join()
            raise RuntimeError(
                f"the local server process died while starting (exit code {self.process.exitcode})"
            ) from None
        self.warmup_seconds = time.perf_counter() - started

    def command(self, name: str, argument: Any = None) -> None:
        """Send a command and wait for it to be applied."""
        self.pipe.send((name, argument))
        self.pipe.recv()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and wait for the process."""
        if self.process.is_alive():
            self.pipe.send(("stop", None))
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


def run_in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, pipe)`` in a spawned process and return the dict it sends back."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, sender))
    process.start()
    sender.close()
    try:
        result: dict[str, Any] = receiver.recv()
    except EOFError:
        result = {"error": f"the child process died (exit code {process.exitcode})"}
    process.join()
    return result


class Output:
    """Lines to stdout, and the same lines to the results file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("w", encoding="utf-8")

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        """Close the results file."""
        self.file.close()


def results_path(name: str) -> Path:
    """``benchmarks/results/<name>-<local date and time>.txt``."""
    return RESULTS_DIR / f"{name}-{dt.datetime.now():%Y-%m-%dT%H%M%S}.txt"


def machine_lines() -> list[str]:
    """The machine, so that figures pasted elsewhere say where they come from."""
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = vm_total_gib()
    return [
        f"code: {code_version()}",
        f"machine: {os.cpu_count()} cores, {model}, {memory_gib:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"psycopg2 {psycopg2.__version__.split()[0]}",
    ]


def code_version() -> str:
    """The commit measured, and whether the pipeline modules differ from it (work in progress)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
            ["git", "status", "--porcelain", "--", *PIPELINE_MODULES],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = sorted(line[3:] for line in dirty)
    return f"git {commit}" + (
        f", with uncommitted changes to {', '.join(changed)}" if changed else ""
    )


def vm_total_gib() -> float:
    """Physical memory in GiB, from ``/proc/meminfo``."""
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command as typed, to print above the figures."""
    return " ".join(["python", "-m", module, *map(shlex.quote, argv)])


def median_range(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median [min..max]`` of a series, or just the value when there is one."""
    if not values:
        return "n/a"
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
