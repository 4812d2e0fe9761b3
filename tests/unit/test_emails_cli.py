"""``dunning emails list`` and ``dunning emails preview``: no servers, the real templates, in process."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dunning.cli import app
from dunning.engine.registry import sample_notice, workflows
from dunning.mail import Renderer

KINDS = [kind for w in workflows() for kind in w.notice_kinds]
LANGUAGES = ", ".join(sorted(Renderer().languages))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
    for name in ("DUNNING_TEMPLATES_DIR", "DUNNING_MAIL_FROM", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"COLUMNS": "120"})

    return invoke


def test_list_shows_every_kind_its_workflow_and_type(cli: Callable[..., Any]) -> None:
    result = cli("emails", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"17 kinds; languages: {LANGUAGES})" in result.output
    for kind in KINDS:
        row = next(line for line in lines if f" {kind} " in line)
        expected = "prompt" if kind in ("annual_offer", "upgrade_ending") else "transactional"
        assert expected in row and "txt, html" in row, row


def test_preview_prints_the_subject_and_the_text_a_worker_would_send(cli: Callable[..., Any]) -> None:
    result = cli("emails", "preview", "final_notice", "--locale", "de")
    assert result.exit_code == 0, result.output
    rendered = Renderer().render(sample_notice("final_notice", "de"))
    assert result.output == f"Subject: {rendered.subject}\n\n{rendered.text}"
    assert rendered.subject.startswith("Letzte Erinnerung")


def test_preview_json_is_the_whole_message(cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "offer.html"
    result = cli("emails", "preview", "annual_offer", "--locale", "fr", "--json", "--html", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    headers = data["headers"]
    assert headers["Content-Type"] == "multipart/alternative"
    assert headers["X-Dunning-Kind"] == "annual_offer"
    assert headers["Message-ID"].startswith("<annual_offer.sample.")
    assert headers["Date"] == "Mon, 01 Mar 2027 09:00:00 +0000"  # fixed: a preview is the same every run
    assert data["subject"] == headers["Subject"] and "Économisez" in data["subject"]
    assert data["text"].startswith("Bonjour Ada Lovelace,")
    assert '<html lang="fr" dir="ltr">' in data["html"]
    assert out.read_text(encoding="utf-8") == data["html"]
    # Same output twice: nothing in a preview depends on the clock.
    assert cli("emails", "preview", "annual_offer", "--locale", "fr", "--json").output == result.output


def test_preview_message_parses_as_multipart_alternative(cli: Callable[..., Any]) -> None:
    from dunning.commands.emails import sample_message
    from dunning.settings import load_settings

    msg = sample_message(Renderer(), load_settings(), "payment_failed", "en")
    parsed = email.message_from_bytes(msg.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_unknown_kind_is_refused_listing_the_kinds(cli: Callable[..., Any]) -> None:
    result = cli("emails", "preview", "payment_faild")
    assert result.exit_code == 2
    assert "unknown notice kind 'payment_faild'" in result.output
    assert all(kind in result.output for kind in KINDS)


def test_locale_without_a_catalog_is_refused(cli: Callable[..., Any]) -> None:
    result = cli("emails", "preview", "payment_failed", "--locale", "xx")
    assert result.exit_code == 2
    assert "no catalog for 'xx'" in result.output and LANGUAGES in " ".join(result.output.split())
    assert cli("emails", "preview", "payment_failed", "--locale", "fr-CA").exit_code == 0
