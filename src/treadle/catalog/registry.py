"""Loads integrations from the `treadle.integrations` entry-point group."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import entry_points

from treadle.catalog.model import NAME_PATTERN, Integration

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "treadle.integrations"
# Integrations to load without packaging them: "module:attribute,..." where the attribute is
# an Integration or an iterable of them (handy for private integrations and for tests).
EXTRA_ENV = "TREADLE_EXTRA_INTEGRATIONS"


class Catalog:
    """An immutable-by-default set of integrations keyed by name.

    `version` bumps whenever an integration is added, so tool lists derived from the catalog
    can be cached against it.

    Besides the installed integrations every org sees, an org may have integrations of its
    own (its upstream MCP servers, `treadle.catalog.upstream`): `get(name, org_id)` finds
    those too, and only for that org. Installed names come first and cannot be shadowed.
    """

    def __init__(self, integrations: Iterable[Integration] = ()) -> None:
        self._by_name: dict[str, Integration] = {}
        # org id -> name -> integration; inner dicts are replaced, never changed in place,
        # so a snapshot may share them.
        self._scoped: dict[str, dict[str, Integration]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.version = 0
        for integration in integrations:
            self.add(integration)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever an integration is added (tool lists may change)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add(self, integration: Integration) -> None:
        if not NAME_PATTERN.match(integration.name):
            raise ValueError(f"invalid integration name {integration.name!r}")
        names = [action.name for action in integration.actions]
        if len(names) != len(set(names)):
            raise ValueError(f"integration {integration.name!r} declares an action twice")
        self._by_name[integration.name] = integration
        self._changed()

    def put_scoped(self, org_id: str, integration: Integration) -> None:
        """Add or replace one org's own integration (an upstream MCP server's)."""
        if integration.name in self._by_name:
            raise ValueError(f"integration {integration.name!r} is installed for every org")
        current = self._scoped.get(org_id, {})
        if current.get(integration.name) == integration:
            return
        self._scoped[org_id] = {**current, integration.name: integration}
        self._changed()

    def remove_scoped(self, org_id: str, name: str) -> None:
        current = self._scoped.get(org_id, {})
        if name not in current:
            return
        self._scoped[org_id] = {k: v for k, v in current.items() if k != name}
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def snapshot(self) -> Catalog:
        """A frozen copy at the current version (later additions do not reach it)."""
        copy = Catalog()
        copy._by_name = dict(self._by_name)  # already validated: no need to add() again
        copy._scoped = dict(self._scoped)
        copy.version = self.version
        return copy

    def get(self, name: str, org_id: str | None = None) -> Integration | None:
        """The installed integration `name`, else (given `org_id`) that org's own one."""
        found = self._by_name.get(name)
        if found is None and org_id is not None:
            scoped = self._scoped.get(org_id)
            if scoped is not None:
                return scoped.get(name)
        return found

    def for_org(self, org_id: str) -> list[Integration]:
        """Every integration `org_id` may use, by name."""
        every = [*self._by_name.values(), *self._scoped.get(org_id, {}).values()]
        return sorted(every, key=lambda i: i.name)

    def __iter__(self) -> Iterator[Integration]:
        return iter(sorted(self._by_name.values(), key=lambda i: i.name))

    def __len__(self) -> int:
        return len(self._by_name)


def load_catalog() -> Catalog:
    """Every integration the installed distributions register (built-ins included)."""
    catalog = Catalog()
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception:
            # One broken plugin must not take the gateway down; say which one and go on.
            log.exception("could not load integration plugin %s", entry_point.name)
            continue
        if not isinstance(loaded, Integration):
            log.error("entry point %s is not a treadle Integration", entry_point.name)
            continue
        catalog.add(loaded)
    for spec in filter(None, (part.strip() for part in os.environ.get(EXTRA_ENV, "").split(","))):
        for integration in _load_extra(spec):
            catalog.add(integration)
    return catalog


def _load_extra(spec: str) -> list[Integration]:
    module_name, _, attribute = spec.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), attribute or "integration")
    except (ImportError, AttributeError):
        log.exception("could not load %s=%s", EXTRA_ENV, spec)
        return []
    found = [loaded] if isinstance(loaded, Integration) else list(loaded)
    return [item for item in found if isinstance(item, Integration)]
