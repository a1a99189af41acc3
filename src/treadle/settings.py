"""Where treadle keeps its data and how it finds its database (DESIGN.md: CLI and env)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "~/.treadle"
DATABASE_FILE = "treadle.db"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key: str | None
    # Base of links handed to people (hosted approval pages); TREADLE_PUBLIC_URL behind a proxy.
    public_url: str = "http://127.0.0.1:8400"
    webhooks_allow_private: bool = False

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike[str] | None = None) -> Settings:
        """Explicit argument, then TREADLE_DATA_DIR, then ~/.treadle."""
        chosen = data_dir or os.environ.get("TREADLE_DATA_DIR") or DEFAULT_DATA_DIR
        path = Path(chosen).expanduser().resolve()
        url = os.environ.get("TREADLE_DATABASE_URL") or sqlite_url(path / DATABASE_FILE)
        return cls(
            data_dir=path,
            database_url=url,
            secret_key=os.environ.get("TREADLE_SECRET_KEY"),
            public_url=os.environ.get("TREADLE_PUBLIC_URL") or "http://127.0.0.1:8400",
            webhooks_allow_private=os.environ.get("TREADLE_WEBHOOKS_ALLOW_PRIVATE") == "1",
        )


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"
