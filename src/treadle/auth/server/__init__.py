"""treadle's own OAuth 2.1 authorization server for its MCP endpoints.

Every `/mcp/{serverId}` is a protected resource (RFC 9728). Clients register by Dynamic Client
Registration (RFC 7591) or name themselves by a Client ID Metadata Document; a person signs in
and consents on a server-rendered page; the client trades the code (PKCE S256 only) for a
short-lived access token bound to that one endpoint (RFC 8707) and a refresh token that
rotates, whose reuse revokes the grant. Only hashes of codes, tokens and client secrets are
stored.
"""
