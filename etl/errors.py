"""Every error a pipeline reports, under one root that carries its exit code."""

from __future__ import annotations

from typing import Any

BODY_EXCERPT = 200  # characters of a response body quoted in an error message


class PipelineError(Exception):
    """Root of every error a pipeline reports as a failed run."""

    exit_code = 1


class ConfigError(PipelineError):
    """A setting is missing or malformed."""

    exit_code = 2


class ApiError(PipelineError):
    """The API could not be reached, or answered with an error, after the retries."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class UnexpectedPayload(ApiError):
    """The API answered 200 with a body that is not the JSON document expected."""


class ExtractionIncomplete(PipelineError):
    """Paging ended without seeing every product the API announced."""


class InvalidProduct(PipelineError):
    """A product failed validation; ``reason`` names the field and what arrived."""

    def __init__(self, reason: str, *, source_id: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source_id = source_id


class Interrupted(PipelineError):
    """The run was stopped by Ctrl-C (SIGINT) or a cancelled client; nothing changed."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """The run was stopped by SIGTERM; nothing changed.

    A ``KeyboardInterrupt``, as Ctrl-C's is, and not an ``Exception``: code that catches
    ``Exception`` and carries on (logging does, when a signal lands inside a log call) must not
    swallow it.
    """

    exit_code = 143


class SyncAborted(PipelineError):
    """A guard refused the run (incomplete extraction, mass deletion); nothing was changed."""


class SchemaMismatch(PipelineError):
    """The database is not at the schema revision this code needs (the message says why)."""


class SyncLocked(PipelineError):
    """Another sync holds the writer's lock on this database."""


def excerpt(text: str | bytes, limit: int = BODY_EXCERPT) -> str:
    """The start of a body, on one line, for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def one_line(exc: BaseException) -> str:
    """An exception as one line, without a database driver's multi-line detail."""
    detail = getattr(exc, "orig", None) or exc
    lines = str(detail).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def failure_message(exc: BaseException) -> str:
    """The one line a pipeline's ``main`` prints for an error that ended its run."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        return f"run stopped, database unchanged: {stop_reason(exc)}"
    if "database is locked" in str(exc) and not isinstance(exc, PipelineError):
        # SQLite's busy timeout ran out: say it in the same words as PostgreSQL's lock timeout.
        return (
            "run failed, database unchanged: another sync is running against this database "
            "(SQLite write lock still held)"
        )
    return f"run failed, database unchanged: {one_line(exc)}"


def stop_reason(exc: BaseException) -> str:
    """What stopped a run: SIGTERM, or Ctrl-C (SIGINT)."""
    return str(exc) if isinstance(exc, Terminated) else "interrupted (SIGINT, Ctrl-C)"


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a run: the error's own, 130 for Ctrl-C, else 1."""
    if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Terminated):
        return Interrupted.exit_code
    return int(getattr(exc, "exit_code", 1))


def raise_terminated(signum: int, _frame: object) -> None:
    """A SIGTERM handler: stop the run the way Ctrl-C does, through the same clean-up."""
    raise Terminated(f"terminated (signal {signum}, SIGTERM)")
