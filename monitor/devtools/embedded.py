"""Start and stop private ``redis-server`` and ``mosquitto`` processes.

The tests and the ``liqmon demo`` command need a Redis and an MQTT broker that
behave exactly like production (Lua, AOF persistence, persistent MQTT sessions,
QoS 1 redelivery). In-process fakes (fakeredis, pure-Python brokers) differ in
precisely the places a liquidation monitor depends on, so this module runs the
real binaries as child processes instead.

Every server gets its own working directory and a free port on 127.0.0.1, so it
never collides with a Redis or Mosquitto already listening on 6379/1883, and
several instances can run side by side (one per test that kills or restarts
its server). The module is synchronous on purpose: it is used from pytest
fixtures and from CLI start-up code, before any event loop exists.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Self

from monitor.core.errors import Unavailable
from monitor.state.channel import resp_command

__all__ = [
    "EmbeddedServer",
    "EmbeddedServerError",
    "MosquittoServer",
    "RedisClusterServers",
    "RedisServer",
    "ServerNotFoundError",
    "ServerStartError",
    "free_port",
    "which_or_explain",
]

HOST = "127.0.0.1"

# Short, because start() retries anyway and must notice quickly when the child
# died and something else owns the port (a probe would then hang until timeout).
_PROBE_TIMEOUT = 0.25

# Debian installs mosquitto in /usr/sbin, which is not on a non-root PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

_INSTALL_HINT = {
    "redis-server": "redis-server",
    "mosquitto": "mosquitto",
}


class EmbeddedServerError(Unavailable):
    """Base class for every error raised by this module."""


class ServerNotFoundError(EmbeddedServerError):
    """The server binary is not installed."""


class ServerStartError(EmbeddedServerError):
    """The server process exited or did not answer in time."""


def which_or_explain(name: str) -> str:
    """Return the absolute path of the executable ``name``.

    Looks on ``PATH`` and then in the sbin directories, because Debian puts
    ``mosquitto`` in ``/usr/sbin``. Raises :class:`ServerNotFoundError` with
    installation advice when the binary is missing.
    """
    found = shutil.which(name)
    if found is None:
        extra = os.pathsep.join(_EXTRA_BIN_DIRS)
        found = shutil.which(name, path=extra)
    if found is None:
        package = _INSTALL_HINT.get(name, name)
        raise ServerNotFoundError(
            f"{name!r} was not found on PATH or in {', '.join(_EXTRA_BIN_DIRS)}. "
            f"liqmon's tests and `liqmon demo` run a real {name}: install it with "
            f"`make test` (which installs the dependencies) or "
            f"`sudo apt-get install redis-server mosquitto` (package {package!r})."
        )
    return found


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The OS picks the port (bind to port 0). Another process can still grab it
    before our server binds; :meth:`EmbeddedServer.start` retries with a new
    port when that happens on a first start.
    """
    [port] = free_ports(1, host)
    return port


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct TCP ports on ``host`` that were free a moment ago.

    Each socket stays bound until all are chosen: two calls of :func:`free_port`
    in a row may get the same port back from the OS.
    """
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "<not written>"
    except OSError as exc:
        return f"<unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class _Started:
    """``with`` starts (returning what :meth:`start` does) and stops."""

    def start(self) -> Self:
        """Start; return ``self``."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EmbeddedServer(_Started):
    """Shared life cycle of one server child process.

    Subclasses say how to build the command line and how to tell that the
    server answers. The port is chosen on the first :meth:`start` and then kept,
    so :meth:`restart` brings the same server back on the same address with the
    same data directory.
    """

    name: ClassVar[str] = "server"
    binary_name: ClassVar[str] = ""

    # Servers still running when the interpreter exits; killed by _reap_all so
    # an aborted test run or a crashed demo does not leave orphans behind.
    _live: ClassVar[set[EmbeddedServer]] = set()

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.host = HOST
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public API ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; assigned by the first :meth:`start` unless given."""
        if self._port is None:
            raise EmbeddedServerError(f"{self.name} has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Client URL of this server."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """PID of the running child process, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive (not whether it answers)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's own log file."""
        return self.workdir / f"{self.name}.log"

    @property
    def console_path(self) -> Path:
        """Captured stdout/stderr; errors before the log file is open land here."""
        return self.workdir / f"{self.name}.console.log"

    def start(self) -> Self:
        """Start the server and block until it answers; return ``self``.

        Raises :class:`ServerStartError` (with the end of the server's log) if
        the process exits or does not answer within ``start_timeout`` seconds.
        Calling it on a running server is a no-op.
        """
        if self.running:
            return self
        binary = self._binary or which_or_explain(self.binary_name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Only a port we picked ourselves may be swapped for another one: a
        # restart must come back on the address clients already know.
        picked = self._port is None
        attempts = 3 if picked else 1
        for attempt in range(1, attempts + 1):
            if picked:
                self._port = free_port(self.host)
            try:
                self._spawn_and_wait(binary)
            except ServerStartError:
                if attempt == attempts or not self._lost_port_race():
                    if picked:
                        self._port = None
                    raise
            else:
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop gracefully: SIGTERM, then SIGKILL after ``stop_timeout``.

        A graceful stop lets the server flush its data (AOF fsync, mosquitto's
        persistence file). Safe to call when the server is not running.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """Kill with SIGKILL, simulating a crash: nothing is flushed."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._forget()

    def restart(self) -> Self:
        """Stop (if running) and start again on the same port and data dir."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self._port} {state} dir={self.workdir}>"

    # -- subclass hooks -----------------------------------------------------

    def _command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        """Return True once the server answers a real request."""
        raise NotImplementedError

    # -- internals ----------------------------------------------------------

    def _spawn_and_wait(self, binary: str) -> None:
        cmd = self._command(binary)
        with self.console_path.open("ab") as console:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the demo's terminal must not reach the
                # servers before liqmon has drained and stopped them in order.
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (only prctl, before exec)
            )
        EmbeddedServer._live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._forget()
                raise ServerStartError(
                    f"{self.name} exited with code {code} during start-up "
                    f"(port {self._port}).\n{self._logs()}"
                )
            with contextlib.suppress(OSError):
                # Re-check the child after a good answer: if it died on a bind
                # error, whatever else owns the port may have answered instead.
                if self._probe() and self._proc.poll() is None:
                    return
            if time.monotonic() >= deadline:
                self.kill()
                raise ServerStartError(
                    f"{self.name} did not answer on {self.host}:{self._port} within "
                    f"{self.start_timeout:.1f}s.\n{self._logs()}"
                )
            time.sleep(0.02)

    def _lost_port_race(self) -> bool:
        text = _tail(self.log_path, 10) + _tail(self.console_path, 10)
        return "address already in use" in text.lower()

    def _logs(self) -> str:
        return (
            f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- tail of {self.console_path} ---\n{_tail(self.console_path)}"
        )

    def _forget(self) -> None:
        self._proc = None
        EmbeddedServer._live.discard(self)


