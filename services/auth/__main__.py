"""`python -m services.auth`: run the auth service."""

from services.auth.app import build
from services.common.server import run_service

run_service("auth", build)
