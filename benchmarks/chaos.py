"""Fault campaign: randomized trials of the production sync under faults, invariants checked.

Each trial builds a fresh catalog in the local DummyJSON server and a fresh database (a SQLite
file, or a PostgreSQL schema of its own), syncs once cleanly to have a *previous* state, changes
the source (products touched, deleted, added), then runs ``production_pipeline.py`` as a real
subprocess against a second server over the same catalog that injects a seeded mix of faults:

* 500/502/503 and 429 answers, truncated bodies, dropped connections, stalls beyond the read
  timeout, each on a random page and 1 to 3 times in a row (3 outlasts the retries);
* a catalog change between two pages (products touched, deleted ahead, or deleted behind the
  cursor while one is added, the shift offset paging cannot see by counting);
* a busy source (the "busy" trials): the server deletes products behind the client's offset and
  appends new ones every 1 to 3 list requests, and the run may re-read 0, 2 or the default
  number of times, so that some runs heal every shift and others end ``partial``;
* SIGKILL at a random moment of the sync (a random log line, or a random delay after start);
* hostile input (the "hostile" trials): products whose id cannot be read (deletions must
  wait), prices with float noise (rounded to the cent) or real sub-cent precision (set aside),
  skus exchanged between two products, a first page announcing an absurd total, a page that
  trickles past the request deadline, and Ctrl-C or SIGTERM while paging;
* the database connection cut mid-write: on PostgreSQL the sync's backend is terminated with
  ``pg_terminate_backend`` while a lock held by the harness keeps it inside a statement (the
  COPY of new products while paging, the deletion of stale ones, or the merge); on SQLite,
  which has no connection to cut, the process is killed there instead.

After the run the database is compared with the previous state and with the source. A product
that changed while paging may be at either of its two versions (offset paging reads each page
at a different moment), and after a ``partial`` run a product the source dropped may still be
at its previous row (its deletion waits); everything else must match exactly. Must-be-zero
figures: valid products lost, inconsistent states (neither the previous catalog nor the
source's), duplicate keys, orphaned child rows, false successes (exit 0 or a run recorded
``succeeded`` while the catalog is not the source's), unclean ends (a traceback, a hang, a
failure without a one-line error or without its ``pipeline_runs`` record) and catalogs that a
clean rerun does not bring back; and histories out of step: the product history's current
versions, read as of the end of the trial, must be the catalog exactly, however the run ended.

    python -m benchmarks.chaos --trials 200 --database both --seed 1 [--products 200]
                               [--category busy]

Exit 0 only if every must-be-zero figure is zero. ``--trial N`` replays one trial of a seed.
PostgreSQL comes from ``TEST_DATABASE_URL`` when set, else a throwaway ``pgserver``. The table is
also written to ``benchmarks/results/chaos-<database>.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import production_pipeline
from data_pipeline import iter_products
from etl.client import DummyJsonClient
from etl.settings import resolve_settings
from models import PipelineRun, create_schema, make_engine
from tools.catalog_state import database_catalog, served_catalog, versioned_catalog
from tools.local_api import Catalog, FakeDummyJson, Fault
from tools.throwaway_postgres import postgres_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE_SIZE = 20
READ_TIMEOUT = 1.0
STALL_SECONDS = 1.6  # beyond the read timeout
MAX_RETRIES = 2  # so a fault 3 times in a row outlasts them
RUN_TIMEOUT = 90.0  # a run still alive after this is counted as hung
HTTP_KINDS = ("500", "502", "503", "429", "truncate", "drop")
CHANGE_KINDS = ("touch", "shift", "delete-ahead", "add", "delete-ahead-and-add")
# Each trial has a primary fault so that even a few trials cover every kind.
PRIMARY = ("http", "stall", "change", "sigkill", "dbcut", "storm", "hostile", "busy")
BUSY_EVERY = (1, 2, 3)  # list requests between two moves of a busy source
BUSY_REREADS = (0, 2, None)  # --max-rereads of a busy trial's run (None: the default)
HEALED = re.compile(r"extraction: complete, .*\d+ shift\(s\), [1-9]\d* re-read\(s\)")
# Hostile products: what a product becomes ("sku-swap" takes two), and run-level hostility.
HOSTILE_PRODUCTS = ("unreadable-id", "float-noise", "sub-cent", "sku-swap")
HOSTILE_RUNS = ("none", "none", "huge-total", "trickle", "SIGINT", "SIGTERM")
REQUEST_DEADLINE = 1.5  # seconds: a trickling page outlives it
TRICKLE_SECONDS = 0.05  # between two bytes of a trickling page
CHILD_KEYS = {"product_tags": "product_id", "product_images": "product_id", "reviews": "product_id"}
TABLE_KEYS = {
    "products": "id",
    "product_tags": "product_id, position",
    "product_images": "product_id, position",
    "reviews": "product_id, position",
    "pipeline_runs": "id",
    "rejected_records": "id",
}
FAULT_LABELS = (
    ("500", "HTTP 500"),
    ("502", "HTTP 502"),
    ("503", "HTTP 503"),
    ("429", "HTTP 429 (Retry-After)"),
    ("truncate", "truncated body"),
    ("drop", "dropped connection"),
    ("stall", "stall beyond the read timeout"),
    ("change", "catalog change between pages"),
    ("busy", "busy source: catalog moves while paging"),
    ("sigkill", "SIGKILL at a random moment"),
    ("dbcut", "database connection cut mid-write"),
    ("unreadable-id", "product without a readable id"),
    ("float-noise", "price with float noise"),
    ("sub-cent", "price with sub-cent precision"),
    ("sku-swap", "skus exchanged by two products"),
    ("huge-total", "absurd total on the first page"),
    ("trickle", "page trickling past the deadline"),
    ("SIGINT", "Ctrl-C while paging"),
    ("SIGTERM", "SIGTERM while paging"),
)
MUST_BE_ZERO = (
    ("lost", "valid products lost"),
    ("inconsistent", "inconsistent states (old/new mix)"),
    ("duplicates", "duplicate keys"),
    ("orphans", "orphaned child rows"),
    ("false_success", "runs reported successful that were not"),
    ("unclean", "unclean ends (traceback, hang, unrecorded)"),
    ("not_recovered", "catalogs a clean rerun did not restore"),
    ("history", "histories unlike the catalog (current versions)"),
)


# --- what a trial does -------------------------------------------------------------------------


@dataclass
class Plan:
    """The seeded decisions of one trial."""

    primary: str
    touch: list[int]
    delete: list[int]
    add: int
    concurrency: int
    http: list[tuple[int, str, int]] = field(default_factory=list)  # (page index, kind, times)
    stall: tuple[int, int] | None = None  # (page index, times)
    change: tuple[int, str] | None = None  # (page index >= 1, kind)
    kill: str | None = None  # "sigkill" | "dbcut" | "SIGINT" | "SIGTERM"
    kill_moment: str = ""  # a log needle, or "after:<seconds>"
    hostile: list[tuple[str, int]] = field(default_factory=list)  # (kind, product id)
    hostile_run: str = "none"  # "huge-total" | "trickle" | "SIGINT" | "SIGTERM" | "none"
    busy: tuple[int, int] | None = None  # (list requests between moves, products per move)
    max_rereads: int | None = None  # the run's --max-rereads (None: the default)

    def sync_flags(self) -> list[str]:
        """The flags the plan adds to the faulty run."""
        return [] if self.max_rereads is None else ["--max-rereads", str(self.max_rereads)]

    def describe(self) -> str:
        parts = [f"primary={self.primary}", f"concurrency={self.concurrency}"]
        parts.append(f"touch={len(self.touch)} delete={len(self.delete)} add={self.add}")
        if self.http:
            parts.append("http=" + ",".join(f"{k}x{t}@p{p}" for p, k, t in self.http))
        if self.stall:
            parts.append(f"stall x{self.stall[1]}@p{self.stall[0]}")
        if self.change:
            parts.append(f"change={self.change[1]}@p{self.change[0]}")
        if self.kill:
            parts.append(f"{self.kill} at {self.kill_moment!r}")
        if self.hostile:
            parts.append("hostile=" + ",".join(f"{kind}:{pid}" for kind, pid in self.hostile))
        if self.hostile_run != "none":
            parts.append(f"hostile-run={self.hostile_run}")
        if self.busy:
            parts.append(f"busy=every {self.busy[0]}, {self.busy[1]} a move")
        if self.max_rereads is not None:
            parts.append(f"max-rereads={self.max_rereads}")
        return " ".join(parts)


def make_plan(rng: random.Random, trial: int, products: int, pages: int) -> Plan:
    """Draw one trial's faults; ``trial`` picks the primary fault, the rest is random."""
    primary = PRIMARY[trial % len(PRIMARY)]
    ids = list(range(1, products + 1))
    rng.shuffle(ids)
    mass_delete = rng.random() < 0.05
    n_delete = products // 8 if mass_delete else rng.randint(0, max(products // 40, 1))
    delete = sorted(ids[:n_delete])
    n_touch = rng.randint(0, max(products // 8, 1))
    touch = sorted(ids[n_delete : n_delete + n_touch])
    if primary == "dbcut" and not touch:
        touch = [ids[n_delete]]
    plan = Plan(
        primary=primary,
        touch=touch,
        delete=delete,
        add=rng.randint(0, 3),
        concurrency=rng.choice((1, 2, 4)),
    )
    # Most faults are retried away; a fault 3 times in a row outlasts the retries and fails
    # the run. The storm trials fail most runs, the others let most runs through.
    rate = {"http": 0.25, "storm": 0.5}.get(primary, 0.04)
    times = (1, 1, 1, 2, 2, 3) if primary in ("http", "storm") else (1, 1, 1, 1, 2, 2, 3)
    for page in range(pages):
        if rng.random() < rate:
            plan.http.append((page, rng.choice(HTTP_KINDS), rng.choice(times)))
    if primary == "stall" or rng.random() < 0.05:
        plan.stall = (rng.randrange(pages), rng.choice((1, 1, 3)))
    if (primary == "change" or rng.random() < 0.15) and pages > 1:
        plan.change = (rng.randrange(1, pages), rng.choice(CHANGE_KINDS))
    if primary == "sigkill" or (primary not in ("dbcut", "storm") and rng.random() < 0.15):
        plan.kill = "sigkill"
        moments = ["sync http", "deleting", "merging", "sync finished", "page", "page", "after"]
        moment = rng.choice(moments)
        if moment == "page":
            moment = f"page:{rng.randrange(pages)}"
        elif moment == "after":
            moment = f"after:{rng.uniform(0.0, 0.4):.3f}"
        plan.kill_moment = moment
    elif primary == "dbcut" or rng.random() < 0.1:
        plan.kill = "dbcut"
        moments = ["merging", "merging", "writing", "writing"]
        moments += ["deleting"] if delete and not mass_delete else []
        plan.kill_moment = rng.choice(moments)
        if plan.kill_moment == "merging" and not touch:
            plan.touch = [ids[n_delete]]
        if plan.kill_moment == "writing" and not plan.add:
            plan.add = 1  # a new product: its rows are copied into the catalog while paging
    _plan_category(plan, rng, ids[n_delete + n_touch :], pages)
    return plan


def _plan_category(plan: Plan, rng: random.Random, spare: list[int], pages: int) -> None:
    """What only the hostile and the busy trials do. A busy trial's source moves under the run,
    and its run may spend a few re-reads on it, or none."""
    if plan.primary == "hostile":
        _plan_hostility(plan, rng, spare, pages)
    elif plan.primary == "busy":
        plan.busy = (rng.choice(BUSY_EVERY), rng.choice((1, 2)))
        plan.max_rereads = rng.choice(BUSY_REREADS)


def _plan_hostility(plan: Plan, rng: random.Random, spare: list[int], pages: int) -> None:
    """Hostile products among those the trial did not otherwise change, and one run-level act."""
    plan.http, plan.stall, plan.change, plan.kill = [], None, None, None
    free = list(spare)
    for kind in rng.sample(HOSTILE_PRODUCTS, rng.randint(1, len(HOSTILE_PRODUCTS))):
        if len(free) < 2:
            break
        plan.hostile.append((kind, free.pop()))
        if kind == "sku-swap":
            plan.hostile.append((kind, free.pop()))
    plan.hostile_run = rng.choice(HOSTILE_RUNS)
    if plan.hostile_run in ("SIGINT", "SIGTERM") and pages > 1:
        plan.kill = plan.hostile_run
        plan.kill_moment = f"page:{rng.randrange(pages - 1)}"
    elif plan.hostile_run in ("SIGINT", "SIGTERM"):
        plan.hostile_run = "none"


def make_hostile(catalog: Catalog, plan: Plan) -> None:
    """Serve the plan's hostile products from the catalog (``heal`` undoes it)."""
    swap = [pid for kind, pid in plan.hostile if kind == "sku-swap"]
    for kind, pid in plan.hostile:
        product = catalog.get(pid)
        if product is None:
            continue
        if kind == "unreadable-id":
            catalog.put({**product, "id": str(pid)}, at_id=pid)
        elif kind == "float-noise":
            catalog.put({**product, "price": math.nextafter(float(product["price"]), math.inf)})
        elif kind == "sub-cent":
            catalog.put({**product, "price": float(product["price"]) + 0.001})
    if len(swap) == 2:
        first, second = (catalog.get(pid) for pid in swap)
        if first is not None and second is not None:
            catalog.put({**first, "sku": second["sku"]})
            catalog.put({**second, "sku": first["sku"]})


def heal(catalog: Catalog, plan: Plan) -> None:
    """Serve every hostile product as a valid one again (a new version of it)."""
    for _, pid in plan.hostile:
        if pid in catalog.ids():
            catalog.touch(pid)


# --- per-database set-up -----------------------------------------------------------------------


@dataclass
class TrialDatabase:
    """A fresh database for one trial: the sync's URL, the harness's engine, and its clean-up."""

    sync_url: str  # what the subprocess gets (PostgreSQL: with an application_name to find it)
    engine: Engine  # the harness's own engine
    application_name: str | None
    cleanup: Callable[[], None]


class Databases:
    """Makes a fresh database per trial on SQLite (a file) or PostgreSQL (a schema)."""

    def __init__(self, kind: str, workdir: Path, postgres_server_url: str | None) -> None:
        self.kind = kind
        self.workdir = workdir
        self.server_url = postgres_server_url
        self.admin: Engine | None = None
        if kind == "postgresql":
            assert postgres_server_url is not None
            self.admin = create_engine(_pg_url(postgres_server_url), isolation_level="AUTOCOMMIT")

    def new(self, trial: int) -> TrialDatabase:
        token = uuid.uuid4().hex[:10]
        if self.kind == "sqlite":
            path = self.workdir / f"trial-{trial}-{token}.db"
            url = f"sqlite:///{path}"
            engine = make_engine(url)

            def drop_file() -> None:
                engine.dispose()
                for suffix in ("", "-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        Path(f"{path}{suffix}").unlink()

            return TrialDatabase(url, engine, None, drop_file)
        assert self.admin is not None and self.server_url is not None
        schema = f"chaos_{trial}_{token}"
        app = f"chaos-sync-{token}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine(_pg_url(self.server_url, schema))
        sync_url = _pg_url(self.server_url, schema, application_name=app)

        def drop_schema() -> None:
            engine.dispose()
            assert self.admin is not None
            with self.admin.connect() as conn:
                conn.execute(text("SET lock_timeout = '30s'"))
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))

        return TrialDatabase(sync_url, engine, app, drop_schema)

    def close(self) -> None:
        if self.admin is not None:
            self.admin.dispose()


def _pg_url(server_url: str, schema: str | None = None, application_name: str | None = None) -> str:
    """The server URL (psycopg2 driver), optionally pinned to a schema and an application name."""
    url = make_url(server_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")
    query = dict(url.query)
    if schema:
        query["options"] = f"-csearch_path={schema}"
    if application_name:
        query["application_name"] = application_name
    return url.set(query=query).render_as_string(hide_password=False)


# --- the run under faults ----------------------------------------------------------------------


class Output:
    """The lines a subprocess prints, collected by a thread, waitable by needle."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def wait_for(self, needle: str, timeout: float) -> bool:
        """True once a line contains ``needle``; False if the output ended first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(needle in line for line in self.lines):
                    return True
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    return False
                self._changed.wait(remaining)

    def finish(self, timeout: float = 10) -> str:
        self._thread.join(timeout)
        return "\n".join(self.lines)


SyncCommand = Callable[[str, str, int], list[str]]


def sync_command(api_url: str, database_url: str, concurrency: int) -> list[str]:
    """The faulty run: ``production_pipeline.py`` with short timeouts and few retries."""
    return [
        sys.executable,
        "production_pipeline.py",
        "--api-url",
        api_url,
        "--database-url",
        database_url,
        "--page-size",
        str(PAGE_SIZE),
        "--max-retries",
        str(MAX_RETRIES),
        "--connect-timeout",
        "1",
        "--read-timeout",
        str(READ_TIMEOUT),
        "--rate-limit",
        "0",
        "--concurrency",
        str(concurrency),
        "--lock-timeout",
        "20",
        "--request-deadline",
        str(REQUEST_DEADLINE),
        "-v",
    ]


def _settings(api_url: str, database_url: str) -> Any:
    """Settings for the harness's own (clean) runs, through the same flags the CLI parses."""
    flags = ["--api-url", api_url, "--database-url", database_url, "--rate-limit", "0"]
    args = production_pipeline.build_parser().parse_args([*flags, "--page-size", str(PAGE_SIZE)])
    return resolve_settings(args, environ={})


def clean_sync(api_url: str, db: TrialDatabase) -> None:
    """An in-process sync without faults (the trial's previous state, or its recovery)."""
    options = production_pipeline.SyncOptions(allow_mass_delete=True)
    production_pipeline.run_sync(_settings(api_url, db.sync_url), db.engine, options)


def page_skips(api: FakeDummyJson) -> list[int]:
    """The ``skip`` of every list request a sync of the current catalog makes, in order."""
    before = len(api.list_requests())
    with DummyJsonClient(api.url, max_retries=0) as client:
        for _ in iter_products(client, PAGE_SIZE):
            pass
    return sorted({int(r.query.get("skip", "0")) for r in api.list_requests()[before:]})


@dataclass
class RunResult:
    """How the faulty run ended."""

    returncode: int | None
    output: str
    killed: bool = False
    signalled: bool = False  # Ctrl-C or SIGTERM: it must stop cleanly, as interrupted
    hung: bool = False
    injected: Counter[str] = field(default_factory=Counter)


def _arm_change(
    api: FakeDummyJson, skips: list[int], plan: Plan, rng: random.Random, fired: list[str]
) -> None:
    """Register the catalog change that happens just before a page is served."""
    if plan.change is None:
        return
    page, kind = plan.change
    skip = skips[min(page, len(skips) - 1)]

    def change(catalog: Catalog) -> None:
        ids = catalog.ids()
        behind = [pid for pos, pid in enumerate(ids) if pos < skip]
        ahead = [pid for pos, pid in enumerate(ids) if pos > skip + PAGE_SIZE]
        if kind == "touch":
            for pid in rng.sample(ids, min(3, len(ids))):
                catalog.touch(pid)
        elif kind == "shift" and behind:
            catalog.delete(rng.choice(behind))
            catalog.add()
        elif kind in ("delete-ahead", "delete-ahead-and-add") and ahead:
            catalog.delete(rng.choice(ahead))
            if kind == "delete-ahead-and-add":
                catalog.add()
        elif kind == "add":
            catalog.add()
        else:
            return
        fired.append(kind)

    api.on_list_request(skip, change)


def _add_faults(
    api: FakeDummyJson, plan: Plan, skips: list[int], rng: random.Random
) -> list[tuple[str, int, Fault]]:
    """Inject the plan's HTTP faults; return (kind, times planned, fault) to count hits later."""
    faults: list[tuple[str, int, Fault]] = []
    for page, kind, times in plan.http:
        skip = skips[min(page, len(skips) - 1)]
        if kind in ("truncate", "drop"):
            fault = Fault(kind, skip=skip, times=times)
        else:
            retry_after = rng.choice(("0", "0", "0", "1")) if kind in ("429", "503") else None
            fault = Fault(
                "status", skip=skip, status=int(kind), times=times, retry_after=retry_after
            )
        faults.append((kind, times, fault))
    if plan.stall is not None:
        page, times = plan.stall
        skip = skips[min(page, len(skips) - 1)]
        faults.append(
            ("stall", times, Fault("stall", skip=skip, times=times, seconds=STALL_SECONDS))
        )
    if plan.hostile_run == "huge-total":
        products, _ = api.catalog.page(0, PAGE_SIZE)
        body = json.dumps({"products": products, "total": 10**12, "skip": 0, "limit": PAGE_SIZE})
        faults.append(("huge-total", 1, Fault("body", skip=0, times=1, body=body.encode())))
    if plan.hostile_run == "trickle":
        skip = skips[rng.randrange(len(skips))]
        times = rng.choice((1, MAX_RETRIES + 1))  # once is retried away; more outlasts retries
        trickle = Fault("trickle", skip=skip, times=times, seconds=TRICKLE_SECONDS)
        faults.append(("trickle", times, trickle))
    for _, _, fault in faults:
        api.add_fault(fault)
    return faults


def run_faulty_sync(
    catalog: Catalog,
    db: TrialDatabase,
    plan: Plan,
    skips: list[int],
    rng: random.Random,
    command: SyncCommand = sync_command,
) -> RunResult:
    """Serve the catalog with the plan's faults and run the sync as a subprocess."""
    with FakeDummyJson(catalog) as api:
        faults = _add_faults(api, plan, skips, rng)
        fired: list[str] = []
        _arm_change(api, skips, plan, random.Random(rng.random()), fired)
        lock = _RowLock(db, plan) if plan.kill == "dbcut" and db.application_name else None
        if plan.busy is not None:
            api.busy(*plan.busy, seed=rng.randrange(1_000_000))
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
            [*command(api.url, db.sync_url, plan.concurrency), *plan.sync_flags()],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        output = Output(process)
        result = RunResult(returncode=None, output="")
        try:
            _interrupt(process, output, plan, skips, lock, rng, result)
            try:
                result.returncode = process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                result.hung = True
        finally:
            if lock is not None:
                lock.release()
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
        result.output = output.finish()
        result.injected["busy"] += api.busy_moves()
    for kind, times, fault in faults:
        result.injected[kind] += times - max(fault.times, 0)
    result.injected["change"] += len(fired)
    return result


def _interrupt(
    process: subprocess.Popen[str],
    output: Output,
    plan: Plan,
    skips: list[int],
    lock: _RowLock | None,
    rng: random.Random,
    result: RunResult,
) -> None:
    """Kill the process, or cut its database connection, at the plan's moment."""
    if lock is not None:
        if lock.cut_when_blocked(output, plan.kill_moment):
            result.injected["dbcut"] += 1
        return
    if plan.kill is None:
        return
    moment = plan.kill_moment
    if moment == "writing":  # SQLite: kill while pages are being written
        moment = f"page:{rng.randrange(len(skips))}"
    if moment.startswith("page:"):
        moment = f"page at skip={skips[min(int(moment[5:]), len(skips) - 1)]}:"
    if _reach(output, moment, rng) and process.poll() is None:
        if plan.kill in ("SIGINT", "SIGTERM"):
            process.send_signal(getattr(signal, plan.kill))  # a clean stop is expected
            result.signalled = True
        else:
            process.send_signal(signal.SIGKILL)
            result.killed = True
        result.injected[plan.kill] += 1


def _reach(output: Output, moment: str, rng: random.Random) -> bool:
    """Wait for the moment to kill at; False if the run ended first."""
    if moment.startswith("after:"):
        if not output.wait_for("sync http", RUN_TIMEOUT):
            return False
        time.sleep(float(moment.split(":", 1)[1]))
        return True
    if not output.wait_for(moment, RUN_TIMEOUT):
        return False
    time.sleep(rng.uniform(0.0, 0.005))
    return True


class _RowLock:
    """Holds what the sync must write, so it blocks inside a statement; then cuts it off.

    "writing": the products table in SHARE mode, which blocks the sync's first write to it
    (the COPY of new products while paging); "deleting": a stale product's row, which blocks
    the deletion; "merging": a changed product's row, which blocks the merge.
    """

    def __init__(self, db: TrialDatabase, plan: Plan) -> None:
        self.db = db
        self.conn = db.engine.connect()
        self.transaction = self.conn.begin()
        if plan.kill_moment == "writing":
            self.conn.execute(text("LOCK TABLE products IN SHARE MODE"))
            return
        target = plan.delete[0] if plan.kill_moment == "deleting" else plan.touch[0]
        self.conn.execute(text("SELECT id FROM products WHERE id = :id FOR UPDATE"), {"id": target})

    def cut_when_blocked(self, output: Output, moment: str) -> bool:
        """Once the sync logs ``moment`` and waits on the lock, terminate its backend."""
        if not output.wait_for("sync http" if moment == "writing" else moment, RUN_TIMEOUT):
            return False
        query = text(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
            "AND wait_event_type = 'Lock'"
        )
        deadline = time.monotonic() + 10
        with self.db.engine.connect() as probe:
            while time.monotonic() < deadline and output.process.poll() is None:
                pids = list(probe.execute(query, {"app": self.db.application_name}).scalars())
                probe.rollback()
                if pids:
                    cut = probe.execute(
                        text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]}
                    ).scalar_one()
                    probe.rollback()
                    return bool(cut)
                time.sleep(0.01)
        return False

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.transaction.rollback()
        self.conn.close()


