"""`/healthz` and `/readyz`: unauthenticated, and ready only with a current database and the
shared change backend reachable."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
import sqlalchemy as sa

from treadle.app import Gateway
from treadle.http_app import build_http_app
from treadle.settings import Settings
from treadle.store.migrations import MIGRATIONS

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"


@asynccontextmanager
async def client(gateway: Gateway) -> AsyncIterator[httpx2.AsyncClient]:
    transport = httpx2.ASGITransport(app=build_http_app(gateway))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as opened:
        yield opened


async def test_healthz_and_readyz_answer_without_a_key(gateway: Gateway) -> None:
    async with client(gateway) as http:
        alive = await http.get("/healthz")
        assert alive.status_code == 200
        assert alive.json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok"
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["migrations"] == "ok"
        # On PostgreSQL the LISTEN connection is checked too; on SQLite there is none.
        if not gateway.store.db.is_sqlite:
            assert ready.json()["checks"]["changes"] == "ok"


async def test_readyz_refuses_a_database_with_a_pending_migration(gateway: Gateway) -> None:
    async with gateway.store.db.engine.begin() as conn:
        await conn.execute(
            sa.text("DELETE FROM schema_migrations WHERE name = :name"),
            {"name": MIGRATIONS[-1].name},
        )
    async with client(gateway) as http:
        answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "unavailable"
        assert answer.json()["checks"]["migrations"] == "1 pending"
        assert (await http.get("/healthz")).status_code == 200


async def test_readyz_checks_redis_when_configured(settings: Settings) -> None:
    gateway = await Gateway.open(dataclasses.replace(settings, redis_url=REDIS_URL))
    try:
        async with client(gateway) as http:
            answer = await http.get("/readyz")
            assert answer.status_code == 200, answer.text
            assert answer.json()["checks"]["changes"] == "ok"
    finally:
        await gateway.close()
