"""Run bookkeeping: every run is a row of ``pipeline_runs``, opened, then closed with how it ended.

``recorded_run`` is the one place that writes those rows, so both pipelines record a success,
a failure and a refusal the same way (each in its own transaction, so a failed run is recorded
even though its own transaction rolled back).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, Protocol

from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from etl.drift import Drift, DriftProfile
from etl.errors import (
    Interrupted,
    InvalidProduct,
    PipelineError,
    SyncAborted,
    Terminated,
    one_line,
    raise_terminated,
    stop_reason,
)
from etl.fields import is_utf8
from models import PipelineRun, SourceDrift, write_transaction

log = logging.getLogger(__name__)

RUN_LOCK_CLASS = 7_301  # first key of the advisory locks that prove a run alive (PostgreSQL)


class RunStatus(StrEnum):
    """How a run ended, as ``pipeline_runs.status`` stores it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"  # left at running by a process that ended without recording it
    PARTIAL = "partial"  # applied what it read, deferred deletions (the summary says why)
    DRY_RUN = "dry-run"


@dataclass
class RunStats:
    """What a run did; recorded in ``pipeline_runs`` and printed as the summary."""

    pages: int = 0
    extracted: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    normalised: int = 0  # products with a value whose float noise was rounded (summary only)


# The figures ``pipeline_runs`` keeps, one column each.
RECORDED_STATS = (
    "pages",
    "extracted",
    "inserted",
    "updated",
    "unchanged",
    "deleted",
    "rejected",
    "seconds",
)


class Paging(Protocol):
    """What a run reads of its extraction when it ends: the pages fetched."""

    pages: int


@dataclass
class RecordedRun:
    """A run in progress: its id, its figures, and the status it will end with if nothing fails."""

    id: int
    liveness: Liveness
    stats: RunStats = field(default_factory=RunStats)
    status: RunStatus = RunStatus.SUCCEEDED
    note: str | None = None  # why a partial run deferred something, kept in the error column
    drift: DriftProfile | None = None  # the source's fields as seen; recorded however it ends


@contextmanager
def recorded_run(engine: Engine, pipeline: str, paging: Paging) -> Iterator[RecordedRun]:
    """Record a run as started, then as ended: ``run.status``, or how an error ended it.

    Every ending Python sees is recorded (an unexpected exception as failed, Ctrl-C or SIGTERM
    as interrupted), so no run it could see end is left at ``running``.
    """
    liveness = Liveness(engine)
    try:
        run = RecordedRun(start_run(engine, pipeline, liveness), liveness)
        started = time.perf_counter()
        try:
            yield run
        except BaseException as exc:
            _finish_run(engine, run, ending_status(exc), paging, started, describe_ending(exc))
            raise
        _finish_run(engine, run, run.status, paging, started, run.note)
    finally:
        liveness.close()


def ending_status(exc: BaseException) -> RunStatus:
    """The status of a run that ``exc`` ended."""
    if isinstance(exc, SyncAborted):
        return RunStatus.REFUSED
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return RunStatus.INTERRUPTED
    return RunStatus.FAILED


def describe_ending(exc: BaseException) -> str:
    """One line for ``pipeline_runs.error``: the error, or the signal that stopped the run."""
    if isinstance(exc, KeyboardInterrupt):
        return stop_reason(exc)
    if isinstance(exc, PipelineError | SQLAlchemyError):
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


def start_run(engine: Engine, pipeline: str, liveness: Liveness | None = None) -> int:
    """Record a run as started, in its own transaction, and return its id.

    With ``liveness``, the run holds its proof of life before its row is visible, and runs
    left at ``running`` by processes that no longer exist are recorded as abandoned.
    """
    with write_transaction(engine) as conn:
        started = insert(PipelineRun).values(pipeline=pipeline, status=RunStatus.RUNNING)
        run_id = int(conn.execute(started.returning(PipelineRun.id)).scalar_one())
        if liveness is not None:
            liveness.hold(run_id)
            _record_abandoned(conn, liveness, run_id)
    return run_id


def _record_abandoned(conn: Connection, liveness: Liveness, own_id: int) -> None:
    """Mark the other runs still at ``running`` whose process has ended as abandoned."""
    running = select(PipelineRun.id).where(
        PipelineRun.status == RunStatus.RUNNING, PipelineRun.id != own_id
    )
    dead = [run_id for run_id in conn.scalars(running) if not liveness.is_alive(run_id)]
    if dead:
        log.warning("runs %s were left at running by processes that ended", dead)
        conn.execute(
            update(PipelineRun)
            .where(PipelineRun.id.in_(dead))
            .values(
                status=RunStatus.ABANDONED,
                error="its process ended without recording how (killed, or the machine stopped)",
            )
        )


