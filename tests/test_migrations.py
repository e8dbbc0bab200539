"""The migrations, on a real SQLite file and a real PostgreSQL.

pytest-alembic's own checks run on both databases: one head, every revision upgrades from empty,
the models equal what the migrations build (CI fails on drift), every revision downgrades and
upgrades again. Then ``python models.py`` on each kind of database it can meet.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.config import Config
from pytest_alembic import tests as alembic_checks
from pytest_alembic.runner import MigrationContext as AlembicRunner
from sqlalchemy import Engine

import models
from models import make_engine

FAST = ["--max-retries", "0", "--connect-timeout", "2", "--read-timeout", "5", "--rate-limit", "0"]


@pytest.fixture
def alembic_config() -> Config:
    """pytest-alembic's configuration: this repository's ``migrations/``."""
    return models.alembic_config()


@pytest.fixture
def alembic_engine(database_url: str) -> Iterator[Engine]:
    """An empty database of each kind, for pytest-alembic."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_the_migrations_have_a_single_head(alembic_runner: AlembicRunner) -> None:
    alembic_checks.test_single_head_revision(alembic_runner)


def test_every_revision_upgrades_from_an_empty_database(alembic_runner: AlembicRunner) -> None:
    alembic_checks.test_upgrade(alembic_runner)


def test_the_models_equal_what_the_migrations_build(alembic_runner: AlembicRunner) -> None:
    alembic_checks.test_model_definitions_match_ddl(alembic_runner)


def test_every_revision_downgrades_and_upgrades_again(alembic_runner: AlembicRunner) -> None:
    alembic_checks.test_up_down_consistency(alembic_runner)
