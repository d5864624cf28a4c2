"""`python -m services.runtime`: run the runtime service."""

from services.common.server import run_service
from services.runtime.app import build

run_service("runtime", build)
