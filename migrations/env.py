"""Alembic's entry point: run the revisions on a connection.

``models.upgrade_schema`` hands over its own connection (inside its transaction) through
``config.attributes["connection"]``, the channel Alembic's cookbook documents for sharing a
connection; so does pytest-alembic. The ``alembic`` command line connects by itself to
``-x database_url=URL``, else ``DATABASE_URL`` / ``.env`` / the SQLite default.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from models import Base, make_engine, resolve_database_url

config = context.config


def _database_url() -> str:
    """The database the command line names."""
    return context.get_x_argument(as_dictionary=True).get("database_url") or resolve_database_url(
        None
    )


def run_migrations(connection: Connection) -> None:
    """Run the pending revisions in the connection's transaction (one is begun if none is)."""
    # SQLite's DDL is transactional too (Alembic assumes not): a failed upgrade leaves nothing.
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the connection handed over, or connect: to the engine handed over (as
    pytest-alembic does), else to the database the command line names."""
    handed_over = config.attributes.get("connection")
    if isinstance(handed_over, Connection):
        run_migrations(handed_over)
        return
    engine = handed_over if isinstance(handed_over, Engine) else make_engine(_database_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection)
            connection.commit()
    finally:
        if handed_over is None:
            engine.dispose()


def run_migrations_offline() -> None:
    """Print the SQL of the pending revisions (``alembic upgrade head --sql``)."""
    context.configure(url=_database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
