"""Default OAuth endpoints and scopes of the providers treadle ships integrations for.

An OAuth app's settings may override every value (GitHub Enterprise, a test emulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProviderDefaults:
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    # Slack joins scopes with commas; the others follow RFC 6749 (spaces).
    scope_separator: str = " "
    extra_authorize_params: dict[str, str] = field(default_factory=dict)


_GOOGLE_AUTHORIZE = "https://accounts.google.com/o/oauth2/v2/auth"
_GOOGLE_EXCHANGE = "https://oauth2.googleapis.com/token"
# Google only returns a refresh token with offline access (and again only on consent).
_GOOGLE_PARAMS = {"access_type": "offline", "prompt": "consent"}

DEFAULTS: dict[str, ProviderDefaults] = {
    "slack": ProviderDefaults(
        "https://slack.com/oauth/v2/authorize",
        "https://slack.com/api/oauth.v2.access",
        ("chat:write", "channels:read", "channels:history", "users:read"),
        scope_separator=",",
    ),
    "github": ProviderDefaults(
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        ("repo",),
    ),
    "google-sheets": ProviderDefaults(
        _GOOGLE_AUTHORIZE,
        _GOOGLE_EXCHANGE,
        ("https://www.googleapis.com/auth/spreadsheets",),
        extra_authorize_params=_GOOGLE_PARAMS,
    ),
    "gmail": ProviderDefaults(
        _GOOGLE_AUTHORIZE,
        _GOOGLE_EXCHANGE,
        ("https://www.googleapis.com/auth/gmail.modify",),
        extra_authorize_params=_GOOGLE_PARAMS,
    ),
}


def defaults_for(integration_name: str) -> ProviderDefaults | None:
    return DEFAULTS.get(integration_name)