# --- the invariants ----------------------------------------------------------------------------


def matches_source(
    db: dict[int, Any],
    start: dict[int, Any],
    end: dict[int, Any],
    deferred: dict[int, Any] | None = None,
) -> bool:
    """The catalog is the source's: every product at its version before or after the run.

    A product changed while paging may legitimately be at either version; any other product has
    one version and must match it exactly. Absent counts as a version. ``deferred`` is the
    catalog before a ``partial`` run: it deleted nothing, and a product in a gap it could not
    re-read was not seen, so any product may also be as it was before the run (absent if it
    was not stored).
    """
    for pid in set(db) | set(start) | set(end):
        versions = [start.get(pid), end.get(pid)]
        if deferred is not None:
            versions.append(deferred.get(pid))
        if db.get(pid) not in versions:
            return False
    return deferred is None or set(deferred) <= set(db)


def bad_ids(plan: Plan) -> set[int]:
    """Products the trial served in a form the sync must set aside (their previous row stays)."""
    return {pid for kind, pid in plan.hostile if kind in ("unreadable-id", "sub-cent")}


def served_as_stored(api_url: str, plan: Plan) -> dict[int, Any]:
    """The served catalog as a sync must store it: without the products it must set aside
    (one served under a text id among them), float noise rounded to the cent."""
    served = served_catalog(api_url, exclude=bad_ids(plan))
    catalog = {pid: row for pid, row in served.items() if isinstance(pid, int)}
    for kind, pid in plan.hostile:
        if kind == "float-noise" and pid in catalog:
            price = catalog[pid]["price"]
            catalog[pid] = {**catalog[pid], "price": Decimal(price).quantize(Decimal("0.01"))}
    return catalog


