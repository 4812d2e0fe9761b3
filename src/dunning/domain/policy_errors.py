"""The policy file's one error, and the check that turns a pydantic failure into it.

Shared by the dunning keys (``policy``) and the lifecycle sections (``lifecycle_policy``) so that
every refusal names the dotted field the same way, e.g. ``plans.pro.renewals.offsets_days``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dunning.errors import DunningError

M = TypeVar("M", bound=BaseModel)


class PolicyError(DunningError, ValueError):
    """A policy file we refuse; the message starts with the dotted field path."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def validate_table(model: type[M], prefix: str, data: Any) -> M:
    """Validate one TOML table against ``model``; any error becomes a :class:`PolicyError` under ``prefix``."""
    if not isinstance(data, dict):
        raise PolicyError(prefix, "expected a table")
    try:
        return model.model_validate(data)
    except PolicyError as exc:
        raise PolicyError(f"{prefix}.{exc.field}", exc.reason) from None
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        idx = "".join(f"[{p}]" for p in err["loc"] if isinstance(p, int))
        where = f"{prefix}.{loc}{idx}" if loc else prefix
        reason = err["msg"]
        # A PolicyError raised inside a model validator arrives wrapped.
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, PolicyError):
            where, reason = f"{prefix}.{ctx_error.field}", ctx_error.reason
        elif reason.startswith("Value error, "):
            reason = reason.removeprefix("Value error, ")
        raise PolicyError(where, reason) from None
