"""The discovery case's workspace: 10,000 realistic tools.

The built-in integrations under many aliases, as a company would configure them (50 Slack
workspaces named after teams, 100 GitHub organisations, Gmail, Sheets, key-value stores and
HTTP APIs per team), plus synthetic but realistic SaaS integrations (Jira, HubSpot, Stripe,
...: each four resources x six verbs, with the parameters such APIs take), each configured for
fifteen teams. Deterministic: the query set (bench/discovery_queries.txt) names its tools.
"""

from __future__ import annotations

from typing import Any

from treadle.catalog.model import Action, ActionAnnotations, ActionContext, AuthKind, Integration

TOTAL_TOOLS = 10_000

TEAMS = tuple(
    """design marketing sales support engineering platform data security finance legal hr ops
    mobile web infra growth product research qa devrel billing payments search identity
    analytics partnerships recruiting procurement compliance brand content community docs
    education events facilities it labs ml networking onboarding pricing privacy quality
    release reliability retail risk seo social""".split()  # noqa: SIM905
)

# name: (display, what it is, {resource: [fields]})
SYNTHETIC: dict[str, tuple[str, str, dict[str, list[str]]]] = {
    "jira": (
        "Jira",
        "issue tracker",
        {
            "issue": ["summary", "description", "assignee", "priority"],
            "comment": ["issue_key", "body"],
            "sprint": ["board_id", "name", "goal"],
            "project": ["key", "name", "lead"],
        },
    ),
    "linear": (
        "Linear",
        "issue tracker",
        {
            "issue": ["title", "description", "team_id", "priority"],
            "project": ["name", "description", "target_date"],
            "cycle": ["team_id", "starts_at", "ends_at"],
            "label": ["name", "color"],
        },
    ),
    "asana": (
        "Asana",
        "work management",
        {
            "task": ["name", "notes", "assignee", "due_on"],
            "project": ["name", "workspace", "team"],
            "section": ["project_id", "name"],
            "comment": ["task_id", "text"],
        },
    ),
    "trello": (
        "Trello",
        "kanban boards",
        {
            "card": ["name", "desc", "list_id", "due"],
            "board": ["name", "desc"],
            "list": ["board_id", "name"],
            "checklist": ["card_id", "name"],
        },
    ),
    "notion": (
        "Notion",
        "docs and wikis",
        {
            "page": ["parent_id", "title", "content"],
            "database": ["parent_id", "title", "properties"],
            "block": ["page_id", "type", "text"],
            "comment": ["page_id", "text"],
        },
    ),
    "confluence": (
        "Confluence",
        "team wiki",
        {
            "page": ["space_key", "title", "body"],
            "space": ["key", "name", "description"],
            "comment": ["page_id", "body"],
            "attachment": ["page_id", "file_name"],
        },
    ),
    "hubspot": (
        "HubSpot",
        "CRM",
        {
            "contact": ["email", "first_name", "last_name", "phone"],
            "company": ["name", "domain", "industry"],
            "deal": ["deal_name", "amount", "stage", "close_date"],
            "ticket": ["subject", "content", "priority"],
        },
    ),
    "salesforce": (
        "Salesforce",
        "CRM",
        {
            "lead": ["first_name", "last_name", "company", "email"],
            "opportunity": ["name", "amount", "stage", "close_date"],
            "account": ["name", "industry", "website"],
            "case": ["subject", "description", "priority"],
        },
    ),
    "zendesk": (
        "Zendesk",
        "customer support",
        {
            "ticket": ["subject", "comment", "requester_email", "priority"],
            "user": ["name", "email", "role"],
            "organization": ["name", "domain_names"],
            "macro": ["title", "actions"],
        },
    ),
    "intercom": (
        "Intercom",
        "customer messaging",
        {
            "conversation": ["contact_id", "body"],
            "contact": ["email", "name", "phone"],
            "article": ["title", "body", "author_id"],
            "tag": ["name"],
        },
    ),
    "stripe": (
        "Stripe",
        "payments",
        {
            "customer": ["email", "name", "description"],
            "invoice": ["customer_id", "amount", "currency", "due_date"],
            "refund": ["charge_id", "amount", "reason"],
            "subscription": ["customer_id", "price_id", "trial_days"],
        },
    ),
    "shopify": (
        "Shopify",
        "online store",
        {
            "product": ["title", "body_html", "vendor", "price"],
            "order": ["customer_id", "line_items", "note"],
            "customer": ["email", "first_name", "last_name"],
            "discount": ["code", "percentage", "ends_at"],
        },
    ),
    "quickbooks": (
        "QuickBooks",
        "accounting",
        {
            "invoice": ["customer_ref", "amount", "due_date"],
            "bill": ["vendor_ref", "amount", "due_date"],
            "vendor": ["display_name", "email"],
            "expense": ["account_ref", "amount", "memo"],
        },
    ),
    "google-calendar": (
        "Google Calendar",
        "calendar",
        {
            "event": ["calendar_id", "summary", "start", "end", "attendees"],
            "calendar": ["summary", "time_zone"],
            "reminder": ["event_id", "minutes_before"],
            "availability": ["emails", "time_min", "time_max"],
        },
    ),
    "google-drive": (
        "Google Drive",
        "file storage",
        {
            "file": ["name", "parent_folder_id", "mime_type"],
            "folder": ["name", "parent_folder_id"],
            "permission": ["file_id", "email", "role"],
            "comment": ["file_id", "content"],
        },
    ),
    "dropbox": (
        "Dropbox",
        "file storage",
        {
            "file": ["path", "content"],
            "folder": ["path"],
            "shared_link": ["path", "expires"],
            "member": ["email", "role"],
        },
    ),
    "microsoft-teams": (
        "Microsoft Teams",
        "chat and meetings",
        {
            "message": ["team_id", "channel_id", "content"],
            "channel": ["team_id", "display_name", "description"],
            "meeting": ["subject", "start", "end", "attendees"],
            "member": ["team_id", "user_email", "role"],
        },
    ),
    "discord": (
        "Discord",
        "community chat",
        {
            "message": ["channel_id", "content"],
            "channel": ["guild_id", "name", "topic"],
            "role": ["guild_id", "name", "permissions"],
            "invite": ["channel_id", "max_age"],
        },
    ),
    "twilio": (
        "Twilio",
        "SMS and voice",
        {
            "sms": ["to", "from_number", "body"],
            "call": ["to", "from_number", "twiml"],
            "phone_number": ["area_code", "friendly_name"],
            "recording": ["call_sid"],
        },
    ),
    "mailchimp": (
        "Mailchimp",
        "email marketing",
        {
            "campaign": ["list_id", "subject_line", "from_name"],
            "audience": ["name", "permission_reminder"],
            "subscriber": ["list_id", "email_address", "status"],
            "template": ["name", "html"],
        },
    ),
    "airtable": (
        "Airtable",
        "spreadsheet database",
        {
            "record": ["base_id", "table_name", "fields"],
            "table": ["base_id", "name", "fields"],
            "base": ["name", "workspace_id"],
            "view": ["base_id", "table_name", "name"],
        },
    ),
    "pagerduty": (
        "PagerDuty",
        "incident response",
        {
            "incident": ["service_id", "title", "urgency"],
            "service": ["name", "escalation_policy_id"],
            "schedule": ["name", "time_zone"],
            "maintenance_window": ["service_ids", "start_time", "end_time"],
        },
    ),
    "sentry": (
        "Sentry",
        "error monitoring",
        {
            "issue": ["project_slug", "status", "assigned_to"],
            "project": ["team_slug", "name", "platform"],
            "release": ["version", "projects"],
            "alert_rule": ["project_slug", "name", "conditions"],
        },
    ),
    "zoom": (
        "Zoom",
        "video meetings",
        {
            "meeting": ["topic", "start_time", "duration", "agenda"],
            "webinar": ["topic", "start_time", "duration"],
            "recording": ["meeting_id"],
            "registrant": ["meeting_id", "email", "first_name"],
        },
    ),
}

