"""A minimal blocking MQTT 3.1.1 publisher (QoS 0) for driving ticks.

The driver must be able to send ten thousand ticks a second with an exact
send timestamp and without an event loop competing with the monitor for the
two cores, so it writes PUBLISH packets straight to a socket: a few
microseconds per tick. Keep-alive is off; the broker never writes back after
CONNACK for QoS 0 publishes.
"""

from __future__ import annotations

import socket


def _varint(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


class Publisher:
    """One MQTT connection that publishes QoS 0 messages."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # protocol name, level 4, flags: clean session; keep-alive 0 (off)
        body = _utf8("MQTT") + b"\x04\x02\x00\x00" + _utf8(client_id)
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
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
        body = _utf8(topic) + payload
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
