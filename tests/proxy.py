"""A TCP proxy for tests: forwards to a real server, and can black-hole what it carries.

:meth:`BlackHoleProxy.black_hole` makes every connection open now go silent
the way a frozen host or a fail-over that black-holes the old address does:
what the client writes is swallowed, nothing comes back, and the connection
is never closed. Connections opened afterwards are forwarded as usual (the
new address answers).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class BlackHoleProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._silenced: set[asyncio.StreamWriter] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the proxy."""
        return f"redis://127.0.0.1:{self.listen_port}/0"

    def black_hole(self) -> int:
        """Silence every connection open now; returns how many."""
        self._silenced |= self._writers
        return len(self._writers)

    async def __aenter__(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
            self._writers.add(upstream_writer)
            # A silenced connection silences both directions (its client side is the key).
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, upstream_writer, writer))
                group.create_task(self._pump(upstream_reader, writer, writer))
        except (OSError, ExceptionGroup):
            pass
        finally:
            for side in (writer, upstream_writer):
                if side is not None:
                    self._writers.discard(side)
                    self._silenced.discard(side)
                    side.close()
            self._tasks.discard(task)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        target: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        while data := await source.read(65536):
            if client in self._silenced:
                continue  # swallowed, as a frozen host's kernel would
            target.write(data)
            await target.drain()
        target.close()
