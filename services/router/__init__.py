"""router: provider engines, retries, fallback, circuit breakers, streaming, accounting."""