class RedisServer(EmbeddedServer):
    """A private ``redis-server`` bound to 127.0.0.1 on a free port.

    RDB snapshots are off (``save ""``): durability comes only from the AOF
    when ``appendonly`` is true, which is what a test of persistence across
    :meth:`restart` or :meth:`kill` wants to control.
    """

    name: ClassVar[str] = "redis"
    binary_name: ClassVar[str] = "redis-server"

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        requirepass: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Configure (but do not start) a Redis server.

        ``appendfsync`` is ``"always"``, ``"everysec"`` or ``"no"``; use
        ``"always"`` when a test kills Redis and expects the last write to
        survive. ``extra_args`` are appended to the command line verbatim,
        e.g. ``["--maxmemory", "64mb"]``.
        """
        super().__init__(
            workdir,
            port=port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.requirepass = requirepass
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.requirepass}@" if self.requirepass else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _command(self, binary: str) -> list[str]:
        cmd = [
            binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--daemonize", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
        ]  # fmt: skip
        if self.requirepass:
            cmd += ["--requirepass", self.requirepass]
        return cmd + self.extra_args

    def _probe(self) -> bool:
        # A raw RESP exchange: no client library is needed to know that Redis
        # has finished loading its AOF and serves commands (-LOADING otherwise).
        request = b""
        expected = 1
        if self.requirepass:
            request += resp_command("AUTH", self.requirepass)
            expected = 2
        request += resp_command("PING")
        with socket.create_connection((self.host, self.port), timeout=_PROBE_TIMEOUT) as sock:
            sock.sendall(request)
            data = b""
            while data.count(b"\r\n") < expected:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
        return data.splitlines()[expected - 1] == b"+PONG"


_CLUSTER_NODE_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]


class RedisClusterServers(_Started):
    """A private Redis Cluster: ``primaries`` :class:`RedisServer` nodes, no replicas.

    Each node has its own directory (and ``nodes.conf``), a free port and a
    free cluster-bus port; :meth:`start` joins them with ``redis-cli --cluster
    create`` and returns once every node reports ``cluster_state:ok``.
    """

    def __init__(self, workdir: Path, *, primaries: int = 3, start_timeout: float = 20.0) -> None:
        """Configure (but do not start) the nodes."""
        self.start_timeout = start_timeout
        # Each node its own free cluster-bus port: the default, port + 10000,
        # may be taken or beyond 65535 for a port the OS picked.
        self.nodes = [
            RedisServer(
                Path(workdir) / f"node-{n}",
                extra_args=[*_CLUSTER_NODE_ARGS, "--cluster-port", str(free_port())],
            )
            for n in range(primaries)
        ]

    @property
    def url(self) -> str:
        """The URL of one node (a cluster client finds the others)."""
        return self.nodes[0].url

    def start(self) -> Self:
        """Start every node, form the cluster and wait until it serves every slot."""
        for node in self.nodes:
            node.start()
        cli = which_or_explain("redis-cli")
        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=self.start_timeout,
        )
        deadline = time.monotonic() + self.start_timeout
        for node in self.nodes:
            while (
                b"cluster_state:ok"
                not in subprocess.run(
                    [cli, "-h", node.host, "-p", str(node.port), "CLUSTER", "INFO"],
                    check=True,
                    capture_output=True,
                    timeout=self.start_timeout,
                ).stdout
            ):
                if time.monotonic() >= deadline:
                    raise ServerStartError(f"Redis Cluster not ok within {self.start_timeout}s")
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


class MosquittoServer(EmbeddedServer):
    """A private ``mosquitto`` broker with one plain listener on 127.0.0.1.

    Persistence is on, so persistent sessions (clean_session=False) and their
    queued QoS 1 messages survive a graceful :meth:`restart`. A hard
    :meth:`kill` loses whatever was not yet autosaved, like a real crash.
    """

    name: ClassVar[str] = "mosquitto"
    binary_name: ClassVar[str] = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        allow_anonymous: bool = True,
        persistence: bool = True,
        max_queued_messages: int = 1_000_000,
        max_inflight_messages: int = 20,
        extra_config: Sequence[str] = (),
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        """Configure (but do not start) a Mosquitto broker.

        ``max_queued_messages`` is per client; mosquitto's default of 1000
        silently drops QoS 1 messages for an offline persistent session during
        a liquidation burst, hence the large default. ``extra_config`` lines
        are appended to the generated config (``password_file``, ``acl_file``,
        extra ``listener`` blocks for TLS, ``autosave_interval`` ...).
        """
        super().__init__(
            workdir,
            port=port,
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self.allow_anonymous = allow_anonymous
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = list(extra_config)

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        """The generated ``mosquitto.conf``, rewritten on every start."""
        return self.workdir / "mosquitto.conf"

    def config_text(self) -> str:
        """Return the config file contents for the current settings."""
        lines = [
            "# Generated by monitor.devtools.embedded: a private broker for tests/demo.",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            # Trailing slash: mosquitto concatenates location and file name.
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            # Without it, small QoS 1 messages wait on Nagle's algorithm: a
            # tick-to-event median of ~65 ms instead of ~2 ms.
            "set_tcp_nodelay true",
            f"max_inflight_messages {self.max_inflight_messages}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto switches to user `mosquitto`, which cannot write
            # into our root-owned temp dirs: persistence would fail silently.
            lines.append("user root")
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def _command(self, binary: str) -> list[str]:
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        return [binary, "-c", str(self.config_path)]

    def _probe(self) -> bool:
        # A full MQTT 3.1.1 CONNECT/CONNACK round trip proves the broker
        # processes packets, not only that the port accepts connections. Any
        # CONNACK counts, so brokers with allow_anonymous false are ready too.
        client_id = f"liqmon-probe-{secrets.token_hex(4)}".encode()
        variable = b"\x00\x04MQTT" + b"\x04" + b"\x02" + b"\x00\x00"
        payload = len(client_id).to_bytes(2, "big") + client_id
        body = variable + payload
        connect = b"\x10" + bytes([len(body)]) + body
        with socket.create_connection((self.host, self.port), timeout=_PROBE_TIMEOUT) as sock:
            sock.sendall(connect)
            data = b""
            while len(data) < 4:
                chunk = sock.recv(4 - len(data))
                if not chunk:
                    return False
                data += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT, so no "closed" error is logged
        return data[0] == 0x20


@atexit.register
def _reap_all() -> None:
    for server in list(EmbeddedServer._live):
        with contextlib.suppress(Exception):
            server.kill()


def _die_with_parent() -> None:
    """In the child before exec: be killed if liqmon dies (Linux), so no server is orphaned.

    Runs between fork and exec; it only calls prctl(PR_SET_PDEATHSIG, SIGKILL).
    Elsewhere than Linux it does nothing and the atexit hook is the only guard.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
