"""`treadle` command line (README.md: the commands; `treadle --help`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path

import anyio
from sqlalchemy.engine import make_url

from treadle import __version__
from treadle.app import Gateway
from treadle.bootstrap import InitResult, create_org, initialise
from treadle.clock import iso, utcnow
from treadle.errors import SetupError
from treadle.observability import logs
from treadle.settings import Settings

Command = Callable[[argparse.Namespace], Awaitable[int]]

MODES = ("TOOLS", "DISCOVERY", "AUTO")
MODE_HELP = (
    "what to list instead of the server's own mode: TOOLS (every tool), DISCOVERY "
    "(search_tools, describe_tools, call_tool) or AUTO (tools up to the server's autoThreshold)"
)
MAX_KEY_DAYS = 36_500  # a hundred years: longer is a typo


def _setup_logging(verbose: bool = False, log_format: str | None = None) -> None:
    # Everything goes to stderr: stdout belongs to command output (and to MCP on stdio).
    chosen = log_format or os.environ.get("TREADLE_LOG_FORMAT", "text").lower()
    # The access middleware reads the variable too (it peeks at MCP bodies only for json).
    os.environ["TREADLE_LOG_FORMAT"] = chosen
    logs.configure(logging.DEBUG if verbose else logging.INFO, chosen)
    for noisy in ("httpx2", "httpcore2", "mcp", "sqlalchemy", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _open(args: argparse.Namespace) -> Gateway:
    return await Gateway.open(Settings.from_env(args.data_dir))


async def cmd_init(args: argparse.Namespace) -> int:
    gateway = await _open(args)
    try:
        result = await initialise(gateway.store, gateway.settings.data_dir)
    finally:
        await gateway.close()
    if not _print_machine_readable(args, result):
        state = "initialised" if result.created else "already initialised"
        print(f"treadle data dir {gateway.settings.data_dir} {state}")
        _print_org(result)
    return 0


def _print_machine_readable(args: argparse.Namespace, result: InitResult) -> bool:
    """`--json` or `--shell` output of an org's IDs and key; False when neither was asked."""
    if args.json:
        print(
            json.dumps(
                {
                    "orgId": result.org_id,
                    "workspaceId": result.workspace_id,
                    "apiKey": result.api_key,
                }
            )
        )
    elif args.shell:
        print(f"export TREADLE_API_KEY={shlex.quote(result.api_key or '')}")
        print(f"export TREADLE_WORKSPACE_ID={shlex.quote(result.workspace_id)}")
    return bool(args.json or args.shell)


def _print_org(result: InitResult) -> None:
    print(f"  org:        {result.org_id}")
    print(f"  workspace:  {result.workspace_id} (default)")
    print(f"  API key:    {result.api_key or '(not kept; create one: treadle keys create)'}")


async def cmd_keys_create(args: argparse.Namespace) -> int:
    from treadle.engine.api_keys import create_key, expiry
    from treadle.errors import Refusal, ValidationFailed

    gateway = await _open(args)
    try:
        result = await initialise(gateway.store, gateway.settings.data_dir)
        try:
            expires_at = None
            if args.expires_in_days is not None:
                if args.expires_in_days > MAX_KEY_DAYS:
                    raise ValidationFailed(f"--expires-in-days is at most {MAX_KEY_DAYS}")
                expires_at = expiry(iso(utcnow() + timedelta(days=args.expires_in_days)))
            key, token = await create_key(
                gateway.store,
                "cli",
                result.org_id,
                name=args.name,
                workspace_id=args.workspace,
                expires_at=expires_at,
            )
        except Refusal as refused:
            print(f"error: {refused.message}", file=sys.stderr)
            return 2
    finally:
        await gateway.close()
    if args.json:
        print(
            json.dumps(
                {
                    "id": key.id,
                    "apiKey": token,
                    "workspaceId": key.workspace_id,
                    "expiresAt": key.expires_at,
                }
            )
        )
    else:
        print(token)
    return 0


async def _open_initialised(args: argparse.Namespace) -> Gateway | None:
    """The gateway of a data dir `treadle init` (or `demo`, `serve`) set up; None, with one
    line on stderr naming where it looked, for a data dir that was never initialised (a typo
    in --data-dir must not quietly create an empty database)."""
    settings = Settings.from_env(args.data_dir)
    missing = uninitialised_database(settings)
    if missing is not None:
        print(f"error: {missing}", file=sys.stderr)
        return None
    gateway = await Gateway.open(settings)
    if await gateway.store.orgs.first() is None:
        await gateway.close()
        print(f"error: {_never_initialised(settings)}", file=sys.stderr)
        return None
    return gateway


