"""The README's first-run commands work as written on a fresh stack (the default config, as
`make run` starts it): each line of its first `sh` block of `saga` commands is run with the
real CLI against the real services, as the admin `make run` created, with the default
limits."""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
from pathlib import Path

from tests.e2e.test_cli import ok, saga_cli
from tests.harness import ROOT, stack_for

PASSWORD = "pw " + secrets.token_urlsafe(15)


def first_run_commands() -> list[tuple[list[str], str]]:
    """(arguments, standard input) of each `saga` line in the README's first-run block."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Then, in a second terminal:")
    block = re.search(r"```sh\n(.*?)```", readme[start:], re.S)
    assert block is not None
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line:
            continue
        stdin = ""
        piped = re.fullmatch(r'echo "\$(\w+)" \| (.*)', line)
        if piped:
            stdin, line = f"secret-from-{piped.group(1)}\n", piped.group(2)
        words = shlex.split(line)
        assert words[0] == ".venv/bin/saga", line
        if words[1] in ("register", "login"):
            stdin = PASSWORD + "\n"
        commands.append((words[1:], stdin))
    return commands


async def test_the_readme_first_run_commands_work_as_written(tmp_path: Path) -> None:
    commands = first_run_commands()
    assert len(commands) >= 10  # the block was found and read whole
    # The real default limits, as `make run` has them (the harness lifts them for others).
    async with stack_for(tmp_path, SAGA_GATEWAY__LIMITS__PROFILE="standard") as stack:
        email = f"readme.{secrets.token_hex(4)}@example.com"
        for args, stdin in commands:
            args = [email if a == "alice@example.com" else a for a in args]
            ok(await asyncio.to_thread(saga_cli, stack, *args, stdin=stdin))
