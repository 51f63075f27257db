"""Every Redis key liqmon uses, built in one place.

Per-symbol keys carry the symbol as a hash tag (``{BTCUSDT}``) so that the
Lua scripts, which touch several keys of one symbol at once, also run on a
Redis Cluster. Layout, with the default prefix ``liqmon``:

=======================================  ===========================================
key                                      what
=======================================  ===========================================
``liqmon:{S}:positions``                 hash: position id → record (JSON array:
                                         account, side, qty, entry_price, margin,
                                         seq, status, transitions)
``liqmon:{S}:trig:long:down``            zset: longs by the price at or below which
                                         they must be evaluated (margin call or
                                         liquidation price)
``liqmon:{S}:trig:long:up``              zset: longs in margin call by their
                                         clearing price
``liqmon:{S}:trig:short:up``             zset: shorts by margin-call / liquidation price
``liqmon:{S}:trig:short:down``           zset: shorts in margin call by clearing price
``liqmon:{S}:price``                     hash: mark, mark_ts, index, index_ts
``liqmon:{S}:tombstones``                zset: closed and liquidated positions by when
                                         they became so (ms), forgotten after
                                         ``limits.tombstone_retention_s``
``liqmon:{S}:outbox``                    stream: events not yet acknowledged by the
                                         broker (fields event_id, topic, payload)
``liqmon:deadletter``                    stream: rejected input messages (source,
                                         reason, detail, reasons, payload cut to
                                         ``limits.dead_letter_payload_bytes``,
                                         payload_bytes, bytes, total), oldest
                                         dropped past
                                         ``limits.dead_letter_maxlen`` entries or
                                         ``limits.dead_letter_max_bytes``
``liqmon:events``                        stream: events and alerts the broker
                                         acknowledged (event_id, symbol, topic,
                                         payload), trimmed to about 10,000
``liqmon:epoch``                         string: Redis's epoch (JSON: id, generation,
                                         created_ms, state, lost), written at the
                                         first start; absent means Redis lost its
                                         data (:mod:`monitor.state.epoch`)
``liqmon:outbox-ready``                  pub/sub channel (Redis Cluster only, not a
                                         key): a symbol whose outbox was added to
=======================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.core.margin import Side

OUTBOX_GROUP = "publishers"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one key prefix."""

    prefix: str = "liqmon"

    def positions(self, symbol: str) -> str:
        """Hash of the symbol's position records."""
        return f"{self.prefix}:{{{symbol}}}:positions"

    def triggers(self, symbol: str, side: Side, direction: str) -> str:
        """Sorted set of trigger prices; ``direction`` is ``down`` or ``up``."""
        return f"{self.prefix}:{{{symbol}}}:trig:{side.value}:{direction}"

    def all_triggers(self, symbol: str) -> list[str]:
        """The four trigger sets in the order the scripts expect: long down/up, short down/up."""
        return [
            self.triggers(symbol, side, direction)
            for side in (Side.LONG, Side.SHORT)
            for direction in ("down", "up")
        ]

    def price(self, symbol: str) -> str:
        """Hash of the latest accepted mark and index prices."""
        return f"{self.prefix}:{{{symbol}}}:price"

    def tombstones(self, symbol: str) -> str:
        """Sorted set of the symbol's tombstones (closed or liquidated) by when they became so."""
        return f"{self.prefix}:{{{symbol}}}:tombstones"

    def outbox(self, symbol: str) -> str:
        """Stream of events waiting for the broker's acknowledgement."""
        return f"{self.prefix}:{{{symbol}}}:outbox"

    @property
    def dead_letter(self) -> str:
        """Stream of rejected input messages."""
        return f"{self.prefix}:deadletter"

    @property
    def outbox_ready(self) -> str:
        """Pub/sub channel on which commits name a symbol whose outbox they added to (cluster)."""
        return f"{self.prefix}:outbox-ready"

    @property
    def epoch(self) -> str:
        """String: the epoch of the data; its absence tells a loss (:mod:`monitor.state.epoch`)."""
        return f"{self.prefix}:epoch"

    @property
    def published(self) -> str:
        """Stream of recently published events and alerts (capped; for the API and dashboard)."""
        return f"{self.prefix}:events"
