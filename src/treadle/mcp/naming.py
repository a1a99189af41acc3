"""Tool names: `{alias}__{action}` with `-` → `_`, 1 to 64 characters of `[A-Za-z0-9_.-]`.

Two configurations can map to one name (`my-bot` and `my_bot`), and long aliases overflow 64
characters. The natural name goes to the pair that spells it exactly (no `-` replaced, fits);
every other pair gets `{prefix}_{hash}` where the hash covers the exact alias and action. A
name's form therefore depends only on its own pair and on whether an exact-spelling pair
exists, so adding an unrelated tool never renames another one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

MAX_LENGTH = 64
_HASH_CHARS = 10
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def natural_name(alias: str, action: str) -> str:
    return _INVALID.sub("_", f"{alias}__{action}".replace("-", "_"))


def _is_exact(alias: str, action: str) -> bool:
    name = f"{alias}__{action}"
    return natural_name(alias, action) == name and len(name) <= MAX_LENGTH


def _hashed(alias: str, action: str, length: int) -> str:
    digest = hashlib.sha256(f"{alias}\x00{action}".encode()).hexdigest()[:length]
    prefix = natural_name(alias, action)[: MAX_LENGTH - length - 1]
    return f"{prefix}_{digest}"


def assign_names(
    pairs: Iterable[tuple[str, str]], chosen: Mapping[tuple[str, str], str] | None = None
) -> dict[tuple[str, str], str]:
    """Unique, deterministic names for (alias, action) pairs.

    `chosen` holds names a server's tool overrides set explicitly; they are taken first, and
    every generated name steers clear of them."""
    present = set(pairs)
    unique = sorted(present)
    names: dict[tuple[str, str], str] = {p: n for p, n in (chosen or {}).items() if p in present}
    taken: set[str] = set(names.values())
    exact = {
        natural_name(a, b): (a, b)
        for a, b in unique
        if _is_exact(a, b) and (a, b) not in names and natural_name(a, b) not in taken
    }
    for pair, name in ((p, n) for n, p in exact.items()):
        names[pair] = name
        taken.add(name)
    for alias, action in unique:
        if (alias, action) in names:
            continue
        candidate = natural_name(alias, action)
        if len(candidate) > MAX_LENGTH or candidate in exact or candidate in taken:
            length = _HASH_CHARS
            candidate = _hashed(alias, action, length)
            # A hashed name could in theory equal another tool's name: lengthen until free.
            while candidate in taken and length < 40:
                length += 4
                candidate = _hashed(alias, action, length)
        names[(alias, action)] = candidate
        taken.add(candidate)
    return names
