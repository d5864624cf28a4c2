"""auth: users, API keys, JWTs, JWKS and provider credentials."""
