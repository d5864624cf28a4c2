"""gateway: Saga's public contract — authenticate, check scopes, rate-limit, relay."""
