"""A bare HTTP server whose one route does a call's store work and nothing else: what a
server process on this machine pays for each database's statements, with none of treadle's
request path around them.

    python -m bench.store_server --database sqlite|postgresql --port P [--url POSTGRES_URL]

`POST /` runs, per request:
- `sqlite`: the transaction the ledger commits for a call on SQLite (its activity record and
  its quota count, `_DirectGroup.write` on the plain sqlite3 connection, on the event loop as
  `Database.write_direct` runs it, WAL checkpoints in a worker thread as there);
- `postgresql`: the admission statement and the record's INSERT, straight through asyncpg on
  one connection (`store_floor.raw_postgresql`: treadle's SQL text and parameters).

Served by uvicorn on asyncio like `treadle serve`, and measured the same way (c=1, from
another process), so a request here waits for its database as a call does there: the loop
sleeps in epoll during each round trip and is woken when the answer arrives. The difference
of the two p50s is what PostgreSQL's round trips cost any asyncio server on this machine
(`store_floor.measure_served`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import store_floor


def app(database: str, url: str | None) -> Starlette:
    call: list[Callable[[], Awaitable[None]]] = []

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        with tempfile.TemporaryDirectory(prefix="treadle-store-server-") as folder:
            release: Callable[[], None] | None = None  # gives back PostgreSQL's connection
            if database == "sqlite":
                db = await store_floor.open_database(
                    f"sqlite+aiosqlite:///{Path(folder) / 'treadle.db'}"
                )
                call.append(store_floor.raw_sqlite(db))
            else:
                assert url is not None, "--url is needed for postgresql"
                db = await store_floor.open_database(url)
                raw, release = await store_floor.raw_postgresql(db)
                call.append(raw)
            try:
                yield
            finally:
                if release is not None:
                    release()
                await db.close()

    async def serve(request: Request) -> Response:
        await request.body()
        await call[0]()
        return Response(b'{"ok":true}', media_type="application/json")

    return Starlette(routes=[Route("/", serve, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", help="PostgreSQL URL (postgresql://...)")
    args = parser.parse_args()
    config = uvicorn.Config(
        app(args.database, args.url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="on",
    )
    print(f"store server: {args.database} on port {args.port}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
