"""The integration catalog: what integrations exist and what their actions accept."""

from treadle.catalog.model import (
    Action,
    ActionAnnotations,
    ActionContext,
    AuthKind,
    ConnectionCredentials,
    Integration,
    StateStore,
)
from treadle.catalog.registry import Catalog, load_catalog

__all__ = [
    "Action",
    "ActionAnnotations",
    "ActionContext",
    "AuthKind",
    "Catalog",
    "ConnectionCredentials",
    "Integration",
    "StateStore",
    "load_catalog",
]
