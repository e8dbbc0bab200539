"""The Spark session and the Iceberg catalog the job's tables live in.

Locally the session runs in-process (``local[N]``) and the Iceberg runtime comes from the jar
that the pinned ``snowpark-connect-deps-iceberg`` wheel ships, checked against its SHA-256 before
the JVM loads it. On a cluster, ``spark-submit`` supplies the master, the jars
(``spark.jars.packages``) and the catalog (``spark.sql.catalog.lake.*``); the job then only
uses them (README, "Exercise 4 at scale").
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from etl.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
# The jar inside snowpark-connect-deps-iceberg 1.0.2, whose wheel scale/requirements.txt pins.
ICEBERG_JAR_SHA256 = "c562d482dcd16b666e808b755469fbc4b2604284b41622c9d87e2c02b7cc6c5f"
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
DEFAULT_CATALOG = "lake"


@dataclass(frozen=True)
class SparkSettings:
    """How to start a local session (a cluster's ``spark-submit`` decides these itself)."""

    master: str = "local[*]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 8
    local_dir: Path | None = None  # Spark's scratch space (shuffle files, spills)


def java_missing_reason() -> str | None:
    """Why Spark cannot start here (no ``java`` on PATH), or None when it can."""
    if shutil.which("java") is None:
        return "Java is not installed: Spark needs a JVM (Debian: apt-get install openjdk-17-jre)"
    return None


def iceberg_jar() -> Path:
    """The Iceberg runtime jar shipped by the pinned wheel, after checking its SHA-256."""
    try:
        import snowpark_connect_deps_iceberg as deps  # noqa: PLC0415 (an optional dependency)
    except ImportError as exc:
        raise ConfigError(
            "the Spark job's dependencies are missing: "
            "python -m pip install -r scale/requirements.txt"
        ) from exc
    jar = Path(deps.__file__).parent / "jars" / ICEBERG_JAR
    if not jar.is_file():
        raise ConfigError(f"{ICEBERG_JAR} is not in snowpark-connect-deps-iceberg: reinstall it")
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    if digest != ICEBERG_JAR_SHA256:
        raise ConfigError(f"{jar.name}: expected SHA-256 {ICEBERG_JAR_SHA256}, found {digest}")
    return jar


def start_session(settings: SparkSettings, app_name: str = "scale-reconcile") -> SparkSession:
    """A Spark session with Iceberg's SQL extensions (MERGE INTO), or the one already running."""
    reason = java_missing_reason()
    if reason is not None:
        raise ConfigError(reason)
    from pyspark.sql import SparkSession  # noqa: PLC0415 (pyspark is an optional dependency)

    builder = (
        SparkSession.builder.master(settings.master)
        .appName(app_name)
        .config("spark.jars", str(iceberg_jar()))
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .config("spark.driver.memory", settings.driver_memory)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Nothing in the working directory: no Derby metastore, no spark-warehouse folder.
        .config("spark.sql.catalogImplementation", "in-memory")
    )
    if settings.local_dir is not None:
        builder = builder.config("spark.local.dir", str(settings.local_dir))
        builder = builder.config("spark.sql.warehouse.dir", str(settings.local_dir / "warehouse"))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def use_catalog(spark: SparkSession, warehouse: Path, name: str = DEFAULT_CATALOG) -> None:
    """Make ``name`` an Iceberg catalog over ``warehouse`` (unless spark-submit configured it)
    and the session's current catalog, so the job's SQL names tables as ``silver.offers``."""
    key = f"spark.sql.catalog.{name}"
    location = str(warehouse.resolve())
    if spark.conf.get(key, None) is None:
        spark.conf.set(key, "org.apache.iceberg.spark.SparkCatalog")
        spark.conf.set(f"{key}.type", "hadoop")
        spark.conf.set(f"{key}.warehouse", location)
    configured = spark.conf.get(f"{key}.warehouse", None)
    if spark.conf.get(f"{key}.type", None) == "hadoop" and configured != location:
        # Spark keeps a catalog once loaded: another folder would silently be ignored.
        raise ConfigError(f"catalog {name} already uses the warehouse {configured}, not {location}")
    spark.catalog.setCurrentCatalog(name)
    log.debug("catalog %s over %s", name, warehouse)