def matches_hostile(
    db: dict[int, Any],
    previous: dict[int, Any],
    start: dict[int, Any],
    end: dict[int, Any],
    plan: Plan,
    partial: bool = False,
) -> bool:
    """The catalog is what a sync of a hostile source must leave: the source's, except that a
    product served without a readable id or with sub-cent money keeps its previous row, and,
    when an id could not be read (or the run was otherwise ``partial``), every deletion waits
    (the deleted products are still there). Float noise is compared rounded, as the sync
    stores it (``served_as_stored``).
    """
    bad = bad_ids(plan)
    deferred = partial or any(kind == "unreadable-id" for kind, _ in plan.hostile)
    for pid in set(db) | set(start) | set(end) | set(previous):
        if pid in bad or (deferred and pid in previous and pid not in start and pid not in end):
            if db.get(pid) != previous.get(pid):
                return False
        elif db.get(pid) not in (start.get(pid), end.get(pid)) and not (
            partial and db.get(pid) == previous.get(pid)  # in a gap the run could not re-read
        ):
            return False
    return True


def _is_source(
    db: dict[int, Any],
    previous: dict[int, Any],
    start: dict[int, Any],
    end: dict[int, Any],
    plan: Plan,
    partial: bool = False,
) -> bool:
    """Whether the catalog is the one a correct (``partial``: deletions deferred) sync leaves."""
    if plan.hostile:
        return matches_hostile(db, previous, start, end, plan, partial)
    return matches_source(db, start, end, previous if partial else None)


