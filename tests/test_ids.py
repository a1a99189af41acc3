"""Activity ids: UUIDs in the usual text form, time-ordered (version 7) for the b-tree."""

from __future__ import annotations

import uuid

import pytest

from treadle import ids


def test_a_time_ordered_id_is_a_version_7_uuid_of_the_rfc_variant() -> None:
    made = ids.new_time_ordered_uuid()
    parsed = uuid.UUID(made)
    assert ids.is_uuid(made)
    assert str(parsed) == made
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_time_ordered_ids_sort_by_the_millisecond_they_were_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([1_700_000_000_000_999_999, 1_700_000_000_001_000_000, 1_700_000_000_002_500_000])
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    made = [ids.new_time_ordered_uuid() for _ in range(3)]
    assert sorted(made) == made
    # The first 48 bits are the Unix milliseconds.
    assert uuid.UUID(made[0]).int >> 80 == 1_700_000_000_000
    assert uuid.UUID(made[1]).int >> 80 == 1_700_000_000_001


def test_time_ordered_ids_of_one_millisecond_differ() -> None:
    made = {ids.new_time_ordered_uuid() for _ in range(1000)}
    assert len(made) == 1000
