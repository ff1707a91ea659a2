"""The live calls per business from the SQL ledger, and the limits to judge them by."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from streams.dialers.twilio.ledger import Ledger
from streams.errors import StreamsError
from streams.kafka import preflight
from streams.ops.control.reader import ControlError, current_controls
from streams.settings import Settings

#: Seconds to read `business.control` before giving up (and suggesting not to).
LIMITS_TIMEOUT = 5.0


class LedgerCheckError(StreamsError):
    """The ledger or the limits could not be read; the message says why."""


def business_limits(settings: Settings) -> dict[str, int]:
    """Per-business limits set in `business.control`."""
    try:
        preflight.connect(settings)
        controls = current_controls(settings, timeout=LIMITS_TIMEOUT)
    except (preflight.ConnectError, ControlError) as exc:
        raise LedgerCheckError(
            f"cannot read the per-business limits: {exc}; add --default-limit to judge"
            " every business by MAX_OUTBOUND_CALLS_PER_BUSINESS"
        ) from None
    return {
        business: control.limit
        for business, control in controls.items()
        if control.limit is not None
    }


def active_calls(database_url: str) -> list[tuple[str, int]]:
    """(business_id, live calls) rows of the verification query."""
    url = make_url(database_url)
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(str(url.database)).exists()
    ):
        raise LedgerCheckError(
            f"no ledger at {url.database} (DATABASE_URL); the dialer creates it"
        )
    ledger = Ledger(database_url)
    try:
        return ledger.active_calls()
    except SQLAlchemyError as exc:
        raise LedgerCheckError(
            f"cannot run the verification query: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        ledger.close()
