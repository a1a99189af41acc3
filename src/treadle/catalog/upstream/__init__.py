"""Upstream MCP servers as integrations: the catalog's second source beside the entry points.

An org registers an MCP server (`/api/v1/upstreams`); its tools become the actions of an
integration named after it, visible to that org only (`Catalog.get(name, org_id)`). From there
the pipeline treats them as any built-in: aliases, allowed actions, partials, approval gates,
connection strategies, limits and activity. An action's `run` calls the upstream through a
pooled client session opened with the call's resolved connection.

- `transport`: what a record may name (URLs, the operator's stdio allow-list) and how to open it.
- `sessions`: client sessions pooled per (upstream, credentials), reconnected when they die.
- `actions`: an upstream's stored catalog as an `Integration`; a call and its result mapping.
- `federation`: keeps the catalog in step with the records and the upstreams' own changes.
"""
