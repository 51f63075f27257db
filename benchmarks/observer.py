"""Timestamp the moments the monitor stores a mark: Redis keyspace notifications.

The monitor's candidates script writes ``liqmon:{S}:price`` when it accepts a
mark tick and returns the crossed positions in the same call, so a keyspace
notification on that key marks "tick evaluated" for a tick that crosses
nothing. This runs as its own process (a blocking socket, no event loop) so
its timestamps do not wait behind the driver's work. It prints one line per
notification, ``<time.time_ns()> <symbol>``, and exits on SIGTERM.

    observer.py HOST PORT PATTERN
"""

from __future__ import annotations

import signal
import socket
import sys
import time

import hiredis

from monitor.state.channel import resp_command


def main() -> None:
    host, port, pattern = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock = socket.create_connection((host, port))
    sock.settimeout(0.1)
    sock.sendall(resp_command("PSUBSCRIBE", pattern))
    reader = hiredis.Reader()
    out = sys.stdout.buffer
    while not stopping:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        now = b"%d " % time.time_ns()
        if not chunk:
            break
        reader.feed(chunk)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, list) and reply and reply[0] == b"pmessage":
                # channel: __keyspace@0__:liqmon:{SYMBOL}:price
                channel = reply[2]
                symbol = channel[channel.index(b"{") + 1 : channel.index(b"}")]
                out.write(now + symbol + b"\n")
            elif isinstance(reply, list) and reply and reply[0] == b"psubscribe":
                out.write(b"0 READY\n")
        out.flush()
    out.flush()


if __name__ == "__main__":
    main()
