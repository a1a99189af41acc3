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
    """

    def __init__(self, integrations: Iterable[Integration] = ()) -> None:
        self._by_name: dict[str, Integration] = {}
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
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def snapshot(self) -> Catalog:
        """A frozen copy at the current version (later additions do not reach it)."""
        copy = Catalog()
        copy._by_name = dict(self._by_name)  # already validated: no need to add() again
        copy.version = self.version
        return copy

    def get(self, name: str) -> Integration | None:
        return self._by_name.get(name)

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
