"""A minimal blocking MQTT 3.1.1 publisher (QoS 0) for driving ticks.

The driver must be able to send ten thousand ticks a second with an exact
send timestamp and without an event loop competing with the monitor for the
two cores, so it writes PUBLISH packets straight to a socket: a few
microseconds per tick. Keep-alive is off; the broker never writes back after
CONNACK for QoS 0 publishes.
"""

from __future__ import annotations

import socket

# The packet encoding is the monitor's own (monitor.bus.protocol), shared on purpose.
from monitor.bus.protocol import _string, _varint, connect_packet


class Publisher:
    """One MQTT connection that publishes QoS 0 messages."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # keep-alive 0: off (the broker never writes back after CONNACK for QoS 0)
        self.sock.sendall(connect_packet(client_id, 0))
        connack = b""
        while len(connack) < 4:
            chunk = self.sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {connack!r}")
        self._topics: dict[str, bytes] = {}

    @staticmethod
    def packet(topic: str, payload: bytes) -> bytes:
        """The bytes of one QoS 0 PUBLISH."""
        body = _string(topic) + payload
        return b"\x30" + _varint(len(body)) + body

    def publish(self, topic: str, payload: bytes) -> None:
        """Send one QoS 0 message."""
        self.sock.sendall(self.packet(topic, payload))

    def send(self, packets: bytes) -> None:
        """Send pre-built packets (several PUBLISHes in one write)."""
        self.sock.sendall(packets)

    def close(self) -> None:
        """DISCONNECT and close."""
        try:
            self.sock.sendall(b"\xe0\x00")
        finally:
            self.sock.close()
