"""The links an email may carry: named, and only http(s)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def checked_links(links: Mapping[str, str], allowed: Iterable[str]) -> dict[str, str]:
    """The non-empty links of an email, each name one of ``allowed``; ``ValueError`` naming the link else.

    Our own signed links are always http(s): anything else in an email is a bug, or worse.
    """
    names = tuple(allowed)
    checked: dict[str, str] = {}
    for name, url in links.items():
        if name not in names:
            raise ValueError(f"links.{name}: unknown link (expected one of {', '.join(names)})")
        if not url:
            continue
        if not str(url).lower().startswith(("https://", "http://")):
            raise ValueError(f"links.{name}: expected an http(s) URL")
        checked[name] = str(url)
    return checked
