"""Identity providers: who a person signing in to an MCP client is.

An org configures identity providers over REST (`/api/v1/identity-providers`):
- `oidc`: the org's OpenID Connect provider. treadle is its relying party (`signin`): discovery,
  PKCE, state and nonce, the ID token checked against the provider's JWKS; a configured claim
  becomes the end user's externalId, and `tickets` hands the result to the consent page.
- `external_as`: an external OAuth authorization server whose JWT access tokens some MCP
  servers accept instead of treadle's own (`treadle.auth.external_jwt`).
"""
