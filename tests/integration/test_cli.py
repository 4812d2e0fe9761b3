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
    ["dlq", "audit"],
    ["report"],
    ["pause"],
    ["resume"],
    ["calendar"],
    ["emails"],
    ["emails", "list"],
    ["emails", "preview"],
    ["emails", "bounces"],
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
    _one_line_error(cli("dlq", "list", "--older-than", "soon"), "--older-than: invalid duration 'soon'")
    _one_line_error(cli("report", "--since", "1y"), "--since: invalid duration '1y'")
    _one_line_error(cli("report", "--json", "--csv"), "--json and --csv")
    _one_line_error(cli("pause", "nope"), "unknown notice kind 'nope'")
    _one_line_error(cli("queues", "--json", "--watch", "1"), "--json and --watch")
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


def test_dlq_on_bytes_that_were_not_a_message(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the broker's consumer parks for bytes that are not a message: listed, shown, purged, never re-sent."""
    from datetime import UTC, datetime

    from dunning import cli as cli_module
    from dunning.runtime import get_runtime

    monkeypatch.setattr(cli_module.console, "width", 300)  # one table row per line
    from dunning.store.dead_letters import NOT_A_MESSAGE, park

    assert cli("db", "upgrade").exit_code == 0
    set_runtime(None)
    rt = get_runtime()
    try:
        for message_id, reason, payload, error_type in [
            (
                "garbage-1",
                "not a Dramatiq message: invalid UTF-8 at byte 1",
                "\\x00\\xffnot a message {",
                NOT_A_MESSAGE,
            ),
            ("garbage-2", "not a Dramatiq message: unknown key(s) '[red]x'", '{"[red]x": 1}', NOT_A_MESSAGE),
            ("legacy-3", "refused", "{}", "InvalidEvent"),  # a payload that is JSON but not a message
        ]:
            park(
                rt,
                {
                    "message_id": message_id,
                    "queue": "billing_events",
                    "actor": "(not a message)",
                    "payload": payload,
                    "field": "message",
                    "reason": reason,
                    "error_type": error_type,
                    "parked_at": datetime.now(UTC),
                },
            )
    finally:
        rt.close()
        set_runtime(None)
    listed = cli("dlq", "list")
    assert listed.exit_code == 0, listed.output
    assert "Dead letters (3)" in listed.output and "(not a message)" in listed.output
    assert "[red]x" in listed.output  # shown as is, not taken for markup
    shown = cli("dlq", "show", "m1")
    assert shown.exit_code == 0, shown.output
    assert "not a Dramatiq message: invalid UTF-8 at byte 1" in shown.output
    assert "\\\\x00\\\\xffnot a message {" in shown.output  # the escaped bytes, JSON-quoted
    _one_line_error(
        cli("dlq", "requeue", "m1"),
        "m1 cannot be requeued, it is not a Dramatiq message: invalid UTF-8 at byte 1 (nothing to re-send)",
    )
    _one_line_error(cli("dlq", "requeue", "m2"), "unknown key(s) '[red]x'")
    _one_line_error(cli("dlq", "requeue", "m3"), "m3 cannot be requeued: its payload is not a message")
    every = cli("dlq", "requeue", "all")
    assert every.exit_code == 0, every.output
    assert every.output.count("skipped: m") == 3, every.output
    assert "Dead letters (3)" in cli("dlq", "list").output  # still there, none marked requeued
    purged = cli("dlq", "purge", "m1")
    assert purged.exit_code == 0 and "purged 1" in purged.output, purged.output
    assert cli("dlq", "purge", "--all").output.strip() == "purged 2"
    assert "Dead letters (0)" in cli("dlq", "list").output
