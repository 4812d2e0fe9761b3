"""``dunning demo`` end to end on a small base: the summary has its failed-payment and lifecycle lines.

The demo starts its own Redis, sandbox billing API, scheduler and workers (a
real run, in a subprocess like a user's). Its story starts on today's date, so
the assertions hold for any start date: what the lifecycle story guarantees
with two subscribers per group over the default 46 days (a card trial and a
card-less one that adds a card convert, another lapses; one long-tenure
subscriber accepts the offer; one owner of an expiring card updates it after
the notice, within 40 days), and what the price story guarantees with its four
legacy-plan subscribers (a step-up, a downgrade, one who does nothing: each
price applies within 46 days; one cancels after the notice and is skipped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

LIFECYCLE_KINDS = (
    "renewal_notice",
    "card_expiring",
    "annual_offer",
    "annual_switch_confirmed",
    "trial_reminder",
    "trial_ended",
    "upgrade_ending",
    "upgrade_reverted",
)


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNNING_")}
    env["COLUMNS"] = "200"  # one summary line per line
    done = subprocess.run(
        [sys.executable, "-m", "dunning", "demo", "--subscriptions", "10", "--directory", str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _row(text: str, name: str) -> int:
    found = re.search(rf"│ {re.escape(name)}\s+│\s+(\d+) │", text)
    assert found, f"no row {name!r} in:\n{text}"
    return int(found.group(1))


def test_the_failed_payment_lines_are_still_there(summary: str) -> None:
    assert _row(summary, "cases opened") == 4  # the seed-7 story of 10 subscriptions
    assert "dead letters: 0" in summary
    assert ", 0 double charges," in summary


def test_the_lifecycle_notices_by_kind(summary: str) -> None:
    table = summary[summary.index("Lifecycle notices") :]
    sent = {kind: _row(table, kind) for kind in LIFECYCLE_KINDS}
    # Every kind the story guarantees within 46 days (a yearly renewal's 7-day notice, a card trial's
    # reminders and outcome, a taste's prompts and its revert, the offer and its acceptance).
    assert all(sent[kind] > 0 for kind in LIFECYCLE_KINDS), sent
    assert (
        "and 12 lifecycle subscribers: 2 yearly renewing, 2 trials with a card and 2 without, 2 expiring cards"
        in summary
    )


def test_trials_switches_and_pre_dunning_card_updates(summary: str) -> None:
    trials = re.search(r"trials: (\d+) converted, (\d+) lapsed \(trial_ended emails\)", summary)
    assert trials and int(trials.group(1)) >= 2 and int(trials.group(2)) >= 1, summary
    switches = re.search(
        r"annual switches accepted: (\d+) \((\d+) change_plan calls to yearly billing on the billing sandbox\)",
        summary,
    )
    assert switches and int(switches.group(1)) == int(switches.group(2)) >= 1, summary
    cards = re.search(r"pre-dunning card updates: (\d+) of (\d+) customers warned", summary)
    assert cards and 1 <= int(cards.group(1)) <= int(cards.group(2)), summary
    assert "GET /l/<token>" in summary and "POST with its confirm_code" in summary


def test_the_price_migration_block(summary: str) -> None:
    head = re.search(
        r"price migration (pm_\d{8}_[0-9a-f]{6}) \((\w+)\): legacy EUR monthly €20\.00 -> €24\.00, 14 days' notice",
        summary,
    )
    assert head and head.group(2) == "completed", summary  # every member applied or skipped
    counts = re.search(
        r"(\d+) members: (\d+) notified, (\d+) reminded, (\d+) applied, (\d+) skipped \(canceled\),"
        r" (\d+) still to apply",
        summary,
    )
    assert counts, summary
    members, notified, reminded, applied, skipped, left = map(int, counts.groups())
    assert (members, notified, applied, skipped, left) == (4, 4, 3, 1, 0), summary
    assert 3 <= reminded <= 4  # the canceler may be reminded before canceling
    assert "choices: step_up 1, downgrade 1, none 0 (2 confirmation emails)*" in summary
    calls = re.search(
        r"billing sandbox: (\d+) change_plan calls for it \((\d+) keys, \d+ replays\), (\d+) double changes",
        summary,
    )
    assert calls and (int(calls.group(1)), int(calls.group(2)), int(calls.group(3))) == (3, 3, 0), summary
    assert "dunning prices plan --plan legacy --currency EUR --new-amount 2400" in summary
    assert "the notice's link for the offer (GET /l/<token>)" in summary


def test_the_gallery_of_every_email(summary: str) -> None:
    found = re.search(r"every email in every language: (\S+index\.html)", summary)
    assert found, summary[-2000:]
    index = found.group(1)
    with open(index, encoding="utf-8") as fh:
        page = fh.read()
    from dunning.mail import Renderer

    # 17 kinds in every language with a catalog: an HTML and a text link each.
    links = re.findall(r'href="[a-z_]+-[a-z]+\.(?:html|txt)"', page)
    assert len(links) == 17 * len(Renderer().languages) * 2
