"""The local supervisor behind `make run`: six service processes, started and stopped in order."""
