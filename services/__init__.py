"""Saga's six services and what they share (`services.common`)."""