def duplicate_keys(engine: Engine) -> int:
    """Keys held by more than one row (impossible with primary keys, counted anyway)."""
    found = 0
    with engine.connect() as conn:
        for table, key in TABLE_KEYS.items():
            found += conn.execute(
                text(
                    f"SELECT count(*) FROM (SELECT {key} FROM {table} GROUP BY {key} "
                    "HAVING count(*) > 1) AS repeated"
                )
            ).scalar_one()
        found += conn.execute(
            text(
                "SELECT count(*) FROM (SELECT sku FROM products WHERE sku IS NOT NULL "
                "GROUP BY sku HAVING count(*) > 1) AS repeated"
            )
        ).scalar_one()
    return int(found)


def orphan_rows(engine: Engine) -> int:
    """Child rows whose product (or rejection whose run) does not exist."""
    found = 0
    with engine.connect() as conn:
        for table, key in CHILD_KEYS.items():
            found += conn.execute(
                text(
                    f"SELECT count(*) FROM {table} c LEFT JOIN products p ON p.id = c.{key} "
                    "WHERE p.id IS NULL"
                )
            ).scalar_one()
        found += conn.execute(
            text(
                "SELECT count(*) FROM rejected_records r LEFT JOIN pipeline_runs p "
                "ON p.id = r.run_id WHERE p.id IS NULL"
            )
        ).scalar_one()
    return int(found)


