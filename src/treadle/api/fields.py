"""Field types shared by request bodies: bounded lengths, no control characters."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from treadle.engine.end_user_ids import end_user_id_problem

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=_PRINTABLE)]
Description = Annotated[str, StringConstraints(max_length=500, pattern=_PRINTABLE)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_PRINTABLE)]


def _end_user_id(value: str) -> str:
    problem = end_user_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# An end user's externalId wherever a body names one: the engine's one rule for every face.
EndUserId = Annotated[str, AfterValidator(_end_user_id)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=_PRINTABLE)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]
ActionName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_PRINTABLE)]
ActionList = Annotated[list[ActionName], Field(max_length=1000)]
