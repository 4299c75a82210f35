"""Who the client is behind a load balancer: ``--trusted-proxy`` CIDRs, forwarding headers
and the PROXY protocol (sans-I/O: addresses and bytes in, an address out).

* ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) are read only when the TCP peer is a
  trusted proxy. The chain is the headers' addresses followed by the peer; walking it from
  the right, the first address that is not itself trusted is the client. A chain made only
  of trusted addresses gives its leftmost one; a malformed element ends the walk there (the
  last trusted hop is then the client), so junk never becomes a rate-limit key.
* The PROXY protocol (v1 text, v2 binary; haproxy's proxy-protocol.txt) is accepted only
  from trusted peers, as the first bytes of the connection. From anyone else the bytes are
  the request itself, as without the option.

https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
V2_MAX = 16 + 216  # header and the largest address block this reader accepts (TLVs bounded)
#: What a PROXY header can say: need more bytes, not a PROXY header, a bad one.
NEED_MORE = "more"
NOT_PROXY = "none"


class ProxyError(ValueError):
    """A PROXY header from a trusted peer that cannot be read: the connection is dropped."""


def parse_networks(spec: str) -> tuple[Network, ...]:
    """``CIDR[,CIDR…]`` as networks; raises ValueError naming the bad element."""
    nets: list[Network] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"--trusted-proxy: {part!r} is not an address or CIDR") from None
    if not nets:
        raise ValueError("--trusted-proxy: no address given")
    return tuple(nets)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port, Forwarded's quoted form
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for=`` elements of ``Forwarded`` header values, in order (quotes removed)."""
    found: list[str] = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, v = pair.strip().partition("=")
                if name.lower() == "for":
                    found.append(v.strip().strip('"'))
    return found


def x_forwarded_for(values: Iterable[str]) -> list[str]:
    """The addresses of ``X-Forwarded-For`` header values, in order."""
    return [a.strip() for value in values for a in value.split(",") if a.strip()]


class TrustedProxies:
    """The trusted networks and the rules that turn a peer and its headers into a client."""

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, ip: str) -> bool:
        """Whether ``ip`` (text) is inside a trusted network."""
        addr = _address(ip)
        return addr is not None and self._trusted(addr)

    def _trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == n.version and addr in n for n in self.networks)

    def client(self, peer_ip: str, xff: Sequence[str], forwarded: Sequence[str]) -> str:
        """The client IP of a request from ``peer_ip`` with these header values.

        ``Forwarded`` wins over ``X-Forwarded-For`` when both are present (it is the
        standard); an untrusted peer's headers are ignored.
        """
        if not self.trusts(peer_ip):
            return peer_ip
        chain = forwarded_for(forwarded) if forwarded else x_forwarded_for(xff)
        client = peer_ip
        for raw in reversed(chain):
            addr = _address(raw)
            if addr is None:
                break
            client = str(addr)
            if not self._trusted(addr):
                break
        return client


def parse_header(data: bytes) -> tuple[str, str | None, int]:
    """Read a PROXY header at the start of ``data``.

    Returns ``(NEED_MORE, None, 0)`` while a header may still be arriving,
    ``(NOT_PROXY, None, 0)`` when the bytes are not one, else ``("v1"|"v2", source, used)``
    with the source address (None for ``UNKNOWN``/``LOCAL``: the peer itself) and how many
    bytes the header took. Raises :class:`ProxyError` for a malformed header.
    """
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        if len(data) < 16:
            return NEED_MORE, None, 0
        return _v2(data)
    if b"PROXY "[: len(data)] == data[:6]:
        if len(data) < 6:
            return NEED_MORE, None, 0
        end = data.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(data) >= V1_MAX:
                raise ProxyError("PROXY v1 line longer than 107 bytes")
            return NEED_MORE, None, 0
        return _v1(data[:end], end + 2)
    return NOT_PROXY, None, 0


def _v1(line: bytes, used: int) -> tuple[str, str | None, int]:
    parts = line.decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return "v1", None, used
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed PROXY v1 line")
    addr = _address(parts[2]) if ":" not in parts[2] or parts[1] == "TCP6" else None
    if addr is None or (addr.version == 4) != (parts[1] == "TCP4"):
        raise ProxyError("PROXY v1: bad source address")
    for port in parts[4:6]:
        if not port.isdigit() or int(port) > 65535:
            raise ProxyError("PROXY v1: bad port")
    return "v1", str(addr), used


def _v2(data: bytes) -> tuple[str, str | None, int]:
    if data[:12] != V2_SIGNATURE:
        raise ProxyError("malformed PROXY v2 signature")
    ver_cmd, fam, length = struct.unpack("!BBH", data[12:16])
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF > 1:
        raise ProxyError("PROXY v2: unknown version or command")
    if 16 + length > V2_MAX:
        raise ProxyError("PROXY v2: header too long")
    if len(data) < 16 + length:
        return NEED_MORE, None, 0
    used = 16 + length
    body = data[16:used]
    if ver_cmd & 0xF == 0:  # LOCAL: the proxy's own connection (a health check)
        return "v2", None, used
    family = fam >> 4
    if family == 1 and len(body) >= 12:
        return "v2", str(ipaddress.IPv4Address(body[:4])), used
    if family == 2 and len(body) >= 36:
        addr = ipaddress.IPv6Address(body[:16])
        return "v2", str(addr.ipv4_mapped or addr), used
    if family == 0:
        return "v2", None, used
    raise ProxyError("PROXY v2: unsupported address family or short address block")
