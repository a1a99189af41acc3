"""Settings read from the environment: a wrong value stops the command with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from treadle.settings import DEFAULT_DATABASE_POOL_SIZE, Settings


def test_the_database_pool_size_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TREADLE_DATABASE_POOL_SIZE", raising=False)
    assert Settings.from_env(tmp_path).database_pool_size == DEFAULT_DATABASE_POOL_SIZE
    monkeypatch.setenv("TREADLE_DATABASE_POOL_SIZE", "3")
    assert Settings.from_env(tmp_path).database_pool_size == 3


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5"])
def test_a_pool_size_that_is_not_a_positive_whole_number_stops_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TREADLE_DATABASE_POOL_SIZE", value)
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env(tmp_path)
    assert "TREADLE_DATABASE_POOL_SIZE" in str(stopped.value)