def last_run_after(engine: Engine, run_id: int) -> PipelineRun | None:
    """The newest ``pipeline_runs`` row with an id above ``run_id``."""
    with Session(engine) as session:
        query = select(PipelineRun).where(PipelineRun.id > run_id).order_by(PipelineRun.id.desc())
        return session.scalars(query).first()


def max_run_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(PipelineRun.id), 0))).scalar_one())


@dataclass
class Tally:
    """The campaign's figures."""

    database: str
    trials: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    zero: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not any(self.zero[name] for name, _ in MUST_BE_ZERO)


def _reason(output: str) -> str:
    """A short class of a run's error line, for the table."""
    line = next((ln for ln in reversed(output.splitlines()) if ln.startswith("error:")), "")
    for needle, label in (
        ("refusing to delete", "mass deletion refused"),
        ("--max-pages", "absurd total refused"),
        ("--request-deadline", "request deadline after retries"),
        ("interrupted (SIGINT", "stopped by Ctrl-C"),
        ("SIGTERM", "stopped by SIGTERM"),
        ("shifted", "catalog shift seen, refused"),
        ("total changed", "total changed, refused"),
        ("extraction incomplete", "extraction incomplete, refused"),
        ("terminating connection", "database connection cut"),
        ("server closed the connection", "database connection cut"),
        ("connection already closed", "database connection cut"),
        ("broke off", "body broke off after retries"),
        ("timed out", "read timeout after retries"),
        ("HTTP 4", "HTTP 4xx after retries"),
        ("HTTP 5", "HTTP 5xx after retries"),
        ("Connection aborted", "connection dropped after retries"),
        ("Max retries", "connection failed after retries"),
    ):
        if needle in line:
            return label
    return line.removeprefix("error: run failed, database unchanged: ")[:60] or "no error line"


