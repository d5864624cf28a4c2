"""What every Saga service shares: config, bootstrap, identities, errors, telemetry."""
