"""Input-schema pieces every provider integration declares the same way.

An input that picks one of the user's own resources (a channel, a repository, a spreadsheet)
carries `x-treadle-options`, so a client can offer a list instead of asking for an opaque ID:

    {"action": "list_channels", "itemsField": "channels", "valueField": "id",
     "labelField": "name", "dependsOn": ["spreadsheet_id"]}

means: call the integration's `list_channels` action (passing the inputs named in `dependsOn`
with the values already chosen), take the array at `itemsField` of its output, and offer each
item's `valueField` as the value and `labelField` as the label (dotted paths reach into nested
objects). JSON Schema ignores unknown `x-` keywords, so validation is unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable

from treadle.catalog.model import JSONObject

OPTIONS_KEYWORD = "x-treadle-options"


def choice(
    description: str,
    *,
    action: str,
    items: str,
    value: str,
    label: str,
    depends_on: Iterable[str] = (),
    **schema: object,
) -> JSONObject:
    """A string input naming one of the user's resources, as listed by `action`."""
    options: JSONObject = {
        "action": action,
        "itemsField": items,
        "valueField": value,
        "labelField": label,
    }
    needed = list(depends_on)
    if needed:
        options["dependsOn"] = needed
    return {
        "type": "string",
        "minLength": 1,
        **schema,
        "description": f"{description} Use the {action} tool to list the choices.",
        OPTIONS_KEYWORD: options,
    }


def object_schema(properties: JSONObject, required: Iterable[str] = ()) -> JSONObject:
    """A closed input object: unknown fields are refused rather than silently dropped."""
    schema: JSONObject = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }
    names = list(required)
    if names:
        schema["required"] = names
    return schema


# Workspace-integration settings of every provider integration. Private addresses are refused
# by the shared client unless allowed here, e.g. for a self-hosted GitHub Enterprise.
SETTINGS_SCHEMA: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "allowPrivateNetwork": {
            "type": "boolean",
            "default": False,
            "description": (
                "Allow calls to loopback, private and other non-public addresses, for a "
                "connection whose base URL points at an internal server."
            ),
        },
    },
}