def check_trial(
    tally: Tally,
    trial: int,
    plan: Plan,
    db: TrialDatabase,
    result: RunResult,
    previous: dict[int, Any],
    start: dict[int, Any],
    end: dict[int, Any],
    run_before: int,
) -> dict[str, int]:
    """Check the invariants after the faulty run; count the outcome, return the figures."""
    after = database_catalog(db.engine)
    is_previous = after == previous
    run = last_run_after(db.engine, run_before)
    status = run.status if run is not None else None
    is_source = committed = _is_source(after, previous, start, end, plan)
    # A partial run defers its deletions; a run killed after its commit may have been one.
    if not is_source and (status == "partial" or result.killed):
        is_source = _is_source(after, previous, start, end, plan, partial=True)
        committed = not is_previous
    figures = Counter[str]()
    kept = set(previous) & set(start) & set(end)
    figures["lost"] = len(kept - set(after))
    figures["inconsistent"] = int(not (is_previous or is_source))
    figures["duplicates"] = duplicate_keys(db.engine)
    figures["orphans"] = orphan_rows(db.engine)
    figures["history"] = int(versioned_catalog(db.engine, dt.datetime.now(dt.UTC)) != after)
    figures["false_success"] = int(
        (result.returncode == 0 or status in ("succeeded", "partial")) and not is_source
    )
    unclean = result.hung or "Traceback" in result.output
    if not result.killed:
        last_line = next((ln for ln in reversed(result.output.splitlines()) if ln.strip()), "")
        if result.returncode == 0:
            unclean = unclean or status not in ("succeeded", "partial")
        else:
            ended = ("failed", "refused", "interrupted")
            recorded = status in ended and bool(run and run.error)
            unclean = unclean or result.returncode not in (1, 2, 130, 143) or not recorded
            unclean = unclean or not last_line.startswith("error:")
    figures["unclean"] = int(unclean)

    if result.killed:
        tally.outcomes["killed after its commit" if committed else "killed before its commit"] += 1
    elif result.returncode == 0:
        tally.outcomes[
            "succeeded" if status == "succeeded" else "partial (deletions deferred)"
        ] += 1
        healed = status == "succeeded" and HEALED.search(result.output) is not None
        tally.outcomes["succeeded after re-reading a shift"] += int(healed)
    elif not unclean:
        tally.outcomes["failed cleanly"] += 1
        tally.reasons[_reason(result.output)] += 1
    else:
        tally.outcomes["ended uncleanly"] += 1
    tally.outcomes["ended as the previous catalog"] += int(is_previous)
    tally.outcomes["ended as the source's catalog"] += int(is_source and not is_previous)
    return dict(figures)


