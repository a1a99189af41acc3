"""The log writer thread of `treadle serve`: lines in order, batched, none lost at the end."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from treadle.observability import logs


class Stream(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler on a StringIO that counts its writes and signals each flush."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.flushed = threading.Event()
        self.writes = 0

    def flush(self) -> None:
        self.writes += 1
        super().flush()
        self.flushed.set()

    @property
    def text(self) -> str:
        stream = self.stream
        assert isinstance(stream, io.StringIO)
        return stream.getvalue()


@contextmanager
def serving(handler: Stream) -> Iterator[None]:
    """`written_in_background` with `handler` as the root's only handler (set inside the
    test: pytest adds its own capturing handlers to the root for each test phase)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        with logs.written_in_background():
            yield
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


@pytest.fixture
def stream() -> Stream:
    return Stream()


def test_lines_are_written_in_order_and_none_is_lost_when_the_server_stops(
    stream: Stream,
) -> None:
    log = logging.getLogger("treadle.access")
    with serving(stream):
        for n in range(500):
            log.info("line %d", n)
    assert stream.text.splitlines() == [f"INFO line {n}" for n in range(500)]
    # Queued together, written together: far fewer writes than lines.
    assert stream.writes < 100


def test_a_line_is_written_while_the_server_runs(stream: Stream) -> None:
    with serving(stream):
        logging.getLogger("treadle").warning("written soon")
        assert stream.flushed.wait(5)
        assert stream.text == "WARNING written soon\n"


def test_a_handler_writes_only_what_its_level_lets_through(stream: Stream) -> None:
    stream.setLevel(logging.WARNING)
    with serving(stream):
        logging.getLogger("treadle").info("quiet")
        logging.getLogger("treadle").error("loud")
    assert stream.text == "ERROR loud\n"


def test_a_record_that_cannot_be_formatted_does_not_take_the_others_with_it(
    stream: Stream, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(stream):
        logging.getLogger("treadle").info("before")
        logging.getLogger("treadle").info("broken %d", "not a number")
        logging.getLogger("treadle").info("after")
    assert stream.text == "INFO before\nINFO after\n"
    assert "--- Logging error ---" in capsys.readouterr().err
