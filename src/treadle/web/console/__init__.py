"""`/console`: the web console, server-rendered (Jinja2), usable without JavaScript (the
vendored htmx only keeps the pending count fresh).

Signed in with an API key or at the org's OpenID Connect provider (`session`); every page
calls the engine and store functions the REST API calls (`pages` and the `*_pages` modules),
so a rule has one implementation whichever face is used.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from treadle.web.console import (
    connection_pages,
    integration_pages,
    oidc_signin,
    pages,
    server_pages,
)

routes: list[BaseRoute] = [
    Route("/console", pages.home, methods=["GET"]),
    Route("/console/signin", pages.signin_form, methods=["GET"]),
    Route("/console/signin", pages.signin, methods=["POST"]),
    Route("/console/signin/oidc/start", oidc_signin.start, methods=["GET"]),
    Route(oidc_signin.FINISH_PATH, oidc_signin.finish, methods=["GET"]),
    Route("/console/signout", pages.signout, methods=["POST"]),
    Route("/console/static/htmx.min.js", pages.htmx, methods=["GET"]),
    Route("/console/static/console.js", pages.console_script, methods=["GET"]),
    Route("/console/pending", pages.pending_badge, methods=["GET"]),
    Route("/console/approvals", pages.approvals_page, methods=["GET"]),
    Route("/console/approvals/{approval_id}", pages.decide, methods=["POST"]),
    Route("/console/workspaces", pages.workspaces_page, methods=["GET"]),
    Route("/console/workspaces/{workspace_id}", pages.workspace_page, methods=["GET"]),
    Route(
        "/console/workspaces/{workspace_id}/integrations", pages.add_integration, methods=["POST"]
    ),
    Route(
        "/console/workspaces/{workspace_id}/integrations/{id}/delete",
        pages.delete_integration,
        methods=["POST"],
    ),
    Route("/console/activity", pages.activity_page, methods=["GET"]),
    Route("/console/activity/{entry_id}", pages.activity_detail, methods=["GET"]),
    Route("/console/servers", pages.servers_page, methods=["GET"]),
    Route("/console/servers", server_pages.create_server, methods=["POST"]),
    Route("/console/servers/{server_id}", server_pages.server_page, methods=["GET"]),
    Route("/console/servers/{server_id}/rotate", server_pages.rotate_page, methods=["POST"]),
    Route("/console/servers/{server_id}/mode", server_pages.mode_page, methods=["POST"]),
    Route("/console/servers/{server_id}/overrides", server_pages.overrides_page, methods=["POST"]),
    Route("/console/servers/{server_id}/delete", server_pages.delete_page, methods=["POST"]),
    Route("/console/connections", connection_pages.connections_page, methods=["GET"]),
    Route("/console/connections", connection_pages.create_connection_page, methods=["POST"]),
    Route("/console/connections/oauth", connection_pages.start_oauth_page, methods=["POST"]),
    Route(
        "/console/connections/{id}/delete",
        connection_pages.delete_connection_page,
        methods=["POST"],
    ),
    Route("/console/end-users", connection_pages.create_end_user_page, methods=["POST"]),
    Route(
        "/console/end-users/{id}/delete", connection_pages.delete_end_user_page, methods=["POST"]
    ),
    Route("/console/keys", pages.keys_page, methods=["GET"]),
    Route("/console/keys", pages.create_key_page, methods=["POST"]),
    Route("/console/keys/{key_id}/revoke", pages.revoke_key_page, methods=["POST"]),
]
# Integration settings, partials and policies live in their own module.
routes += integration_pages.routes
