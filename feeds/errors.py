"""The exceptions of ``feeds/``, and what the daemon does with each.

::

    FeedError                 base class; never raised itself
    ├── FrameError            one frame (or file line) is unusable:
    │                         the source calls ``reject(source, reason, raw)``,
    │                         keeps any good ticks in ``partial`` and goes on
    └── FeedFatalError        reconnecting cannot help (HTTP 404 at the
                              handshake, a TLS certificate that does not
                              verify, an invalid URL): ``run`` raises it and
                              the daemon stops that source and says why

Everything transient (a dropped connection, a refused TCP connection, an HTTP
5xx or 429 at the handshake, a silent stream) is handled inside the source by
reconnecting with backoff and never reaches the daemon as an exception.

``FrameError.reason`` is one of :class:`RejectReason`: a short, fixed
vocabulary that is safe as a metrics label. Free text goes in ``detail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from feeds.tick import PriceTick


class RejectReason(StrEnum):
    """Why a frame was rejected; low-cardinality on purpose (a metrics label)."""

    NOT_JSON = "not_json"
    """The frame is not valid JSON (or a CSV row is not a row)."""
    BAD_SHAPE = "bad_shape"
    """Valid JSON, but not the structure the venue documents."""
    MISSING_FIELD = "missing_field"
    """A field the venue always sends is absent."""
    BAD_PRICE = "bad_price"
    """A price that is not a decimal string, or not finite and positive."""
    BAD_TIMESTAMP = "bad_timestamp"
    """A timestamp that is not a positive integer of epoch milliseconds."""
    UNKNOWN_EVENT = "unknown_event"
    """A well-formed message of a type or channel this parser does not handle."""
    VENUE_ERROR = "venue_error"
    """The venue answered with an error (e.g. a subscription it refused)."""
    OUT_OF_ORDER = "out_of_order"
    """A delta older than the state it would update (Bybit); not applied."""


class FeedError(Exception):
    """Base class of every exception raised by ``feeds/``."""


class FrameError(FeedError):
    """One frame could not be turned into ticks.

    ``partial`` holds the ticks that *could* be parsed from the same frame (an
    all-market array with one bad entry still carries hundreds of good ones):
    the source emits them, then rejects the frame.
    """

    def __init__(
        self,
        reason: RejectReason,
        detail: str = "",
        partial: Sequence[PriceTick] = (),
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.partial: tuple[PriceTick, ...] = tuple(partial)
        super().__init__(f"{reason}: {detail}" if detail else str(reason))


class FeedFatalError(FeedError):
    """Retrying with the same configuration will not work; the source stops."""
