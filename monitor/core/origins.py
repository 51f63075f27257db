"""Which browsers may read the book: the ``Host`` and ``Origin`` checks of the HTTP endpoint.

Two ways a web page open in the operator's browser could otherwise read
positions, accounts and liquidation prices:

* **Cross-site websocket.** Browsers let any page open a websocket to any
  address and apply no same-origin rule to it; the server sees the page's
  ``Origin`` header and must refuse a foreign one itself.
* **DNS rebinding.** A page from ``attacker.example`` re-points its own name
  at 127.0.0.1; the browser then deems requests to this server same-origin,
  but they still carry ``Host: attacker.example``.

Rule 1 (Host). A request for the page, ``/api/*`` or ``/ws`` must name this
server: an IP address (rebinding needs a name), ``localhost`` or a
``*.localhost`` name, the bind host, or a name in ``[http] allowed_hosts``.
The port is not compared: port mappings and proxies change it.

Rule 2 (Origin). A request that carries an ``Origin`` (browsers send it on
every websocket and on cross-origin requests) must come from this server's
own origin (the same host and port as its ``Host``; a ``Host`` without a port
implies the Origin's default port) or from one in ``[http] allowed_origins``.
``Origin: null`` (sandboxed frames, files) is refused.

Health checks and ``/metrics`` are not checked: probes and scrapers reach the
service under whatever name their network gives it, and carry no positions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
LOCAL_NAMES = frozenset({"localhost"})
_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::"})


def normalize_host(value: str) -> str:
    """A configured host name or address, lower-cased; ValueError says what is wrong."""
    name = value.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if _is_address(name) or _NAME.match(name):
        return name
    raise ValueError(f"must be a host name or address without a port, got {value!r}")


def normalize_origin(value: str) -> str:
    """A configured web origin as browsers send it (``scheme://host[:port]``, lower-case,
    no default port, no trailing slash); ValueError says what is wrong."""
    parsed = _parse_origin(value.strip().lower().removesuffix("/"))
    if parsed is None:
        raise ValueError(
            f"must be an origin like 'https://ops.example' or 'http://10.0.0.5:3000', got {value!r}"
        )
    scheme, name, port = parsed
    shown = f"[{name}]" if ":" in name else name
    return f"{scheme}://{shown}" if port == DEFAULT_PORTS[scheme] else f"{scheme}://{shown}:{port}"


@dataclass(frozen=True, slots=True)
class Admission:
    """The Host and Origin rules for one endpoint (see the module's docstring)."""

    names: frozenset[str]
    """Host names (besides IP addresses and ``*.localhost``) this server answers to."""
    origins: frozenset[str]
    """Normalized origins allowed besides the request's own."""

    @classmethod
    def build(cls, bind_host: str, hosts: Iterable[str], origins: Iterable[str]) -> Admission:
        """Rules for a server bound to ``bind_host`` with the configured allow-lists."""
        names = set(LOCAL_NAMES) | {normalize_host(host) for host in hosts}
        with contextlib.suppress(ValueError):  # a bind host that is no name adds nothing
            bound = normalize_host(bind_host)
            if bound not in _WILDCARD_BINDS:
                names.add(bound)
        return cls(frozenset(names), frozenset(normalize_origin(o) for o in origins))

    def refusal(self, host: str | None, origin_header: str | None) -> str | None:
        """Why a request with these ``Host`` and ``Origin`` headers is refused, or None."""
        target = _parse_host(host or "")
        if target is None:
            shown = host or ""
            return (
                f"host {shown!r} is not a valid Host header; open liqmon by its address or a name "
                "listed in [http] allowed_hosts"
            )
        name, port = target
        if not (_is_address(name) or name in self.names or name.endswith(".localhost")):
            return (
                f"host {name!r} is not allowed (DNS rebinding protection): add it to "
                "[http] allowed_hosts in the config to open liqmon under that name"
            )
        if origin_header is None:
            return None
        parsed = _parse_origin(origin_header.strip().lower())
        if parsed is not None:
            scheme, origin_name, origin_port = parsed
            own_port = DEFAULT_PORTS[scheme] if port is None else port
            if (origin_name, origin_port) == (name, own_port):
                return None
            if normalize_origin(origin_header) in self.origins:
                return None
        return (
            f"origin {origin_header!r} is not allowed: only pages served by liqmon itself may "
            "read it; add the origin to [http] allowed_origins in the config to allow another"
        )

    def cross_origin(self, origin_header: str | None) -> bool:
        """True when ``origin_header`` is an allow-listed origin (answers may then be shared
        with it: ``Access-Control-Allow-Origin``)."""
        if origin_header is None or _parse_origin(origin_header.strip().lower()) is None:
            return False
        return normalize_origin(origin_header) in self.origins


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _parse_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header (name lower-cased, brackets and a final dot removed)."""
    if not value or any(c in value for c in "/?#@ \t"):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    if not (_is_address(name) or _NAME.match(name)):
        return None
    return name, port


def _parse_origin(value: str) -> tuple[str, str, int] | None:
    """``(scheme, name, port)`` of a lower-cased ``scheme://host[:port]``, or None."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    name = (parts.hostname or "").rstrip(".")
    if not (_is_address(name) or _NAME.match(name)):
        return None
    return parts.scheme, name, DEFAULT_PORTS[parts.scheme] if port is None else port
