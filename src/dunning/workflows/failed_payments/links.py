"""The links of dunning emails (subject ``case:<id>``), as the failed-payment workflow answers them.

Opening one is a read of one case row (:mod:`dunning.engine.link_pages`: a GET
changes nothing):

- no such case for that customer: refused (404);
- ``update_payment_method`` (emails of an open case) when the case is over
  (recovered, canceled, downgraded, closed): a page "Already resolved", no redirect;
- otherwise on to the billing portal. ``manage_account`` (emails sent once the
  case is over: "go to your account", "subscribe again") always goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from dunning.engine.link_pages import LinkAnswer, LinkPage, LinkPages, Page, Portal, Refused
from dunning.engine.links import MANAGE_ACCOUNT, UPDATE_PAYMENT_METHOD, LinkClaims, case_id_of
from dunning.store.models import Case
from dunning.workflows.failed_payments.policy import TERMINAL, CaseStatus

if TYPE_CHECKING:
    from dunning.runtime import Runtime

_RESOLVED = {
    CaseStatus.RECOVERED: "This payment has been settled. There is nothing more to do, and no card to update.",
    CaseStatus.CANCELED: "This subscription has ended, so there is no payment left to collect through this link.",
    CaseStatus.DOWNGRADED: "Your subscription was moved to another plan, and there is no payment left to collect through this link.",
    CaseStatus.CLOSED: "This subscription was canceled, so there is no payment left to collect through this link.",
}


def show(rt: Runtime, claims: LinkClaims) -> LinkAnswer:
    """The answer to a dunning email's link: the portal, "already resolved", or refused."""
    case_id = case_id_of(claims.subject)
    if case_id is None:
        return Refused()
    with rt.sessions() as session:
        row = session.execute(select(Case.customer_id, Case.status).where(Case.id == case_id)).one_or_none()
    # A case of another customer cannot come from a token we signed; refuse it all the same.
    if row is None or row.customer_id != claims.customer:
        return Refused()
    if claims.purpose == UPDATE_PAYMENT_METHOD and row.status in TERMINAL:
        return Page("Already resolved", (_RESOLVED[CaseStatus(row.status)],))
    return Portal()


LINK_PAGES: LinkPages = {
    (UPDATE_PAYMENT_METHOD, "case"): LinkPage(show=show),
    (MANAGE_ACCOUNT, "case"): LinkPage(show=show),
}
