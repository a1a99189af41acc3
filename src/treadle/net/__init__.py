"""Outbound networking shared by every integration."""

from treadle.net.guard import (
    AddressPredicate,
    BlockedDestination,
    GuardedNetworkBackend,
    GuardedTransport,
    allow_private_network,
    build_http_client,
    is_public_address,
    private_network_allowed,
)

__all__ = [
    "AddressPredicate",
    "BlockedDestination",
    "GuardedNetworkBackend",
    "GuardedTransport",
    "allow_private_network",
    "build_http_client",
    "is_public_address",
    "private_network_allowed",
]
