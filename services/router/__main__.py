"""`python -m services.router`: run the router service."""

from services.common.server import run_service
from services.router.app import build

run_service("router", build)
