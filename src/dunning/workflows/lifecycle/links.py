"""The links of lifecycle emails (subject ``sub:<id>``): account and card links go on to the portal.

Opening one is a read of one subscription row and changes nothing. The
annual-switch offer's page is in :mod:`dunning.workflows.lifecycle.annual_switch`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dunning.engine.link_pages import LinkAnswer, LinkPage, LinkPages, Portal, Refused
from dunning.engine.links import MANAGE_ACCOUNT, UPDATE_PAYMENT_METHOD, LinkClaims, subscription_id_of
from dunning.store.models import Subscription

if TYPE_CHECKING:
    from dunning.runtime import Runtime


def subscription_of(session: Session, claims: LinkClaims, *, lock: bool = False) -> Subscription | None:
    """The subscription a link is about, or None when the subject names none of this customer's.

    ``lock``: take the row lock (a confirm serialises on its subscription).
    """
    sub_id = subscription_id_of(claims.subject)
    if sub_id is None:
        return None
    sub = session.get(Subscription, sub_id, with_for_update=lock or None)
    # A subscription of another customer cannot come from a token we signed; refuse it all the same.
    if sub is None or sub.customer_id != claims.customer:
        return None
    return sub


def show_portal(rt: Runtime, claims: LinkClaims) -> LinkAnswer:
    """``manage_account`` / ``update_payment_method`` about a subscription: on to the portal."""
    with rt.sessions() as session:
        found = subscription_of(session, claims) is not None
    return Portal() if found else Refused()


#: Registered by the lifecycle workflow (with :data:`dunning.workflows.lifecycle.annual_switch.LINK_PAGES`).
LINK_PAGES: LinkPages = {
    (MANAGE_ACCOUNT, "sub"): LinkPage(show=show_portal),
    (UPDATE_PAYMENT_METHOD, "sub"): LinkPage(show=show_portal),
}
