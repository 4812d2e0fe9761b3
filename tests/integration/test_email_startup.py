"""``dunning worker`` and ``dunning serve`` refuse to start on an email template that does not render.

An operator's broken template must stop the process at start-up, naming the
file and line, and never reach a customer's email in a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    from dunning.cli import app
    from dunning.runtime import set_runtime

    monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DUNNING_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    for name in ("DUNNING_CLOCK", "DUNNING_POLICY", "DUNNING_TEMPLATES_DIR"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        set_runtime(None)  # each invocation reads the environment afresh, like a new process
        try:
            return runner.invoke(app, list(args))
        finally:
            set_runtime(None)

    assert invoke("db", "upgrade").exit_code == 0
    yield invoke


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_broken_operator_template_stops_the_start(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    folder = tmp_path / "operator" / "email"
    folder.mkdir(parents=True)
    (folder / "price_change_notice.html").write_text(
        '{% extends "layout.html" %}\n{% block body %}\n<p>{{ plan }}</p>\n\n'
        "<p>{{ plan.upper( }}</p>\n{% endblock %}\n",
        encoding="utf-8",
    )
    (folder / "renewal_notice.txt").write_text(
        '{% extends "layout.txt" %}\n{% block subject %}{{ renewal_day }}{% endblock %}\n', encoding="utf-8"
    )
    monkeypatch.setenv("DUNNING_TEMPLATES_DIR", str(tmp_path / "operator"))
    result = cli(command)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines[0].startswith("error: templates: price_change_notice.html line 5: ")
    from dunning.mail import Renderer

    languages = ", ".join(sorted(Renderer().languages))
    assert lines[1] == (
        "error: templates: renewal_notice.txt line 2: UndefinedError: 'renewal_day' is undefined "
        f"(renewal_notice in {languages})"
    )


def test_a_missing_operator_folder_is_refused(
    cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DUNNING_TEMPLATES_DIR", "/nonexistent/templates")
    result = cli("worker")
    assert result.exit_code == 2
    assert "DUNNING_TEMPLATES_DIR: no such folder /nonexistent/templates" in result.output
