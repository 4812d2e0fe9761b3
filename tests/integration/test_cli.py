"""The command line: every command answers --help; bad input exits non-zero with a one-line reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dunning.cli import app
from dunning.runtime import set_runtime

pytestmark = pytest.mark.integration

COMMANDS = [
    [],
    ["demo"],
    ["worker"],
    ["scheduler"],
    ["serve"],
    ["sandbox"],
    ["db", "upgrade"],
    ["db", "current"],
    ["clock", "show"],
    ["clock", "advance"],
    ["queues"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "requeue"],
    ["dlq", "purge"],
    ["report"],
]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    for name in ("DUNNING_CLOCK", "DUNNING_POLICY"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> object:
        set_runtime(None)  # each invocation reads the environment afresh, like a new process
        try:
            return runner.invoke(app, list(args), env=env)
        finally:
            set_runtime(None)

    yield invoke


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dunning")
def test_every_command_has_help(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _one_line_error(result: object, needle: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = [line for line in result.output.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and needle in lines[0], lines


def test_bad_input_gets_a_one_line_reason(cli, tmp_path: Path) -> None:
    _one_line_error(cli("report"), "run `dunning db upgrade`")
    assert cli("db", "upgrade").exit_code == 0
    _one_line_error(cli("clock", "advance", "3x"), "invalid duration '3x'")
    _one_line_error(cli("clock", "advance", "1d"), "set DUNNING_CLOCK=simulated")
    _one_line_error(cli("report", env={"DUNNING_CLOCK": "weird"}), "DUNNING_CLOCK")
    _one_line_error(cli("dlq", "show", "zz"), "expected m<number> or j<number>")
    _one_line_error(cli("dlq", "show", "m99"), "no dead letter 'm99'")
    _one_line_error(cli("dlq", "purge"), "give a REF or --all")
    policy = tmp_path / "policy.toml"
    policy.write_text("[plans.pro]\nend_action = 'downgrade'\n")
    _one_line_error(cli("report", env={"DUNNING_POLICY": str(policy)}), "plans.pro.downgrade_plan")
    _one_line_error(cli("worker", "-Q", "nope"), "unknown queue 'nope'")


def test_simulated_clock_moves_only_when_advanced(cli) -> None:
    env = {"DUNNING_CLOCK": "simulated"}
    assert cli("db", "upgrade").exit_code == 0
    first = cli("clock", "show", env=env).output.split()[0]
    assert cli("clock", "show", env=env).output.split()[0] == first
    moved = cli("clock", "advance", "1d12h", env=env)
    assert moved.exit_code == 0, moved.output
    from datetime import datetime, timedelta

    after = cli("clock", "show", env=env).output.split()[0]
    assert datetime.fromisoformat(after) - datetime.fromisoformat(first) == timedelta(days=1, hours=12)


def test_report_on_an_empty_database(cli) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli("report")
    assert result.exit_code == 0, result.output
    assert "cases opened" in result.output
