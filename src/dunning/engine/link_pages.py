"""What a workflow answers to a customer link, without knowing HTTP.

``dunning serve`` (:mod:`dunning.http.links`) checks a link's token, then asks
the workflow that registered the link's purpose and subject kind
(:attr:`dunning.engine.registry.Workflow.links`) for an answer, and turns it
into a response. A :class:`LinkPage` has two parts:

- ``show``: the GET. It reads and never writes: mail scanners fetch every
  link in an email before the customer does.
- ``act`` (optional): the POST that the page's confirm button sends. It acts
  in one transaction and returns the messages to send once that committed.
  Acting twice must show the choice already made, not make it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dunning.engine.jobs import Dispatch
    from dunning.engine.links import LinkClaims
    from dunning.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Page:
    """A page to show (HTML from ``dunning/http/templates/<template>``).

    ``values`` are the template's own variables; every template also gets
    ``title`` and ``paragraphs``. ``confirm``: the label of a confirm button;
    the page then carries a form that POSTs back to the link (the template
    includes ``_confirm.html``), answered by :attr:`LinkPage.act`.
    """

    title: str
    paragraphs: tuple[str, ...] = ()
    status: int = 200
    template: str = "message.html"
    values: Mapping[str, object] = field(default_factory=dict)
    confirm: str | None = None


@dataclass(frozen=True, slots=True)
class Portal:
    """Go on to the billing portal for the link's purpose (or its placeholder page when none is set)."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The "link no longer valid" page: 404 (not ours, unknown subject) or 410 (expired)."""

    reason: str = "this link is not valid"
    status: int = 404


LinkAnswer = Page | Portal | Refused
#: The GET of a link: reads, never writes.
Show = Callable[["Runtime", "LinkClaims"], LinkAnswer]
#: The POST of the page's confirm button: the answer, and messages to send after its commit.
Act = Callable[["Runtime", "LinkClaims"], tuple[LinkAnswer, "list[Dispatch]"]]


@dataclass(frozen=True, slots=True)
class LinkPage:
    """How a workflow answers links of one purpose about one kind of subject."""

    show: Show
    act: Act | None = None


#: A workflow's link pages: ``(purpose, subject kind)`` -> page, e.g.
#: ``("update_payment_method", "case")``; the subject kind is what
#: :func:`dunning.engine.links.subject_kind` says of the token's subject.
LinkPages = Mapping[tuple[str, str], LinkPage]