VERBS = ("create", "get", "update", "delete", "list", "search")
_READ = ActionAnnotations(read_only=True, destructive=False, idempotent=True, open_world=True)
_WRITE = ActionAnnotations(read_only=False, destructive=False, idempotent=False, open_world=True)
_DELETE = ActionAnnotations(read_only=False, destructive=True, idempotent=True, open_world=True)


async def _never(_ctx: ActionContext, _data: dict[str, Any]) -> dict[str, Any]:
    return {}  # the discovery case searches and lists; it never calls these


def _human(word: str) -> str:
    return word.replace("_", " ")


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


def _action(display: str, kind: str, verb: str, resource: str, fields: list[str]) -> Action:
    thing = _human(resource)
    things = _plural(thing)
    ident = f"{resource}_id"
    props: dict[str, Any]
    match verb:
        case "create":
            text = f"Create a new {thing} in {display} ({kind})."
            props = {
                f: {"type": "string", "description": f"The {thing}'s {_human(f)}."} for f in fields
            }
            marks = _WRITE
        case "get":
            text = f"Get one {thing} from {display} by its id, with all its fields."
            props = {ident: {"type": "string", "description": f"The {thing}'s id."}}
            marks = _READ
        case "update":
            text = f"Update fields of an existing {thing} in {display}; unset fields stay."
            props = {ident: {"type": "string", "description": f"The {thing}'s id."}}
            props |= {f: {"type": "string", "description": f"New {_human(f)}."} for f in fields}
            marks = _WRITE
        case "delete":
            text = f"Delete a {thing} from {display} permanently."
            props = {ident: {"type": "string", "description": f"The {thing} to delete."}}
            marks = _DELETE
        case "list":
            text = f"List the {things} in {display}, most recently changed first, a page at a time."
            props = {
                "limit": {"type": "integer", "description": "At most this many."},
                "cursor": {"type": "string", "description": "Where the last page ended."},
            }
            marks = _READ
        case _:
            text = f"Search {things} in {display} by free text or field values."
            props = {
                "query": {"type": "string", "description": f"Words to find in {things}."},
                "limit": {"type": "integer", "description": "At most this many."},
            }
            marks = _READ
    schema = {"type": "object", "properties": props}
    if verb != "list":
        schema["required"] = [next(iter(props))]
    name = f"{verb}_{resource}" if verb not in ("list", "search") else f"{verb}_{_plural(resource)}"
    title = f"{verb.capitalize()} {thing if verb not in ('list', 'search') else things}"
    return Action(name, title, text, schema, _never, annotations=marks)


