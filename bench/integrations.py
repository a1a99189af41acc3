"""Bench-only integrations, loaded into `treadle serve` through TREADLE_EXTRA_INTEGRATIONS.

`bench-one` has one trivial action (`echo`); `bench-many` has 25 of them, so 400 aliases make a
10,000-tool workspace. The bare SDK baseline (`bench/bare_server.py`) builds its static tools
from the same definitions, so both servers advertise the same names, schemas and annotations
and run the same function.
"""

from __future__ import annotations

from typing import Any

from treadle.catalog.model import Action, ActionAnnotations, ActionContext, AuthKind, Integration

MANY_ACTIONS = 25

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "Text to echo back."},
        "count": {"type": "integer", "minimum": 0, "description": "An optional number."},
    },
    "required": ["text"],
}
ANNOTATIONS = ActionAnnotations(
    read_only=True, destructive=False, idempotent=True, open_world=False
)


def echo_output(data: dict[str, Any]) -> dict[str, Any]:
    """The whole work of every bench action (shared with the bare SDK tool)."""
    return {"text": data.get("text"), "count": data.get("count")}


async def _echo(_ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    return echo_output(data)


def _action(name: str, display: str) -> Action:
    return Action(
        name=name,
        display_name=display,
        description=f"{display}: echo the given text back (a bench action that does no I/O).",
        input_schema=INPUT_SCHEMA,
        run=_echo,
        annotations=ANNOTATIONS,
    )


bench_one = Integration(
    name="bench-one",
    display_name="Bench One",
    description="One trivial action, for call-overhead benchmarks.",
    auth_kind=AuthKind.NONE,
    actions=(_action("echo", "Echo"),),
)

bench_many = Integration(
    name="bench-many",
    display_name="Bench Many",
    description="25 trivial actions, for large-workspace benchmarks.",
    auth_kind=AuthKind.NONE,
    actions=tuple(_action(f"op_{i:02d}", f"Operation {i:02d}") for i in range(MANY_ACTIONS)),
)

integrations = (bench_one, bench_many)