class Liveness:
    """Proof that a run's process is alive: a lock it holds while it runs, which its end frees.

    PostgreSQL: a session-level advisory lock keyed by the schema and the run id, held by a
    connection of its own. SQLite: a POSIX byte-range lock at offset run id of a file beside
    the database (``<database>-runs.lock``). Either is released by the server or the operating
    system when the process dies, however it dies; so a row at ``running`` whose lock is free
    was abandoned. Taking the lock never waits: a lock that cannot be had proves nothing.
    """

    # One 64-bit key per schema and run, so that catalogs in two schemas never share a key.
    _KEY = "hashtextextended(current_schema() || '/run/' || :run, :kind)"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._run_id: int | None = None
        self._fd: int | None = None
        database = engine.url.database
        in_file = not self.postgres and database and database != ":memory:"
        self._path = f"{database}-runs.lock" if in_file else None

    def hold(self, run_id: int) -> None:
        """Take this run's lock until ``close``."""
        if self.postgres:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            held = self._conn.scalar(
                text(f"SELECT pg_try_advisory_lock({self._KEY})"),
                {"kind": RUN_LOCK_CLASS, "run": str(run_id)},
            )
            self._run_id = run_id if held else None
        elif self._path is not None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, run_id)

    def is_alive(self, run_id: int) -> bool:
        """Whether a process still holds ``run_id``'s lock (True when it cannot be told)."""
        if self.postgres:
            key = {"kind": RUN_LOCK_CLASS, "run": str(run_id)}
            with self.engine.connect() as conn:
                free = conn.scalar(text(f"SELECT pg_try_advisory_lock_shared({self._KEY})"), key)
                if free:
                    conn.execute(text(f"SELECT pg_advisory_unlock_shared({self._KEY})"), key)
                conn.rollback()
            return not free
        if self._path is None or not os.path.exists(self._path):
            return True
        # The run's own descriptor when there is one: closing any other descriptor of the file
        # would drop this process's POSIX locks on it.
        fd = self._fd if self._fd is not None else os.open(self._path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, run_id)
        except OSError:
            return True
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, run_id)
            return False
        finally:
            if fd != self._fd:
                os.close(fd)

    def close(self) -> None:
        """Let the lock go: the run has recorded how it ended. (The connection goes back to
        the pool, so the session's lock is released explicitly.)"""
        if self._conn is not None:
            if self._run_id is not None:
                self._conn.execute(
                    text(f"SELECT pg_advisory_unlock({self._KEY})"),
                    {"kind": RUN_LOCK_CLASS, "run": str(self._run_id)},
                )
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _finish_run(
    engine: Engine,
    run: RecordedRun,
    status: RunStatus,
    paging: Paging,
    started: float,
    error: str | None = None,
) -> None:
    """Record how a run ended, in its own transaction (so a failed run is still recorded)."""
    run.stats.pages = paging.pages
    run.stats.seconds = time.perf_counter() - started
    values = {name: getattr(run.stats, name) for name in RECORDED_STATS}
    drifts = run.drift.drifts() if run.drift is not None else []
    with write_transaction(engine) as conn:
        conn.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run.id)
            .values(status=status, error=error, finished_at=dt.datetime.now(dt.UTC), **values)
        )
        if drifts:
            conn.execute(insert(SourceDrift), [drift_row(run.id, drift) for drift in drifts])


def drift_row(run_id: int, drift: Drift) -> dict[str, Any]:
    """A ``source_drift`` row for one drift of a run."""
    return {
        "run_id": run_id,
        "change": drift.change,
        "field": drift.field,
        "expected": drift.expected,
        "seen": drift.seen,
        "products": drift.products,
        "example_id": drift.example_id,
    }


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM stops the run the way Ctrl-C does, through the same roll-back and record; both
    handlers are put back on exit (``ignore_signals`` may have set them aside)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_signals() -> None:
    """From the commit on, a signal could only make the run lie about its outcome: ignore it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_process(code: int) -> NoReturn:
    """Exit a script with ``code``. After an interrupt the run is already rolled back and
    recorded, so the process ends at once instead of waiting for fetch threads still blocked
    in a read (they would hold it up to a read timeout)."""
    if code in (Interrupted.exit_code, Terminated.exit_code):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def rejection_row(run_id: int, raw: Any, exc: InvalidProduct) -> dict[str, Any]:
    """A ``rejected_records`` row for a bad product; the reason is logged, the payload is not.

    The payload is the product as it arrived, as JSON. Text that UTF-8 cannot hold (a lone
    surrogate) is kept as a JSON escape, so the record can always be stored.
    """
    log.warning("rejected product %s: %s", exc.source_id, exc.reason)
    payload = json.dumps(raw, ensure_ascii=False, default=str)
    if not is_utf8(payload):
        payload = json.dumps(raw, default=str)
    return {
        "run_id": run_id,
        "source_id": None if exc.source_id is None else str(exc.source_id)[:100],
        "reason": exc.reason,
        "payload": payload,
    }


def format_history(engine: Engine, limit: int) -> str:
    """The last runs recorded in ``pipeline_runs``, newest first."""
    query = select(PipelineRun).order_by(PipelineRun.id.desc()).limit(limit)
    header = (
        f"{'id':>5} {'pipeline':<20} {'started (UTC)':<20} {'status':<10} {'secs':>7} "
        f"{'ins':>7} {'upd':>7} {'same':>7} {'del':>6} {'rej':>5}  error"
    )
    lines = [header]
    liveness = Liveness(engine)
    with Session(engine) as session:
        for run in session.scalars(query):
            status = run.status
            if status == RunStatus.RUNNING and not liveness.is_alive(run.id):
                status = RunStatus.ABANDONED  # shown so; the next run records it
            lines.append(
                f"{run.id:>5} {run.pipeline:<20} {run.started_at:%Y-%m-%d %H:%M:%S} "
                f"{status:<10} {run.seconds or 0:>7.1f} {run.inserted:>7} {run.updated:>7} "
                f"{run.unchanged:>7} {run.deleted:>6} {run.rejected:>5}  {run.error or ''}"
            )
    return "\n".join(lines)
