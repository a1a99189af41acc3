"""`treadle migrate`, and `treadle serve --no-migrate`'s check: the recorded migrations
(store/migrations.py) as a step of their own, for deployments that upgrade the schema once
before starting (or restarting) their replicas.

Applying is idempotent and safe from several processes at once: `migrate` takes the
migration lock for every step and re-reads the ledger under it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from treadle.errors import SetupError
from treadle.settings import Settings
from treadle.store.database import create_engine
from treadle.store.migrations import MIGRATIONS, migrate

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What one `treadle migrate` did: the steps it applied, out of all recorded steps."""

    database: str  # the URL without its password, for the operator's eyes
    applied: tuple[str, ...]
    total: int


async def upgrade(settings: Settings) -> Upgrade:
    """Apply every step the database has not recorded yet."""
    engine = _engine(settings)
    try:
        applied = await _reached(migrate(engine), settings)
    finally:
        await engine.dispose()
    return Upgrade(_shown(settings.database_url), tuple(applied), len(MIGRATIONS))


async def pending(settings: Settings) -> list[str]:
    """The recorded steps the database has not applied, read without taking any lock."""
    engine = _engine(settings)
    try:
        return await _reached(_pending(engine), settings)
    finally:
        await engine.dispose()


async def _pending(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        exists = await conn.run_sync(lambda sync: sa.inspect(sync).has_table("schema_migrations"))
        done: set[str] = set()
        if exists:
            rows = await conn.execute(sa.text("SELECT name FROM schema_migrations"))
            done = set(rows.scalars())
    return [step.name for step in MIGRATIONS if step.name not in done]


def _engine(settings: Settings) -> AsyncEngine:
    if settings.database_url.startswith("sqlite"):
        # SQLite creates the file, not its directory.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return create_engine(settings.database_url)


async def _reached(work: Awaitable[T], settings: Settings) -> T:
    """Await `work`; a database that cannot be reached or refuses becomes one SetupError
    line naming the database (never its password) and the driver's reason."""
    try:
        result = await work
    except SetupError:
        raise
    except (OSError, sa.exc.SQLAlchemyError) as error:
        raise SetupError(f"database {_shown(settings.database_url)}: {_reason(error)}") from error
    except Exception as error:  # the drivers' own exceptions (asyncpg's) are not wrapped
        if type(error).__module__.split(".")[0] not in ("asyncpg", "sqlite3", "aiosqlite"):
            raise
        raise SetupError(f"database {_shown(settings.database_url)}: {_reason(error)}") from error
    return result


def _reason(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text[:300]


def _shown(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(not a database URL)"
