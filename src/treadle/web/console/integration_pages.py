"""Console pages for a workspace integration's settings, its partials and the org's approval
policies. Their routes join the console's through `routes` (see `treadle.web.console`)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