def run_trial(
    tally: Tally,
    databases: Databases,
    trial: int,
    seed: int,
    products: int,
    verbose: bool = False,
    command: SyncCommand = sync_command,
) -> None:
    """One trial: previous state, source changes, the faulty run, the checks, the recovery."""
    rng = random.Random(f"chaos:{seed}:{trial}")
    catalog = Catalog(products, seed=rng.randrange(1_000_000))
    db = databases.new(trial)
    try:
        create_schema(db.engine)
        with FakeDummyJson(catalog) as clean:
            clean_sync(clean.url, db)
            previous = database_catalog(db.engine)
            run_before = max_run_id(db.engine)
            skips = page_skips(clean)
            plan = make_plan(rng, trial, products, len(skips))
            for pid in plan.delete:
                catalog.delete(pid)
            for pid in plan.touch:
                catalog.touch(pid)
            for _ in range(plan.add):
                catalog.add()
            make_hostile(catalog, plan)
            skips = page_skips(clean)
            start = served_as_stored(clean.url, plan)
            result = run_faulty_sync(catalog, db, plan, skips, rng, command)
            end = served_as_stored(clean.url, plan)
            figures = check_trial(tally, trial, plan, db, result, previous, start, end, run_before)
            heal(catalog, plan)
            clean_sync(clean.url, db)
            figures["not_recovered"] = int(database_catalog(db.engine) != served_catalog(clean.url))
        tally.trials += 1
        if verbose:
            last = next((ln for ln in reversed(result.output.splitlines()) if ln.strip()), "")
            print(
                f"    trial {trial}: {plan.describe()} -> exit {result.returncode}"
                f"{' (killed)' if result.killed else ''}: {last[:120]}",
                flush=True,
            )
        tally.faults.update(result.injected)
        tally.faults.update(kind for kind, _ in plan.hostile if kind != "sku-swap")
        tally.faults["sku-swap"] += sum(kind == "sku-swap" for kind, _ in plan.hostile) // 2
        tally.zero.update(figures)
        if any(figures.values()):
            tail = " | ".join(result.output.splitlines()[-3:])
            bad = {name: value for name, value in figures.items() if value}
            tally.problems.append(
                f"trial {trial} (--seed {seed} --trial {trial}): {bad}; {plan.describe()}; "
                f"exit {result.returncode}; {tail}"
            )
    finally:
        db.cleanup()


