"""The subscriber's side of at-least-once delivery: de-duplication, and an event in one line.

Delivery is at least once (an event whose PUBACK was lost is sent again), and
every transition has a deterministic ``event_id``; a subscriber that keeps the
ids it has seen gets each event exactly once. :class:`SeenEvents` is that
memory, bounded so a long-running subscriber does not grow without end.
"""

from __future__ import annotations

from collections import OrderedDict


class SeenEvents:
    """The last ``capacity`` event ids seen; :meth:`first_time` is the de-duplicating test."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def first_time(self, event_id: str) -> bool:
        """True the first time ``event_id`` is offered (within the capacity window)."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def format_event(event: dict[str, object]) -> str:
    """One readable line for an event."""
    return (
        f"{event.get('type', '?'):<20} {event.get('symbol')} {event.get('side')} "
        f"{event.get('position_id')} acct={event.get('account')} qty={event.get('qty')} "
        f"mark={event.get('mark_price')} liq={event.get('liquidation_price')} "
        f"ratio={event.get('margin_ratio')} id={event.get('event_id')}"
    )
