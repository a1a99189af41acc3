"""Where treadle keeps its data and how it finds its database (README.md: environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_DATA_DIR = "~/.treadle"
DATABASE_FILE = "treadle.db"
DEFAULT_DATABASE_POOL_SIZE = 10


@dataclass(frozen=True, slots=True)
class McpSessionLimits:
    """Handshake-era MCP sessions over HTTP: how many one replica may serve at once (in all,
    for one org, one MCP server, one principal) and how long one may sit idle on every
    replica. The narrower limits keep one tenant from filling a replica for every other."""

    total: int = 10_000
    per_org: int = 2_500
    per_server: int = 1_000
    per_principal: int = 250
    idle_seconds: float = 600.0

    @classmethod
    def from_env(cls) -> McpSessionLimits:
        default = cls()
        return cls(
            total=_count("TREADLE_MCP_MAX_SESSIONS", default.total),
            per_org=_count("TREADLE_MCP_MAX_SESSIONS_PER_ORG", default.per_org),
            per_server=_count("TREADLE_MCP_MAX_SESSIONS_PER_SERVER", default.per_server),
            per_principal=_count("TREADLE_MCP_MAX_SESSIONS_PER_PRINCIPAL", default.per_principal),
            idle_seconds=_seconds("TREADLE_MCP_SESSION_IDLE_SECONDS", default.idle_seconds),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str | None
    # Base of links handed to people (approval, connect, OAuth redirect); TREADLE_PUBLIC_URL
    # behind a proxy. Unset, `serve` derives it from the address it bound (`bound_to`).
    public_url: str = "http://127.0.0.1:8400"
    public_url_from_env: bool = False
    webhooks_allow_private: bool = False
    # Slow clients: the seconds a request's headers, then its body, may take to arrive.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    # How long an idempotency key stays "in use" after the process running it stopped.
    idempotency_lease_seconds: float = 30.0
    mcp_sessions: McpSessionLimits = McpSessionLimits()
    # Redis shared by every replica: rate limits and change fan-out go through it when set.
    redis_url: str | None = None
    # How DISCOVERY mode's search_tools ranks: lexical, or hybrid/semantic with the semantic
    # extra installed (TREADLE_TOOL_SEARCH).
    tool_search: str = "lexical"
    # PostgreSQL connections one process may open (TREADLE_DATABASE_POOL_SIZE): this many
    # for single statements, as many pooled plus twice as many in bursts for transactions,
    # and two for change fan-out and answers. Size N replicas' 4 x pool + 2 under the
    # server's max_connections (docs/deploy.md).
    database_pool_size: int = DEFAULT_DATABASE_POOL_SIZE

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> Settings:
        """Explicit argument, then TREADLE_DATA_DIR, then ~/.treadle."""
        chosen = data_dir or os.environ.get("TREADLE_DATA_DIR") or DEFAULT_DATA_DIR
        path = Path(chosen).expanduser().resolve()
        url = database_url(
            os.environ.get("TREADLE_DATABASE_URL") or sqlite_url(path / DATABASE_FILE)
        )
        return cls(
            data_dir=path,
            database_url=url,
            secret_key=os.environ.get("TREADLE_SECRET_KEY"),
            public_url=os.environ.get("TREADLE_PUBLIC_URL") or "http://127.0.0.1:8400",
            public_url_from_env=bool(os.environ.get("TREADLE_PUBLIC_URL")),
            webhooks_allow_private=os.environ.get("TREADLE_WEBHOOKS_ALLOW_PRIVATE") == "1",
            header_timeout=_seconds("TREADLE_HEADER_TIMEOUT", 10.0),
            body_timeout=_seconds("TREADLE_BODY_TIMEOUT", 30.0),
            idempotency_lease_seconds=_seconds("TREADLE_IDEMPOTENCY_LEASE_SECONDS", 30.0),
            mcp_sessions=McpSessionLimits.from_env(),
            redis_url=os.environ.get("TREADLE_REDIS_URL") or None,
            tool_search=_tool_search(),
            database_pool_size=_count("TREADLE_DATABASE_POOL_SIZE", DEFAULT_DATABASE_POOL_SIZE),
        )

    def bound_to(self, host: str, port: int) -> Settings:
        """These settings once serving on `host`:`port`: links for people point there, unless
        TREADLE_PUBLIC_URL says where the gateway is reached (a proxy, a public name)."""
        if self.public_url_from_env:
            return self
        return replace(self, public_url=local_url(host, port))


def local_url(host: str, port: int) -> str:
    """The URL of a gateway bound to `host`:`port`, as a browser on this machine opens it: a
    wildcard bind (all interfaces) is reached on loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _tool_search() -> str:
    raw = os.environ.get("TREADLE_TOOL_SEARCH") or "lexical"
    if raw not in ("lexical", "hybrid", "semantic"):
        raise SystemExit(
            f"error: TREADLE_TOOL_SEARCH must be lexical, hybrid or semantic, got {raw!r}"
        )
    return raw


def _seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment, or `default` when unset. A wrong
    value stops the command with a one-line error, not a traceback."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise SystemExit(f"error: {name} must be a positive number of seconds, got {raw!r}")
    return value


def _count(name: str, default: int) -> int:
    """A positive whole number from the environment, or `default` when unset; a wrong value
    stops the command with a one-line error, as `_seconds` does."""
    raw = os.environ.get(name)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise SystemExit(f"error: {name} must be a positive whole number, got {raw!r}")
    return int(raw)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


# URL schemes people write, and the async driver treadle opens them with.
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def database_url(url: str) -> str:
    """`url` with treadle's driver named: `postgresql://…` (or `postgres://…`) opens with
    asyncpg, `sqlite://…` with aiosqlite; a URL that names its driver stays as it is."""
    scheme, separator, rest = url.partition("://")
    driver = _DRIVERS.get(scheme.lower())
    return f"{driver}{separator}{rest}" if separator and driver else url
