"""`python -m services.vault`: run the vault service."""

from services.common.server import run_service
from services.vault.app import build

run_service("vault", build)
