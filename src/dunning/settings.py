"""Process configuration, read once from the environment (contract §3).

Every variable has a default that works on a laptop with nothing installed:
SQLite and an embedded Redis under ``./.dunning/``, ``.eml`` files instead of
SMTP, and the sandbox billing server.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path


def _link_secret(home: Path) -> str:
    """A per-install secret for customer links, created on first use."""
    path = home / "link-secret"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    # O_EXCL so two processes starting together agree on one secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its surroundings."""

    home: Path
    database_url: str
    redis_url: str | None  # None: the embedded Redis under ``home``
    smtp_url: str | None  # None: write .eml files under ``home/outbox``
    billing_url: str | None  # None: the sandbox
    billing_secret: str
    ingest_secret: str | None
    policy_path: Path | None
    link_secret: str
    public_url: str
    clock: str  # "system" | "simulated"
    mail_from: str = "Billing <billing@example.com>"
    extra: dict[str, str] = field(default_factory=dict)
    # Signs the short-lived token a customer link hands to the billing portal
    # (docs/configuration.md); None: derived from ``link_secret``.
    portal_secret: str | None = None
    #: Bearer token for the ops page and ``/metrics``; None: loopback clients only (dunning.http.auth).
    ops_token: str | None = None
    #: ``DUNNING_INGEST_DRAIN_BYTES``: how much of an oversized ``POST /events`` body is read before the 413
    #: (dunning.http.ingest); None: 8 MiB.
    ingest_drain_bytes: int | None = None
    #: ``Reply-To`` of every customer email (``DUNNING_MAIL_REPLY_TO``); None: replies go to ``mail_from``.
    mail_reply_to: str | None = None
    #: The operator's template folder (``DUNNING_TEMPLATES_DIR``): its templates, layouts and catalogs
    #: come before the shipped ones (``templates/README.md``); None: the shipped ones only.
    templates_dir: Path | None = None
    #: Stripe webhook signing secrets (``whsec_…``), several during a rotation; empty: endpoint disabled.
    stripe_webhook_secrets: tuple[str, ...] = ()

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the demo use it)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from environment variables (``os.environ`` by default)."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("DUNNING_HOME", ".dunning")).resolve()
    clock = env.get("DUNNING_CLOCK", "system").strip().lower()
    if clock not in ("system", "simulated"):
        raise ValueError(f"DUNNING_CLOCK: expected 'system' or 'simulated', got {clock!r}")
    policy = env.get("DUNNING_POLICY")
    if env.get("DUNNING_PAYMENT_UPDATE_URL"):
        _check_portal_url(env["DUNNING_PAYMENT_UPDATE_URL"])
    return Settings(
        home=home,
        database_url=env.get("DUNNING_DATABASE_URL") or f"sqlite:///{home / 'dunning.db'}",
        redis_url=env.get("DUNNING_REDIS_URL") or None,
        smtp_url=env.get("DUNNING_SMTP_URL") or None,
        billing_url=env.get("DUNNING_BILLING_URL") or None,
        billing_secret=env.get("DUNNING_BILLING_SECRET") or "sandbox-secret",
        ingest_secret=env.get("DUNNING_INGEST_SECRET") or None,
        policy_path=Path(policy) if policy else None,
        link_secret=env.get("DUNNING_LINK_SECRET") or _link_secret(home),
        public_url=(env.get("DUNNING_PUBLIC_URL") or "http://localhost:8000").rstrip("/"),
        clock=clock,
        mail_from=env.get("DUNNING_MAIL_FROM") or "Billing <billing@example.com>",
        extra={
            k: v for k, v in {"payment_update_url": env.get("DUNNING_PAYMENT_UPDATE_URL", "")}.items() if v
        },
        portal_secret=env.get("DUNNING_PORTAL_SECRET") or None,
        ops_token=_ops_token(env.get("DUNNING_OPS_TOKEN", "")),
        ingest_drain_bytes=_positive_int(
            "DUNNING_INGEST_DRAIN_BYTES", env.get("DUNNING_INGEST_DRAIN_BYTES", "")
        ),
        mail_reply_to=_address("DUNNING_MAIL_REPLY_TO", env.get("DUNNING_MAIL_REPLY_TO", "")),
        templates_dir=_templates_dir(env.get("DUNNING_TEMPLATES_DIR", "")),
        stripe_webhook_secrets=tuple(
            s.strip() for s in env.get("DUNNING_STRIPE_WEBHOOK_SECRETS", "").split(",") if s.strip()
        ),
    )


def _positive_int(name: str, value: str) -> int | None:
    """An optional positive integer setting: unset or empty means the default (None)."""
    if not value.strip():
        return None
    if not value.strip().isdigit() or len(value.strip()) > 12 or int(value) <= 0:
        raise ValueError(f"{name}: expected a positive whole number of bytes, got {value[:40]!r}")
    return int(value)


def _address(name: str, value: str) -> str | None:
    """An address header value from the environment (``Name <a@b>`` or ``a@b``); empty means none."""
    value = value.strip()
    if not value:
        return None
    from email.headerregistry import HeaderRegistry

    try:
        header = HeaderRegistry()("reply-to", value)
    except (ValueError, IndexError):
        header = None
    if header is None or len(header.addresses) != 1 or header.defects or "@" not in value:  # type: ignore[attr-defined]
        raise ValueError(f"{name}: expected one address, e.g. 'Billing support <support@example.com>'")
    return value


def _templates_dir(value: str) -> Path | None:
    """``DUNNING_TEMPLATES_DIR``: unset or empty means none; otherwise an existing folder."""
    if not value.strip():
        return None
    path = Path(value.strip()).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"DUNNING_TEMPLATES_DIR: no such folder {path}")
    return path


#: Shortest ops token accepted: it guards revenue figures, so it must not be guessable.
MIN_OPS_TOKEN = 16


def _ops_token(value: str) -> str | None:
    """``DUNNING_OPS_TOKEN``: unset or empty means none; otherwise printable ASCII, at least 16 characters."""
    if not value:
        return None
    if not all(33 <= ord(ch) <= 126 for ch in value):
        raise ValueError(
            "DUNNING_OPS_TOKEN: use printable ASCII without spaces (e.g. `openssl rand -hex 32`)"
        )
    if len(value) < MIN_OPS_TOKEN:
        raise ValueError(
            f"DUNNING_OPS_TOKEN: {len(value)} characters is too short; use at least {MIN_OPS_TOKEN} "
            "(e.g. `openssl rand -hex 32`)"
        )
    return value


def _check_portal_url(url: str) -> None:
    """Refuse a ``DUNNING_PAYMENT_UPDATE_URL`` customers could not be redirected to."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "DUNNING_PAYMENT_UPDATE_URL: expected an absolute http(s) URL, "
            "e.g. https://billing.example.com/portal?customer={customer_id}"
        )
