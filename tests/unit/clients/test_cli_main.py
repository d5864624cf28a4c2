"""The CLI's last line of defence: an unexpected error is one line and exit 1."""

from __future__ import annotations

import argparse
import sys

import pytest

from clients.cli import __main__ as cli
from clients.cli.settings import Settings


async def broken(args: argparse.Namespace, settings: Settings) -> int:
    raise RuntimeError("something the CLI did not expect")


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    monkeypatch.setattr(cli, "_run", broken)
    argv = ["saga", *(["--debug"] if debug else []), "providers", "list"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "saga: unexpected RuntimeError: something the CLI did not expect (a bug in the CLI; "
        "--debug shows where)"
    )
    # The traceback only when asked for.
    assert ("Traceback" in err) is debug
