"""`python -m services.gateway`: run the gateway service."""

from services.common.server import run_service
from services.gateway.app import build

run_service("gateway", build, public=True)
