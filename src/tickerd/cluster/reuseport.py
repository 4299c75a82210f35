"""Listening sockets shared by worker processes: one SO_REUSEPORT group per port, and a
classic BPF program that pins each client IP to one socket of the group.

The supervisor binds ``n`` sockets to the same address (socket ``i`` is worker ``i``'s) and
attaches :func:`pin_program` with ``SO_ATTACH_REUSEPORT_CBPF``: the kernel runs it on every
new connection and hands the connection to the socket whose index the program returns. The
program hashes the source address (IPv4, or the XOR of IPv6's four words) multiplicatively
and takes it modulo ``n``, so one client IP always reaches the same worker and that worker's
local rate limiter sees all of its weight. A worker's socket stays open in the supervisor
while the worker is restarted: its clients wait in the backlog instead of being refused.

Instructions are those of linux/filter.h; offsets below ``SKF_NET_OFF`` address the
network header, since the kernel runs reuseport programs past the TCP header.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
SKF_NET_OFF = -0x100000 & 0xFFFFFFFF
_GOLDEN = 2654435761  # Knuth's multiplicative hash constant (2^32 / φ)

# opcode parts (linux/bpf_common.h)
_LD, _LDX, _ALU, _JMP, _RET, _MISC = 0x00, 0x01, 0x04, 0x05, 0x06, 0x07
_W, _B, _ABS = 0x00, 0x10, 0x20
_MUL, _RSH, _MOD, _XOR, _JEQ, _JA = 0x20, 0x70, 0x90, 0xA0, 0x10, 0x00
_K, _X, _A, _TAX = 0x00, 0x08, 0x10, 0x00

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def pin_program(n: int) -> list[Instruction]:
    """The classic BPF program choosing socket ``hash(source address) % n``."""
    if not 1 <= n <= 1024:
        raise ValueError("a reuseport group holds 1 to 1024 sockets")
    net = SKF_NET_OFF
    return [
        (_LD | _B | _ABS, 0, 0, net),  # 0: A = first byte of the IP header
        (_ALU | _RSH | _K, 0, 0, 4),  # 1: A = IP version
        (_JMP | _JEQ | _K, 2, 0, 6),  # 2: IPv6 → 5, else 3
        (_LD | _W | _ABS, 0, 0, net + 12),  # 3: A = IPv4 source address
        (_JMP | _JA, 0, 0, 7),  # 4: → 12
        (_LD | _W | _ABS, 0, 0, net + 8),  # 5: IPv6 source address, word 0
        (_MISC | _TAX, 0, 0, 0),  # 6: X = A
        (_LD | _W | _ABS, 0, 0, net + 12),  # 7: word 1
        (_ALU | _XOR | _X, 0, 0, 0),  # 8
        (_MISC | _TAX, 0, 0, 0),  # 9
        (_LD | _W | _ABS, 0, 0, net + 16),  # 10: word 2 (word 3 next)
        (_ALU | _XOR | _X, 0, 0, 0),  # 11
        (_ALU | _MUL | _K, 0, 0, _GOLDEN),  # 12: the hash
        (_ALU | _RSH | _K, 0, 0, 16),  # 13: its better-mixed high half
        (_ALU | _MOD | _K, 0, 0, n),  # 14
        (_RET | _A, 0, 0, 0),  # 15: the socket index
    ]


def pin_index(address: str, n: int) -> int:
    """The index :func:`pin_program` gives ``address`` (IPv4 only): what a test expects."""
    a = int(struct.unpack("!I", socket.inet_aton(address))[0])
    return (((a * _GOLDEN) & 0xFFFFFFFF) >> 16) % n


def attach_pin_program(sock: socket.socket, n: int) -> None:
    """Attach :func:`pin_program` to the reuseport group ``sock`` belongs to."""
    code = pin_program(n)
    filters = (ctypes.c_uint8 * (8 * len(code))).from_buffer_copy(
        b"".join(struct.pack("=HBBI", *i) for i in code)
    )
    fprog = struct.pack("@HP", len(code), ctypes.addressof(filters))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def bind_group(host: str, port: int, n: int, *, backlog: int = 4096) -> list[socket.socket]:
    """``n`` listening TCP sockets on ``host:port`` in one reuseport group, IPs pinned.

    Port 0 binds the first socket to a free port and the rest to the same one. On any
    failure every socket made so far is closed before the error propagates.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            s.listen(backlog)
            s.setblocking(False)
        if n > 1:
            attach_pin_program(socks[0], n)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def bind_one(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """One plain listening socket (the control plane: worker 0 alone serves it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s
