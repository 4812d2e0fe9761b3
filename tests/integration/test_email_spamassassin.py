"""SpamAssassin scores of every email: the full MIME message of each kind, in English and French.

Runs Debian's ``spamassassin`` with local tests only (``-L``: no DNS or network
checks), all messages in one mbox so the rules load once. Each sample email is
built exactly as a worker sends it (:func:`dunning.commands.emails.sample_message`).
The table of scores is printed and recorded in the README's emails section.
"""

from __future__ import annotations

import email.policy
import mailbox
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LANGUAGES = ("en", "fr")
#: SpamAssassin's default threshold is 5.0; a transactional email should be far below it.
MAX_SCORE = 2.0
#: An HTML-only, undated, phishing-worded message: SpamAssassin must call it spam (7.4 with 4.0.1).
CONTROL = (
    b'From: "Account Security" <security@verify.example>\nTo: ada@example.com\n'
    b"Subject: URGENT!!! Your account has been suspended\nMIME-Version: 1.0\n"
    b"Content-Type: text/html; charset=utf-8\n\n"
    b"<html><body><font size=7 color=red>YOUR ACCOUNT HAS BEEN SUSPENDED</font><p>Verify your account now: "
    b'<a href="http://192.168.10.1/login.php">https://www.paypal.com/verify</a> 100% FREE, act now, '
    b"limited time, click here!</p></body></html>\n"
)


def test_every_email_scores_low_with_spamassassin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dunning.commands.emails import all_kinds, sample_message
    from dunning.mail import Renderer
    from dunning.settings import load_settings

    binary = shutil.which("spamassassin")
    if binary is None:
        pytest.fail("spamassassin is not installed (apt-get install spamassassin; .ci/run does it)")
    monkeypatch.setenv("DUNNING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DUNNING_TEMPLATES_DIR", raising=False)
    renderer, settings = Renderer(), load_settings()
    inbox = mailbox.mbox(tmp_path / "in.mbox")
    expected: dict[str, tuple[str, str]] = {}
    for kind, _, _ in all_kinds():
        for language in LANGUAGES:
            msg = sample_message(renderer, settings, kind, language)
            expected[str(msg["Message-ID"])] = (kind, language)
            inbox.add(msg.as_bytes(policy=email.policy.SMTP))
    inbox.add(CONTROL)  # proves the harness sees a bad message: it has no Message-ID, nothing else lacks one
    inbox.flush()
    with (tmp_path / "in.mbox").open("rb") as fh:
        done = subprocess.run(
            [binary, "-L", "--mbox", "--cf=use_bayes 0"],
            stdin=fh,
            capture_output=True,
            timeout=240,
            check=True,
        )
    (tmp_path / "out.mbox").write_bytes(done.stdout)
    scores: dict[tuple[str, str], tuple[float, str]] = {}
    control: list[float] = []
    for out in mailbox.mbox(tmp_path / "out.mbox"):
        status = " ".join(str(out["X-Spam-Status"]).split())
        found = re.search(r"score=(-?[\d.]+) .*tests=([\w, ]*?)\s*(?:autolearn=|version=|$)", status)
        assert found, status
        rules = found.group(2).replace(" ", "")
        if out["Message-ID"] is None:
            control.append(float(found.group(1)))
            continue
        scores[expected[str(out["Message-ID"])]] = (float(found.group(1)), rules)
    assert set(scores) == set(expected.values()), "spamassassin did not score every message"
    assert control and control[0] >= 5.0, f"the phishing-like control scored {control}"
    with capsys.disabled():
        print(f"\nSpamAssassin {len(scores)} emails (-L, local tests only):")
        print(f"{'kind':<26}{'en':>7}{'fr':>7}  rules hit")
        for kind, _, _ in all_kinds():
            rules = sorted({r for lang in LANGUAGES for r in scores[(kind, lang)][1].split(",") if r})
            line = "".join(f"{scores[(kind, lang)][0]:>7.1f}" for lang in LANGUAGES)
            print(f"{kind:<26}{line}  {', '.join(rules)}")
        print(f"{'(phishing-like control)':<26}{control[0] if control else float('nan'):>7.1f}")
    too_high = {k: v for k, v in scores.items() if v[0] >= MAX_SCORE}
    assert not too_high, f"scores of {MAX_SCORE} or more: {too_high}"
