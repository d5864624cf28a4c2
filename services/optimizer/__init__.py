"""optimizer: ranking, live provider metrics, price tables, usage ledger, budgets."""
