"""What must not depend on which database the store runs on, or on that database's locale.

Runs on SQLite and on PostgreSQL (TREADLE_TEST_DATABASE); the PostgreSQL test databases use an
ICU en-US collation, under which a locale-ordered query would sort `a_b` before `aB`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from treadle.settings import Settings, database_url

from conftest import Api

pytestmark = pytest.mark.anyio

# In byte order (UTF-8), which for these strings is also code point order.
KEYS = ["B", "a", "a b", "a%b", "a-c", "aB", "a_b", "ab", "aé", "a\U0010ffff!", "ä", "中"]


async def kv(api: Api, action: str, **input: Any) -> Any:
    response = await api.execute(integrationName="kv-store", actionName=action, input=input)
    assert response.status_code == 200, response.text
    return response.json()["output"]


@pytest.fixture
async def shared(api: Api) -> Api:
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    for key in reversed(KEYS):
        await kv(api, "put", key=key, value=1)
    return api


async def test_keys_are_listed_in_byte_order_whatever_the_collation(shared: Api) -> None:
    assert sorted(KEYS, key=str.encode) == KEYS
    assert (await kv(shared, "list_keys"))["keys"] == KEYS


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a", [k for k in KEYS if k.startswith("a")]),
        ("a_", ["a_b"]),
        ("a%", ["a%b"]),
        ("aB", ["aB"]),
        ("A", []),
        ("a\U0010ffff", ["a\U0010ffff!"]),
        ("ä", ["ä"]),
    ],
)
async def test_a_prefix_matches_exactly_the_keys_that_start_with_it(
    shared: Api, prefix: str, expected: list[str]
) -> None:
    assert (await kv(shared, "list_keys", prefix=prefix))["keys"] == expected


async def test_nul_and_its_look_alikes_are_keys_like_any_other(api: Api) -> None:
    await api.configure("kv-store", settings={"persistence": {"scope": "workspace"}})
    # PostgreSQL text cannot hold NUL: the store escapes it (with U+0001), and must keep
    # these apart, in byte order, with their prefixes.
    keys = ["\x00", "\x00\x01", "\x01", "\x01\x01", "\x01\x02", "x", "x\x00", "x\x00\x00", "x\x01"]
    assert sorted(keys, key=str.encode) == keys
    for i, key in enumerate(reversed(keys)):
        await kv(api, "put", key=key, value=i)
    for i, key in enumerate(reversed(keys)):
        assert await kv(api, "get", key=key) == {"key": key, "found": True, "value": i}
    assert (await kv(api, "list_keys"))["keys"] == keys
    assert (await kv(api, "list_keys", prefix="x\x00"))["keys"] == ["x\x00", "x\x00\x00"]
    assert (await kv(api, "list_keys", prefix="\x01"))["keys"] == ["\x01", "\x01\x01", "\x01\x02"]
    assert (await kv(api, "list_keys", prefix="\x00"))["keys"] == ["\x00", "\x00\x01"]
    assert (await kv(api, "get", key="\x02"))["found"] is False


@pytest.mark.parametrize(
    ("given", "opened"),
    [
        ("postgresql://u@db:5432/treadle", "postgresql+asyncpg://u@db:5432/treadle"),
        ("postgres://u@db/treadle", "postgresql+asyncpg://u@db/treadle"),
        ("postgresql+asyncpg://u@db/treadle", "postgresql+asyncpg://u@db/treadle"),
        ("sqlite:////srv/treadle.db", "sqlite+aiosqlite:////srv/treadle.db"),
        ("sqlite+aiosqlite:////srv/t.db", "sqlite+aiosqlite:////srv/t.db"),
    ],
)
def test_a_database_url_opens_with_treadles_async_driver(
    given: str, opened: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert database_url(given) == opened
    monkeypatch.setenv("TREADLE_DATABASE_URL", given)
    assert Settings.from_env(tmp_path).database_url == opened


def test_a_postgresql_url_without_the_driver_installed_says_what_to_install(
    tmp_path: Path,
) -> None:
    # `sys.modules[name] = None` makes importing it fail as if it were not installed.
    program = (
        "import sys; sys.modules['asyncpg'] = None; "
        "from treadle.cli import main; sys.exit(main(['init']))"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREADLE_")}
    env["TREADLE_DATA_DIR"] = str(tmp_path / "data")
    env["TREADLE_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:9/nowhere"
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert 'pip install "treadle[postgres]"' in lines[0]
