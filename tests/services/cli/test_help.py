"""Every command is documented: its --help says what it does and lists its flags, and the README
names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import build_parser, main

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
CLIENT_COMMANDS = {
    "demo": ["--images", "--epochs", "--url", "--api-key", "--json"],
    "submit": ["FOLDER_OR_ZIP", "--classes", "--epochs", "--image-size", "--spec", "--no-wait", "--idempotency-key"],
    "tasks": ["TASK_ID", "--watch", "--status", "--model"],
    "versions": ["VERSION", "--model", "--json"],
    "promote": ["VERSION", "--alias"],
    "compare": ["V1", "V2"],
    "segment": ["IMAGE", "--out", "--overlay", "--version"],
    "export": ["--format", "--output", "--from-database"],
}


def commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help_and_is_in_the_readme(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: strata {command}" in text and len(text) > 200
    for flag in CLIENT_COMMANDS.get(command, []):
        assert flag in text, f"{command} --help does not mention {flag}"
    assert f"strata {command}" in README, f"the README does not name `strata {command}`"


def test_the_client_commands_are_all_there():
    assert set(CLIENT_COMMANDS) <= set(commands())