# --- the campaign ------------------------------------------------------------------------------


def run_campaign(
    database: str,
    trials: int,
    seed: int = 1,
    products: int = 200,
    *,
    postgres_server_url: str | None = None,
    only: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = print,
    verbose: bool = False,
    command: SyncCommand = sync_command,
) -> Tally:
    """Run the trials on one database and return the figures (``command``: the run to test)."""
    tally = Tally(database)
    started = time.perf_counter()
    numbers = list(only) if only else list(range(trials))
    with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
        databases = Databases(database, Path(workdir), postgres_server_url)
        try:
            for done, trial in enumerate(numbers, start=1):
                run_trial(tally, databases, trial, seed, products, verbose, command)
                if progress and (done % 10 == 0 or done == len(numbers)):
                    elapsed = time.perf_counter() - started
                    bad = sum(tally.zero[name] for name, _ in MUST_BE_ZERO)
                    progress(
                        f"  {database}: {done}/{len(numbers)} trials, {elapsed:.0f} s, "
                        f"{dict(tally.outcomes)}, must-be-zero total {bad}"
                    )
        finally:
            databases.close()
    tally.seconds = time.perf_counter() - started
    return tally


def format_table(tally: Tally, seed: int, products: int) -> str:
    """The campaign's figures as a small table."""
    lines = [
        f"fault campaign on {tally.database}: {tally.trials} trials, seed {seed}, "
        f"{products} products, page size {PAGE_SIZE}, {tally.seconds:.0f} s",
        "faults injected",
    ]
    for key, label in FAULT_LABELS:
        shown = label
        if key == "dbcut" and tally.database == "sqlite":
            shown = "SIGKILL mid-merge (SQLite: no connection)"
        lines.append(f"  {shown:<42}{tally.faults[key]:>8}")
    lines.append("runs")
    lines.append(f"  {'succeeded':<42}{tally.outcomes['succeeded']:>8}")
    healed = "succeeded after re-reading a shift"
    lines.append(f"    {healed:<40}{tally.outcomes[healed]:>8}")
    partial = "partial (deletions deferred)"
    lines.append(f"  {partial:<42}{tally.outcomes[partial]:>8}")
    lines.append(f"  {'failed or stopped cleanly (one line, recorded)':<46}")
    lines[-1] += f"{tally.outcomes['failed cleanly']:>4}"
    for label, count in tally.reasons.most_common():
        lines.append(f"    {label[:38]:<40}{count:>8}")
    for label in ("killed before its commit", "killed after its commit", "ended uncleanly"):
        lines.append(f"  {label:<42}{tally.outcomes[label]:>8}")
    lines.append("catalog after the run")
    for label in ("ended as the previous catalog", "ended as the source's catalog"):
        lines.append(f"  {label.removeprefix('ended as '):<42}{tally.outcomes[label]:>8}")
    lines.append("must be zero")
    for key, label in MUST_BE_ZERO:
        lines.append(f"  {label:<42}{tally.zero[key]:>8}")
    lines.append("verdict: " + ("all zero" if tally.clean else "FAILED"))
    lines.extend(f"  {problem}" for problem in tally.problems[:20])
    return "\n".join(lines)


def category_trials(category: str, trials: int) -> list[int]:
    """The numbers of the first ``trials`` trials whose primary fault is ``category``."""
    first = PRIMARY.index(category)
    return [first + n * len(PRIMARY) for n in range(trials)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; 0 only if every must-be-zero figure is zero on every database."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--trials", type=int, default=200, help="trials per database (default 200)")
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql", "both"), default="both", help="default both"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of every random choice (default 1)"
    )
    parser.add_argument("--products", type=int, default=200, help="catalog size (default 200)")
    parser.add_argument(
        "--trial", type=int, action="append", help="replay only this trial (repeatable)"
    )
    parser.add_argument(
        "--category",
        choices=PRIMARY,
        help="run only the trials of this primary fault (the first --trials of them)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per trial")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.products < 40:
        parser.error("--trials must be at least 1 and --products at least 40")
    if args.category and not args.trial:
        args.trial = category_trials(args.category, args.trials)

    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    RESULTS.mkdir(parents=True, exist_ok=True)
    clean = True
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgres_server()) if "postgresql" in kinds else None
        for kind in kinds:
            print(f"{kind}: {args.trials} trials, seed {args.seed}", flush=True)
            tally = run_campaign(
                kind,
                args.trials,
                args.seed,
                args.products,
                postgres_server_url=server,
                only=args.trial,
                progress=lambda line: print(line, flush=True),
                verbose=args.verbose,
            )
            table = format_table(tally, args.seed, args.products)
            print(table, flush=True)
            if args.category or not args.trial:
                name = f"chaos-{kind}{f'-{args.category}' if args.category else ''}.txt"
                (RESULTS / name).write_text(table + "\n", encoding="utf-8")
            clean = clean and tally.clean
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
