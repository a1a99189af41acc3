"""Who is calling an MCP endpoint: the OAuth 2.1 authorization server, identity providers and
the validation of external authorization servers' tokens (faces ask `auth/`, they
never parse tokens themselves)."""