def synthetic_integrations() -> list[Integration]:
    found = []
    for name, (display, kind, resources) in SYNTHETIC.items():
        actions = tuple(
            _action(display, kind, verb, resource, fields)
            for resource, fields in resources.items()
            for verb in VERBS
        )
        found.append(Integration(name, display, f"{display}: {kind}.", AuthKind.NONE, actions))
    return found


# Built-in integrations: (integration, alias pattern, how many aliases, tools each)
BUILTIN = (
    ("slack", "{team}-slack", 50, 7),
    ("github", "acme-{team}", 50, 7),
    ("github", "globex-{team}", 50, 7),
    ("gmail", "{team}-mail", 20, 5),
    ("google-sheets", "{team}-sheets", 30, 7),
    ("kv-store", "{team}-kv", 10, 6),
    ("http", "{team}-api", 10, 1),
)
SYNTHETIC_ALIASES = 15


def aliases() -> list[tuple[str, str]]:
    """(integration, alias) pairs of the workspace: exactly TOTAL_TOOLS tools."""
    pairs: list[tuple[str, str]] = []
    tools = 0
    for integration, pattern, count, each in BUILTIN:
        for team in TEAMS[:count]:
            pairs.append((integration, pattern.format(team=team)))
            tools += each
    synthetic = list(SYNTHETIC)
    per = len(VERBS) * 4
    for index, integration in enumerate(synthetic):
        for step in range(SYNTHETIC_ALIASES):
            if tools + per > TOTAL_TOOLS:
                break
            team = TEAMS[(index * 7 + step) % len(TEAMS)]
            pairs.append((integration, f"{team}-{integration}"))
            tools += per
    # The remainder: a few single-action HTTP aliases make the count exact.
    extra = 0
    while tools < TOTAL_TOOLS:
        pairs.append(("http", f"partner-{extra}-api"))
        tools += 1
        extra += 1
    return pairs
