"""`GET /healthz` and `GET /readyz`: unauthenticated, cheap, never rate-limited.

- /healthz: the process answers (a liveness probe; it touches nothing).
- /readyz: the database answers and has every recorded migration, and the shared backends
  this replica depends on answer: the PostgreSQL LISTEN connection or Redis that bring other
  replicas' configuration changes (when configured). 503 names the failing checks, never a
  URL or a credential.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import anyio
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.api.context import gateway
from treadle.api.responses import ok
from treadle.app import Gateway
from treadle.store.migrations import MIGRATIONS

CHECK_SECONDS = 2.0


@runtime_checkable
class Reachable(Protocol):
    async def reachable(self) -> bool: ...


async def healthz(_request: Request) -> Response:
    return ok({"status": "ok"})


async def _migrations_current(gw: Gateway) -> str:
    async with gw.store.db.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT name FROM schema_migrations"))
        done = set(rows.scalars())
    missing = [step.name for step in MIGRATIONS if step.name not in done]
    return "ok" if not missing else f"{len(missing)} pending"


async def checks(gw: Gateway) -> dict[str, str]:
    results: dict[str, str] = {}
    try:
        with anyio.fail_after(CHECK_SECONDS):
            results["migrations"] = await _migrations_current(gw)
        results["database"] = "ok"
    except TimeoutError:
        results["database"] = "timeout"
    except Exception as error:  # any driver's error: the database cannot be used
        results["database"] = f"unreachable ({type(error).__name__})"
    changes = gw.store.db.changes
    if isinstance(changes, Reachable):
        try:
            with anyio.fail_after(CHECK_SECONDS):
                up = await changes.reachable()
            results["changes"] = "ok" if up else "unreachable"
        except TimeoutError:
            results["changes"] = "timeout"
    return results


async def readyz(request: Request) -> Response:
    results = await checks(gateway(request))
    ready = all(value == "ok" for value in results.values())
    return ok(
        {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