def uninitialised_database(settings: Settings) -> str | None:
    """Why the data dir's SQLite database is not there (checked before opening it, which
    would create it); None when it exists or the database lives elsewhere."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if Path(url.database).exists():
        return None
    return _never_initialised(settings)


def _never_initialised(settings: Settings) -> str:
    return (
        f"treadle was never initialised in data dir {settings.data_dir} (no database there); "
        "check --data-dir or TREADLE_DATA_DIR, or run `treadle init` first"
    )


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


async def cmd_keys_list(args: argparse.Namespace) -> int:
    gateway = await _open_initialised(args)
    if gateway is None:
        return 2
    try:
        org = await gateway.store.orgs.first()
        assert org is not None
        keys = await gateway.store.api_keys.list(org.id)
    finally:
        await gateway.close()
    if args.json:
        print(json.dumps({"apiKeys": [key.to_json() for key in keys]}))
        return 0
    rows = [
        [
            key.id,
            f"{key.key_prefix}…",
            key.name,
            key.workspace_id or "(org-wide)",
            key.created_at,
            key.expires_at or "never",
        ]
        for key in keys
    ]
    _table(rows, ["ID", "PREFIX", "NAME", "WORKSPACE", "CREATED", "EXPIRES"])
    return 0


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from treadle.engine.api_keys import revoke_key
    from treadle.errors import Refusal

    gateway = await _open_initialised(args)
    if gateway is None:
        return 2
    try:
        org = await gateway.store.orgs.first()
        assert org is not None
        key = await gateway.store.api_keys.get(org.id, args.key_id)
        if key is None:
            print(f"error: no API key {args.key_id!r} (see treadle keys list)", file=sys.stderr)
            return 2
        try:
            await revoke_key(gateway.store, "cli", key)
        except Refusal as refused:
            print(f"error: {refused.message}", file=sys.stderr)
            return 2
    finally:
        await gateway.close()
    print(f"revoked API key {key.id} ({key.key_prefix}…); it is refused from now on")
    return 0


async def cmd_workspaces_list(args: argparse.Namespace) -> int:
    gateway = await _open_initialised(args)
    if gateway is None:
        return 2
    try:
        org = await gateway.store.orgs.first()
        assert org is not None
        workspaces = await gateway.store.workspaces.list(org.id)
    finally:
        await gateway.close()
    if args.json:
        print(json.dumps({"workspaces": [workspace.to_json() for workspace in workspaces]}))
        return 0
    _table([[w.id, w.name, w.created_at] for w in workspaces], ["ID", "NAME", "CREATED"])
    return 0


async def cmd_servers_list(args: argparse.Namespace) -> int:
    gateway = await _open_initialised(args)
    if gateway is None:
        return 2
    try:
        org = await gateway.store.orgs.first()
        assert org is not None
        servers = await gateway.store.mcp_servers.list(org.id)
        names = {w.id: w.name for w in await gateway.store.workspaces.list(org.id)}
    finally:
        await gateway.close()
    if args.json:
        print(json.dumps({"servers": [server.to_json() for server in servers]}))
        return 0
    rows = [
        [s.id, s.name, names.get(s.workspace_id, s.workspace_id), s.mode, s.end_user_id or "-"]
        for s in servers
    ]
    _table(rows, ["ID", "NAME", "WORKSPACE", "MODE", "END USER"])
    return 0


async def cmd_org_limits(args: argparse.Namespace) -> int:
    gateway = await _open(args)
    try:
        result = await initialise(gateway.store, gateway.settings.data_dir)
        async with gateway.store.db.write("cli") as txn:
            await gateway.store.orgs.set_limits(
                txn,
                result.org_id,
                plan=args.plan,
                monthly_quota=args.monthly_quota,
                rate_limit=args.rate_limit,
                rate_window_seconds=args.rate_window,
            )
        org = await gateway.store.orgs.get(result.org_id)
    finally:
        await gateway.close()
    assert org is not None
    print(
        json.dumps(
            {
                "plan": org.plan,
                "monthlyQuota": org.monthly_quota,
                "rateLimit": org.rate_limit,
                "rateWindowSeconds": org.rate_window_seconds,
            }
        )
    )
    return 0


async def cmd_org_create(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 255 or not name.isprintable():
        print("error: --name must be 1 to 255 printable characters", file=sys.stderr)
        return 2
    gateway = await _open(args)
    try:
        # The first org stays the one `treadle init` shows, even when this runs first.
        await initialise(gateway.store, gateway.settings.data_dir)
        result = await create_org(gateway.store, name)
    finally:
        await gateway.close()
    if not _print_machine_readable(args, result):
        print(f"created org {name!r} (its API key is shown only now)")
        _print_org(result)
    return 0


async def cmd_migrate(args: argparse.Namespace) -> int:
    from treadle.schema_upgrade import upgrade

    done = await upgrade(Settings.from_env(args.data_dir))
    for name in done.applied:
        print(f"applied {name}")
    state = f"applied {len(done.applied)} of" if done.applied else "already up to date:"
    print(f"database {done.database} {state} {done.total} migrations")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from treadle.server import serve

    settings = Settings.from_env(args.data_dir)
    if args.no_migrate:
        from treadle.schema_upgrade import pending

        # Deployments that run `treadle migrate` as their own step: a replica never changes
        # the schema, and one started before that step refuses instead of serving on it.
        missing = await pending(settings)
        if missing:
            raise SetupError(
                f"the database lacks {len(missing)} migrations ({missing[0]} first); "
                "run `treadle migrate`"
            )
    with logs.written_in_background():
        await serve(settings, host=args.host, port=args.port)
    return 0


async def cmd_stdio(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from treadle.engine.end_user_ids import check_end_user_id
    from treadle.errors import Refusal
    from treadle.mcp.binds import bind_server, bind_workspace
    from treadle.mcp.stdio import serve_stdio

    gateway = await _open_initialised(args)
    if gateway is None:
        return 2
    try:
        try:
            end_user = check_end_user_id(args.end_user, field="--end-user")
            if args.server:
                binding = await bind_server(gateway.store, args.server, end_user)
            else:
                binding = await bind_workspace(gateway.store, args.workspace, end_user)
        except Refusal as refused:
            # A server or workspace that is not found may be in another data dir: name this one.
            print(
                f"error: {refused.message} in data dir {gateway.settings.data_dir}",
                file=sys.stderr,
            )
            return 2
        if args.mode is not None:
            binding = replace(binding, mode=args.mode)
        await serve_stdio(gateway, binding)
    finally:
        await gateway.close()
    return 0


async def cmd_mcp_config(args: argparse.Namespace) -> int:
    from treadle.demo import claude_desktop_entry

    gateway = await _open(args)
    try:
        server = await gateway.store.mcp_servers.get(args.server)
    finally:
        await gateway.close()
    if server is None:
        print(f"error: no MCP server {args.server!r}", file=sys.stderr)
        return 2
    entry = claude_desktop_entry(
        server,
        gateway.settings.data_dir,
        database_url=os.environ.get("TREADLE_DATABASE_URL"),
        mode=args.mode,
    )
    print(json.dumps(entry, indent=2))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from treadle.demo import claude_desktop_entry, ensure_demo, modes_hint
    from treadle.server import bind, serve

    settings = Settings.from_env(args.data_dir)
    # Refused before anything is set up or said: a port that is taken is one line, not a
    # "ready" message followed by a traceback.
    bind(args.host, args.port).close()
    gateway = await Gateway.open(settings)
    try:
        demo = await ensure_demo(gateway.store, settings.data_dir)
    finally:
        await gateway.close()

    def ready(base_url: str) -> None:
        print("treadle demo is ready.\n")
        print(f"  MCP endpoint (streamable HTTP): {base_url}/mcp/{demo.server.id}")
        print(f"  Bearer token:                   {demo.token}\n")
        print("  Claude Desktop (claude_desktop_config.json), over stdio:\n")
        entry = claude_desktop_entry(
            demo.server, settings.data_dir, database_url=os.environ.get("TREADLE_DATABASE_URL")
        )
        print(json.dumps(entry, indent=2))
        print(modes_hint(demo.server, base_url))
        print("\nServing; press Ctrl+C to stop.", flush=True)

    with logs.written_in_background():
        await serve(settings, host=args.host, port=args.port, announce=ready)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="treadle", description=__doc__)
    parser.add_argument("--version", action="version", version=f"treadle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text (default) or json: one JSON object per line (TREADLE_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument(
            "--data-dir", help="data directory (default: $TREADLE_DATA_DIR or ~/.treadle)"
        )
        sub.set_defaults(handler=handler)
        return sub

    init = command("init", cmd_init, "create the database, an org, a workspace and an API key")
    output = init.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help='print {"orgId","workspaceId","apiKey"}'
    )
    output.add_argument("--shell", action="store_true", help="print export lines for a shell")

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create an API key (shown once)")
    create.add_argument("--data-dir")
    create.add_argument("--workspace", help="restrict the key to one workspace ID")
    create.add_argument("--name", default="cli key")
    create.add_argument(
        "--expires-in-days", type=_positive, help="refuse the key after this many days"
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_keys_create)
    keys_list = keys.add_parser("list", help="list API keys (their prefixes, never secrets)")
    keys_list.add_argument("--data-dir")
    keys_list.add_argument("--json", action="store_true")
    keys_list.set_defaults(handler=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke an API key: refused at once, everywhere")
    revoke.add_argument("--data-dir")
    revoke.add_argument("key_id", help="the key's ID (treadle keys list)")
    revoke.set_defaults(handler=cmd_keys_revoke)

    workspaces = commands.add_parser("workspaces", help="workspaces").add_subparsers(
        dest="workspaces", required=True
    )
    workspaces_list = workspaces.add_parser("list", help="list the org's workspaces")
    workspaces_list.add_argument("--data-dir")
    workspaces_list.add_argument("--json", action="store_true")
    workspaces_list.set_defaults(handler=cmd_workspaces_list)

    servers = commands.add_parser("servers", help="MCP servers").add_subparsers(
        dest="servers", required=True
    )
    servers_list = servers.add_parser("list", help="list the org's MCP servers")
    servers_list.add_argument("--data-dir")
    servers_list.add_argument("--json", action="store_true")
    servers_list.set_defaults(handler=cmd_servers_list)

    org = commands.add_parser("org", help="the org").add_subparsers(dest="org", required=True)
    limits = org.add_parser("limits", help="show or set plan, monthly quota and rate limit")
    limits.add_argument("--data-dir")
    limits.add_argument("--plan")
    limits.add_argument("--monthly-quota", type=_positive)
    limits.add_argument("--rate-limit", type=_positive)
    limits.add_argument("--rate-window", type=_positive, help="seconds")
    limits.set_defaults(handler=cmd_org_limits)
    org_create = org.add_parser(
        "create", help="create another org with a default workspace and an API key (shown once)"
    )
    org_create.add_argument("--data-dir")
    org_create.add_argument("--name", required=True, help="the new org's name")
    org_output = org_create.add_mutually_exclusive_group()
    org_output.add_argument(
        "--json", action="store_true", help='print {"orgId","workspaceId","apiKey"}'
    )
    org_output.add_argument("--shell", action="store_true", help="print export lines for a shell")
    org_create.set_defaults(handler=cmd_org_create)

    command("migrate", cmd_migrate, "apply the database's pending migrations, then exit")

    serve = command("serve", cmd_serve, "serve the REST API and MCP endpoints")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8400)
    serve.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not migrate on start; refuse to start if `treadle migrate` has not run",
    )

    stdio = command("stdio", cmd_stdio, "serve one MCP server over stdin/stdout")
    target = stdio.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", help="an MCP server ID (srv_…)")
    target.add_argument("--workspace", help="a workspace ID: all of its tools")
    stdio.add_argument("--end-user", help="the end user's externalId for per-user connections")
    stdio.add_argument("--mode", choices=MODES, help=MODE_HELP)

    demo = command("demo", cmd_demo, "create a demo workspace and MCP server, then serve")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8400)

    config = command("mcp-config", cmd_mcp_config, "print a Claude Desktop config entry")
    config.add_argument("--server", required=True, help="an MCP server ID (srv_…)")
    config.add_argument("--mode", choices=MODES, help=MODE_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.log_format)
    handler: Command = args.handler
    try:
        return anyio.run(handler, args)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
