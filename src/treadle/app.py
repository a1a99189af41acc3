"""Assembles one gateway: settings → store → catalog → engine → faces (DESIGN.md)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import anyio
import httpx2

from treadle.catalog import Catalog, load_catalog
from treadle.engine import Executor
from treadle.engine.approval_links import ApprovalLinks
from treadle.engine.approvals import ApprovalDesk
from treadle.engine.limits import MonthlyQuota, RateLimiter, SlidingWindowRateLimiter
from treadle.engine.webhooks import WebhookNotifier
from treadle.net import build_http_client
from treadle.oauth import OAuth
from treadle.settings import Settings
from treadle.store import Database, Store
from treadle.vault import Vault


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
            db = await Database.open(settings.database_url)
            exit_stack.push_async_callback(db.close)
            vault = Vault.open(settings.data_dir, settings.secret_key)
            store = Store(
                db, vault, idempotency_lease=timedelta(seconds=settings.idempotency_lease_seconds)
            )
            # Runs before the database closes: records still queued are written.
            exit_stack.push_async_callback(store.ledger.drain)
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
            executor = Executor(
                store,
                chosen_catalog,
                client,
                rate_limiter or SlidingWindowRateLimiter(),
                MonthlyQuota(store.ledger),
                approvals=approvals,
                oauth=oauth,
            )
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
        )

    async def run_background(self) -> None:
        """The gateway's own background work, until cancelled: the writer that commits
        execution records and quota counts nobody waits for, the renewal of idempotency
        leases, and webhook deliveries."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.store.ledger.run)
            tg.start_soon(self.store.idempotency.keep_leases)
            tg.start_soon(self.webhooks.run)

    async def close(self) -> None:
        await self._exit.aclose()
