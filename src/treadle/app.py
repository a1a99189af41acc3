"""Assembles one gateway: settings → store → catalog → engine → faces."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import httpx2

from treadle.catalog import Catalog, load_catalog
from treadle.catalog.upstream.federation import Federation
from treadle.engine import Executor
from treadle.engine.approval_links import ApprovalLinks
from treadle.engine.approvals import ApprovalDesk
from treadle.engine.limits import (
    Admission,
    MonthlyQuota,
    RateLimiter,
    SlidingWindowRateLimiter,
)
from treadle.engine.webhooks import WebhookNotifier
from treadle.errors import SetupError
from treadle.net import build_http_client
from treadle.oauth import OAuth
from treadle.settings import Settings
from treadle.store import Database, Store
from treadle.store.change_bus import ChangeBus, LocalChanges
from treadle.store.rate_windows import DatabaseRateLimiter
from treadle.vault import Vault

if TYPE_CHECKING:
    from redis.asyncio import Redis


@dataclass(slots=True)
class Gateway:
    settings: Settings
    store: Store
    catalog: Catalog
    executor: Executor
    http: httpx2.AsyncClient
    approvals: ApprovalDesk
    webhooks: WebhookNotifier
    request_state_key: bytes
    _exit: AsyncExitStack
    oauth: OAuth
    # Seals what must be read back (identity providers' client secrets, sign-in verifiers).
    vault: Vault
    # Upstream MCP servers: their records, catalog sessions and pooled call sessions.
    federation: Federation

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        catalog: Catalog | None = None,
        rate_limiter: RateLimiter | None = None,
        http: httpx2.AsyncClient | None = None,
    ) -> Gateway:
        exit_stack = AsyncExitStack()
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            db = await Database.open(settings.database_url, pool_size=settings.database_pool_size)
            exit_stack.push_async_callback(db.close)
            vault = Vault.open(settings.data_dir, settings.secret_key)
            store = Store(
                db, vault, idempotency_lease=timedelta(seconds=settings.idempotency_lease_seconds)
            )
            # Its plain-sqlite3 read connection (SQLite files) is not the engine's: close it too.
            exit_stack.callback(store.mcp_sessions.close)
            # Runs before the database closes: records still queued are written.
            exit_stack.push_async_callback(store.ledger.drain)
            redis = None if settings.redis_url is None else await _open_redis(settings.redis_url)
            if redis is not None:
                exit_stack.push_async_callback(redis.aclose)
            db.changes = await _change_bus(db, redis)
            exit_stack.push_async_callback(db.changes.close)
            client = http
            if client is None:
                client = build_http_client()
                exit_stack.push_async_callback(client.aclose)
            chosen_catalog = catalog if catalog is not None else load_catalog()
            webhooks = WebhookNotifier(
                client, allow_private_network=settings.webhooks_allow_private
            )
            approvals = ApprovalDesk(
                store,
                ApprovalLinks(vault.derive("treadle approval links")),
                webhooks,
                settings.public_url,
            )
            oauth = OAuth.assemble(store, vault, client, settings.public_url)
            limiter = rate_limiter or _rate_limiter(db, redis)
            quota = MonthlyQuota(store.ledger)
            admission = _admission(limiter, quota, store.ledger.shared)
            # Where the admission statement confirms the configuration version, a tool call
            # need not read it first (`ConfigCache.assumed_snapshot`).
            store.config.confirms_at_admission = admission is not None
            executor = Executor(
                store,
                chosen_catalog,
                client,
                limiter,
                quota,
                approvals=approvals,
                oauth=oauth,
                admission=admission,
            )
            federation = Federation(store, chosen_catalog, refresher=oauth.refresher)
            exit_stack.push_async_callback(federation.close)
            await federation.load()
        except BaseException:
            await exit_stack.aclose()
            raise
        return cls(
            settings,
            store,
            chosen_catalog,
            executor,
            client,
            approvals,
            webhooks,
            vault.derive("treadle mcp request state"),
            exit_stack,
            oauth,
            vault,
            federation,
        )

    async def run_background(self) -> None:
        """The gateway's own background work, until cancelled: the writer that commits
        execution records and quota counts nobody waits for, the renewal of idempotency
        leases, webhook deliveries, and receiving other replicas' configuration changes."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.store.db.changes.watch)
            tg.start_soon(self.store.ledger.run)
            tg.start_soon(self.store.idempotency.keep_leases)
            tg.start_soon(self.webhooks.run)
            tg.start_soon(self.federation.run)

    async def close(self) -> None:
        await self._exit.aclose()


def _rate_limiter(db: Database, redis: Redis | None) -> RateLimiter:
    """One budget per org: counted in Redis when there is one, else in PostgreSQL, which
    every replica shares. On SQLite (one machine, the embedded default) each process counts
    its own window in memory, about 0.3 ms a call cheaper than a write transaction there:
    exact for `treadle serve`, while a `treadle stdio` beside it has a window of its own
    (the README says so; monthly quotas stay shared and exact)."""
    if redis is not None:
        from treadle.store.redis_rate_windows import RedisRateLimiter

        return RedisRateLimiter(redis)
    if db.is_sqlite:
        return SlidingWindowRateLimiter()
    return DatabaseRateLimiter(db)


def _admission(limiter: RateLimiter, quota: MonthlyQuota, shared: bool) -> Admission | None:
    """Both counts in one statement where both are the database's own on PostgreSQL: the
    window unless Redis counts it, the quota when the ledger defers none of it (`shared`)."""
    if isinstance(limiter, DatabaseRateLimiter) and shared:
        return limiter.admission(quota.period)
    return None


async def _change_bus(db: Database, redis: Redis | None) -> ChangeBus:
    """How configuration changes reach the other processes: Redis pub/sub when there is one,
    LISTEN/NOTIFY on PostgreSQL, and on SQLite nothing but the version row they poll."""
    if redis is not None:
        from treadle.store.redis_changes import RedisChanges

        return RedisChanges(db, redis)
    if not db.is_sqlite:
        from treadle.store.pg_changes import PostgresChanges

        return await PostgresChanges.open(db)
    return LocalChanges()


async def _open_redis(url: str) -> Redis:
    try:
        from redis.asyncio import Redis
        from redis.exceptions import RedisError
    except ImportError as missing:
        raise SetupError(
            'TREADLE_REDIS_URL needs redis-py: pip install "treadle[redis]"'
        ) from missing
    try:
        client = Redis.from_url(url)
    except ValueError as error:
        raise SetupError(f"TREADLE_REDIS_URL is not a Redis URL ({error})") from error
    try:
        await client.ping()
    except RedisError as error:
        await client.aclose()
        # The error names host and port, never the URL's password.
        raise SetupError(
            f"TREADLE_REDIS_URL: Redis did not answer ({type(error).__name__}: {error})"
        ) from error
    return client
