"""The three kinds of provider action, as MCP tool hints. Every provider is an open world."""

from __future__ import annotations

from treadle.catalog.model import ActionAnnotations

READ = ActionAnnotations(read_only=True, destructive=False, idempotent=True, open_world=True)
# Creating or sending twice creates or sends twice.
CREATE = ActionAnnotations(read_only=False, destructive=False, idempotent=False, open_world=True)
# Overwrites what was there; repeating the same update changes nothing more.
UPDATE = ActionAnnotations(read_only=False, destructive=True, idempotent=True, open_world=True)
