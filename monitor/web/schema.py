"""The documents the HTTP endpoint answers with, as pydantic models for ``/openapi.json``.

The handlers build their answers as plain dicts (the same ones ``liqmon
positions`` prints) and encode them with orjson; these models describe them in
the OpenAPI document, and ``tests/web/test_api_schema.py`` checks every answer
against that description. Decimals travel as strings; a field the daemon cannot
know yet (no mark, no liquidation price) is null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from monitor.core.margin import ContractKind, Side
from monitor.core.status import Status


class Document(BaseModel):
    """A JSON object with exactly the fields listed."""

    model_config = ConfigDict(extra="forbid")


class Error(Document):
    """Every error: what was wrong, in words for the caller."""

    error: str = Field(examples=["limit must be an integer from 1 to 1000, got '0'"])


class Health(Document):
    """``/healthz``: the process answers."""

    status: Literal["ok"]


class Ready(Document):
    """``/readyz`` when ready."""

    status: Literal["ready"]


class NotReady(Document):
    """``/readyz`` when not ready: each failing dependency with the reason."""

    status: Literal["not ready"]
    failing: dict[str, str] = Field(examples=[{"redis": "unreachable: connection refused"}])


class PositionRow(Document):
    """A position with its prices and, given a mark, its margin state."""

    id: str
    account: str
    symbol: str
    side: Side
    qty: str
    entry_price: str
    margin: str
    seq: int
    status: Status
    liquidation_price: str | None
    bankruptcy_price: str | None
    mark_price: str | None
    distance_pct: str | None = Field(description="How far the mark may move before liquidation")
    margin_ratio: str | None


class PositionsPage(Document):
    """``/api/positions``: the closest positions to liquidation first."""

    positions: list[PositionRow]
    count: int = Field(ge=0)
    limit: int = Field(ge=1)
    complete: bool = Field(
        description="False when a filtered walk gave up before proving the list exact"
    )


class Event(Document):
    """One published event or price-guard alert."""

    id: str = Field(description="The entry's id in the published stream")
    published_at: int = Field(description="Milliseconds since the epoch")
    event_id: str
    type: str | None
    symbol: str
    topic: str
    payload: Any = Field(description="The published message (null when it is not JSON)")


class EventsPage(Document):
    """``/api/events``: recent events, newest first."""

    events: list[Event]
    count: int = Field(ge=0)


class Feed(Document):
    """The price guards' view of a symbol's feed."""

    source: str | None
    age_s: float | None
    stale: bool
    guard_index: str | None
    index_sources: int
    deviation: str | None
    deviating: bool
    holding: bool


class SymbolState(Document):
    """A symbol's stored prices and feed state."""

    symbol: str
    contract: ContractKind
    mark: str | None
    mark_ts: int | None
    index: str | None
    index_ts: int | None
    feed: Feed


class Counts(Document):
    """Positions of a symbol by status (``other``: liquidated, closed or not liquidatable)."""

    total: int
    healthy: int
    margin_call: int
    other: int


class SymbolsPage(Document):
    """``/api/symbols``: every configured symbol, and its positions by status."""

    symbols: list[SymbolState]
    positions: dict[str, Counts]


class Liquidated(Document):
    """Open positions whose liquidation condition holds at the price."""

    count: int = Field(ge=0)
    notional: str = Field(description="Their notional at the price: quote (linear), coin (inverse)")
    margin: str = Field(description="Their isolated margin, in the settlement currency")


class MarginCalled(Document):
    """Open positions not liquidatable at the price whose margin ratio reaches margin_call_ratio."""

    count: int = Field(ge=0)
    notional: str = Field(description="Their notional at the price")


class Stress(Document):
    """One symbol if the mark went to ``price``: exact, by the symbol's venue model."""

    symbol: str
    mark: str | None = Field(description="The stored mark (null before the first)")
    price: str
    move: str | None = Field(description="The relative move from the mark asked for, if any")
    liquidated: Liquidated
    margin_call: MarginCalled
    shortfall: str = Field(
        description="Σ max(0, −(margin + PnL at the price)) over the liquidated: "
        "what closing them at the price costs beyond their margin"
    )


class StressPage(Document):
    """``/api/stress``: one document per symbol asked for."""

    stress: list[Stress]


class SideBucket(Document):
    """The positions of one side whose liquidation price lies in a bucket."""

    count: int = Field(ge=0)
    notional: str = Field(description="Σ notional, each at its own liquidation price")


class Bucket(Document):
    """``[low, high)`` of liquidation price."""

    low: str
    high: str
    long: SideBucket
    short: SideBucket
    long_cumulative: str = Field(
        description="Notional of every open long liquidating at or above low "
        "(what liquidates if the mark falls to low)"
    )
    short_cumulative: str = Field(
        description="Notional of every open short liquidating below high "
        "(what liquidates as the mark rises through the bucket)"
    )


class LiquidationMap(Document):
    """``/api/liquidation-map``: buckets of liquidation price, lowest first."""

    symbol: str
    mark: str | None
    low: str
    high: str
    step: str
    buckets: list[Bucket]
