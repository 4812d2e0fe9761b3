"""Which emails a recipient gets, and how many: mail classes, per-recipient caps, coalescing.

Pure policy (no I/O): the engine (:mod:`dunning.engine.delivery`) loads what a recipient was
sent and what else is due for them, and asks :func:`decide` about the email leaving now.

Three classes of email, declared per notice kind by the workflow that writes it
(:attr:`dunning.engine.registry.Workflow.mail_kinds`):

- ``dunning``: the emails that chase a failed payment. At most ``max_dunning_per_day`` per
  recipient per local calendar day; one over the cap is *deferred* to the recipient's next
  day (never dropped: it announces a retry, a suspension, an end), unless a more important
  email of the same case goes now, which says everything it would have (then it is merged).
- ``transactional``: facts about the recipient's account or money (a renewal, a charge, a
  confirmation). Never capped, never suppressed, never held for another email.
- ``prompt``: offers and nudges. At most ``max_prompts_per_week`` per recipient in any
  7 days, at most one a day, none on a day that recipient gets a dunning email; a prompt
  over a cap is dropped (it will be offered again, or never: both are fine). Prompts carry
  ``List-Unsubscribe`` and are skipped for addresses that unsubscribed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from dunning.domain.notices import deliver_at
from dunning.domain.policy_errors import validate_table

MailClass = Literal["dunning", "transactional", "prompt"]
DUNNING: MailClass = "dunning"
TRANSACTIONAL: MailClass = "transactional"
PROMPT: MailClass = "prompt"
#: Between classes, what goes first when two emails for one recipient fall due together.
_CLASS_RANK: dict[str, int] = {DUNNING: 3, TRANSACTIONAL: 2, PROMPT: 1}


@dataclass(frozen=True, slots=True)
class MailKind:
    """How the product treats one notice kind: its class, and its importance within the class.

    ``rank``: higher goes first when two emails of one class are due together (e.g. a final
    notice outranks a reminder).
    """

    mail_class: MailClass = TRANSACTIONAL
    rank: int = 0


#: A kind no workflow classifies: transactional, the safe side (never suppressed or capped).
UNCLASSIFIED = MailKind()


class _EmailsFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # At least one: a dunning email that could never leave would hide a failed payment.
    max_dunning_per_day: StrictInt = Field(default=1, ge=1, le=10)
    max_prompts_per_week: StrictInt = Field(default=2, ge=0, le=50)


@dataclass(frozen=True, slots=True)
class EmailCaps:
    """The ``[emails]`` table of the policy file (per recipient address)."""

    max_dunning_per_day: int = 1
    max_prompts_per_week: int = 2


DEFAULT_CAPS = EmailCaps()


def caps_from_dict(data: object) -> EmailCaps:
    """Validate the ``[emails]`` table; a :class:`~dunning.domain.policy_errors.PolicyError` names the key."""
    fields = validate_table(_EmailsFields, "emails", data)
    return EmailCaps(fields.max_dunning_per_day, fields.max_prompts_per_week)


@dataclass(frozen=True, slots=True)
class Mail:
    """One email to a recipient, as the decision sees it: sent (``at`` = when) or due (``at`` = due)."""

    id: int
    kind: str
    mail: MailKind
    at: datetime
    case_id: int | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """Send it now."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Hold it until ``until`` (UTC), then decide again."""

    until: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not send it; ``reason`` goes on the timeline."""

    reason: str


Decision = Send | Defer | Drop


def _outranks(a: Mail, b: Mail) -> bool:
    """Whether ``a`` goes before ``b``: class, then rank, then the older email (a stable order)."""
    return (_CLASS_RANK[a.mail.mail_class], a.mail.rank, -a.id) > (
        _CLASS_RANK[b.mail.mail_class],
        b.mail.rank,
        -b.id,
    )


def _local_day(at: datetime, timezone: str | None) -> tuple[datetime, datetime]:
    """The recipient's local calendar day holding ``at``, as UTC ``[start, end)`` (an unknown zone: UTC)."""
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = at.astimezone(zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    end = start + timedelta(days=1)
    # Re-localise each wall time: a DST change makes some days 23 or 25 hours long.
    return start.replace(tzinfo=zone).astimezone(at.tzinfo), end.replace(tzinfo=zone).astimezone(at.tzinfo)


def decide(
    email: Mail,
    *,
    sent: Sequence[Mail],
    due: Sequence[Mail],
    caps: EmailCaps,
    timezone: str | None,
    quiet_hours: tuple[time, time] | None,
    now: datetime,
) -> Decision:
    """Send, defer or drop ``email`` (due now) for a recipient.

    ``sent``: what this recipient was sent (or is being sent) in the last 7 days;
    ``due``: their other emails due now and not yet sent, each about to be decided the
    same way (so of two rivals exactly one concludes it goes first). ``timezone``: the
    recipient's, for "a day"; ``quiet_hours``: where a deferred email may not land.
    """
    cls = email.mail.mail_class
    if cls == TRANSACTIONAL:
        return Send()
    day_start, day_end = _local_day(now, timezone)
    today = [m for m in sent if day_start <= m.at < day_end]
    ahead = [m for m in due if m.id != email.id and _outranks(m, email)]
    if cls == DUNNING:
        # A later step of the same case (going now, or sent today) says everything this one
        # would: the customer gets one email about the case that day, the most important.
        same_case = [m for m in [*ahead, *today] if m.mail.mail_class == DUNNING and m.case_id]
        merged = next(
            (m for m in same_case if m.case_id == email.case_id and m.mail.rank > email.mail.rank), None
        )
        if merged is not None:
            return Drop(f"merged into {merged.kind} of the same case, which goes today")
        sent_today = sum(1 for m in today if m.mail.mail_class == DUNNING)
        ahead_today = sum(1 for m in ahead if m.mail.mail_class == DUNNING)
        if sent_today + ahead_today >= caps.max_dunning_per_day:
            until = deliver_at(day_end, timezone, quiet_hours)
            why = "already sent" if sent_today else f"{ahead[0].kind} goes first"
            return Defer(
                until,
                f"at most {caps.max_dunning_per_day} dunning email(s) a day per recipient ({why})",
            )
        return Send()
    # A prompt.
    if caps.max_prompts_per_week == 0:
        return Drop("prompts are switched off (max_prompts_per_week = 0)")
    if any(m.mail.mail_class == DUNNING for m in [*today, *ahead]):
        return Drop("a dunning email goes to this recipient today; no offer on the same day")
    if any(m.mail.mail_class == PROMPT for m in today):
        return Drop("at most one prompt a day per recipient (one was already sent today)")
    rival = next((m for m in ahead if m.mail.mail_class == PROMPT), None)
    if rival is not None:
        return Drop(f"at most one prompt a day per recipient ({rival.kind} goes instead)")
    week = [m for m in sent if m.mail.mail_class == PROMPT and m.at > now - timedelta(days=7)]
    if len(week) >= caps.max_prompts_per_week:
        return Drop(f"at most {caps.max_prompts_per_week} prompt(s) a week per recipient")
    return Send()
