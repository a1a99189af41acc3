"""The ticket a finished OIDC sign-in hands to the page that asked for it.

A ticket is 256 random bits stored only as its hash, valid for two minutes and redeemable
once, in any replica (the store decides): a ticket copied from a URL or a log after use is
worthless.
"""

from __future__ import annotations

from treadle.app import Gateway
from treadle.auth.identity.records import SignedIn
from treadle.auth.identity.repository import SignIns, TicketProblem
from treadle.errors import ErrorCode, Refusal

__all__ = ["SignedIn", "TicketRefused", "peek", "verify"]


class TicketRefused(Refusal):
    """`reason`: `ticket_unknown`, `ticket_used` or `ticket_expired`."""

    def __init__(self, problem: TicketProblem) -> None:
        super().__init__(
            ErrorCode.UNAUTHORIZED, "The sign-in ticket is not valid", reason=problem.value
        )
        self.reason = problem.value


async def verify(gateway: Gateway, ticket: str) -> SignedIn:
    """Redeems the ticket: once, within its lifetime, in any replica."""
    if not ticket or len(ticket) > 200:
        raise TicketRefused(TicketProblem.UNKNOWN)
    redeemed = await SignIns(gateway.store.db, gateway.vault).redeem(ticket)
    if isinstance(redeemed, TicketProblem):
        raise TicketRefused(redeemed)
    return redeemed


async def peek(gateway: Gateway, ticket: str) -> SignedIn:
    """What a still-redeemable ticket names, leaving it redeemable (to show who signed in)."""
    if not ticket or len(ticket) > 200:
        raise TicketRefused(TicketProblem.UNKNOWN)
    found = await SignIns(gateway.store.db, gateway.vault).peek(ticket)
    if isinstance(found, TicketProblem):
        raise TicketRefused(found)
    return found
