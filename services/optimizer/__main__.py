"""`python -m services.optimizer`: run the optimizer service."""

from services.common.server import run_service
from services.optimizer.app import build

run_service("optimizer", build)
