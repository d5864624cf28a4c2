"""agent-runtime: patterns, agents, pricing packs, ledger, sessions, executions."""
