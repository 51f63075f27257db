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
``liqmon:{S}:funding``                   hash: position id → the last funding time
                                         (epoch ms) it paid or received
                                         (symbols with ``apply_funding``)
``liqmon:{S}:clusters``                  hash: side → the liquidation-cluster alert's
                                         state (``raised:N`` or ``clear:N``, N its
                                         last episode: :mod:`monitor.core.clusters`)
``liqmon:{S}:changes``                   stream: the change log, one entry (field
                                         ``ids``, NUL-separated) per call of
                                         commit.lua or funding.lua that wrote
                                         records, about the last thousand kept
                                         (read by :mod:`monitor.state.books`)
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
``liqmon:{S}:lease``                     string: the id of the monitor evaluating
                                         the symbol, with a time-to-live
                                         (:mod:`monitor.state.leases`)
``liqmon:monitors``                      zset: live monitors by when their heartbeat
                                         expires
``liqmon:publishers:{S}:lease``          string, zset: the same for the publishers
``liqmon:publishers:monitors``           (``liqmon publish``), which share the
                                         outboxes by leases of their own
``liqmon:outbox-ready``                  pub/sub channel (Redis Cluster only, not a
                                         key): a symbol whose outbox was added to
``liqmon:alerts:{R}:delivered:KEY``      string with a TTL: ``liqmon alerts`` route R's
                                         sink accepted KEY (an event or alert id)
``liqmon:alerts:{R}:deadletter``         stream: what route R's sink refused, or what
                                         outlived the retention
``liqmon:alerts:{R}:fold``               hash: items folded in route R's current
                                         window; ``…:fold:sending``: the one being
                                         summarized (:mod:`monitor.alerts.ledger`)
=======================================  ===========================================

The four trigger sets are named by :class:`~monitor.core.triggers.TriggerSet`,
which also says which of a side's two is its worsening one.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.core.triggers import TriggerSet

OUTBOX_GROUP = "publishers"

PUBLISHERS = "publishers"
"""The lease group of ``liqmon publish`` processes (see :meth:`Keys.lease`)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one key prefix."""

    prefix: str = "liqmon"

    def positions(self, symbol: str) -> str:
        """Hash of the symbol's position records."""
        return f"{self.prefix}:{{{symbol}}}:positions"

    def triggers(self, symbol: str, trigger_set: TriggerSet) -> str:
        """Sorted set of the symbol's trigger prices in ``trigger_set``."""
        return f"{self.prefix}:{{{symbol}}}:trig:{trigger_set.name_part}"

    def all_triggers(self, symbol: str) -> list[str]:
        """The four trigger sets in :class:`TriggerSet` order (commit.lua's KEYS[2..5])."""
        return [self.triggers(symbol, trigger_set) for trigger_set in TriggerSet]

    def price(self, symbol: str) -> str:
        """Hash of the latest accepted mark and index prices."""
        return f"{self.prefix}:{{{symbol}}}:price"

    def tombstones(self, symbol: str) -> str:
        """Sorted set of the symbol's tombstones (closed or liquidated) by when they became so."""
        return f"{self.prefix}:{{{symbol}}}:tombstones"

    def funding(self, symbol: str) -> str:
        """Hash: position id → the last funding time it paid (a funding time pays once)."""
        return f"{self.prefix}:{{{symbol}}}:funding"

    def clusters(self, symbol: str) -> str:
        """Hash: side → the symbol's liquidation-cluster alert state."""
        return f"{self.prefix}:{{{symbol}}}:clusters"

    def changes(self, symbol: str) -> str:
        """Stream: the ids each write of the symbol's records wrote (the change log)."""
        return f"{self.prefix}:{{{symbol}}}:changes"

    def outbox(self, symbol: str) -> str:
        """Stream of events waiting for the broker's acknowledgement."""
        return f"{self.prefix}:{{{symbol}}}:outbox"

    def lease(self, symbol: str, group: str = "") -> str:
        """String: who holds the symbol's lease in ``group`` ("": the monitors; or
        :data:`PUBLISHERS`), hash-tagged like the symbol's other keys."""
        return f"{self._group(group)}:{{{symbol}}}:lease"

    def heartbeats(self, group: str = "") -> str:
        """Sorted set of the live members of ``group``, scored by when their heartbeat expires."""
        return f"{self._group(group)}:monitors"

    def _group(self, group: str) -> str:
        return f"{self.prefix}:{group}" if group else self.prefix

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

    def alert_delivered(self, route: str, key: str) -> str:
        """String with a TTL: ``route``'s sink accepted ``key`` (the route is the hash tag)."""
        return f"{self._alerts(route)}:delivered:{key}"

    def alert_dead_letter(self, route: str) -> str:
        """Stream: what ``route``'s sink refused or what outlived the retention."""
        return f"{self._alerts(route)}:deadletter"

    def alert_fold(self, route: str) -> str:
        """Hash: the items ``route`` folded in its current window."""
        return f"{self._alerts(route)}:fold"

    def alert_fold_sending(self, route: str) -> str:
        """Hash: ``route``'s fold being summarized (renamed from :meth:`alert_fold`)."""
        return f"{self._alerts(route)}:fold:sending"

    def _alerts(self, route: str) -> str:
        return f"{self.prefix}:alerts:{{{route}}}"

    @property
    def published(self) -> str:
        """Stream of recently published events and alerts (capped; for the API and dashboard)."""
        return f"{self.prefix}:events"
