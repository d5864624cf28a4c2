"""The runtime's built-in agents; each owns a set of capabilities (see `capabilities.py`)."""
