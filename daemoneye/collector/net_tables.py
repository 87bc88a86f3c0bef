"""Parsers of the kernel's socket tables: /proc/PID/net/{tcp,tcp6,udp,udp6,unix}.

Each file lists every socket of one network namespace (the namespace of PID) with its inode,
which is what /proc/PID/fd/N links to ("socket:[INODE]"). Lines are parsed into `RawSocket`s
that keep the kernel's hex text: a refresh compares those strings to see what changed and
decodes addresses (`decode`) only for sockets that are new or changed.

A unix socket's path is any bytes its binder chose, newlines included, and the kernel prints
it raw: a path can continue on the next line, and a crafted path can even contain a whole line
that looks like another socket. So a line that does not parse continues the previous path,
and an inode listed twice is dropped (one of its two lines is forged; neither is trusted).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

INET_FILES = ("tcp", "tcp6", "udp", "udp6")
TABLE_FILES = (*INET_FILES, "unix")

# include/net/tcp_states.h
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
    "0C": "NEW_SYN_RECV",
}
# udp reuses TCP_ESTABLISHED for a connect()ed socket and TCP_CLOSE for the others.
UDP_STATES = {"01": "CONNECTED", "07": "UNCONNECTED"}
# include/uapi/linux/net.h socket_state; __SO_ACCEPTCON in Flags marks a listening socket.
UNIX_STATES = {"00": "FREE", "01": "UNCONNECTED", "02": "CONNECTING", "03": "CONNECTED"}
UNIX_ACCEPTCON = 0x10000
# "Num: RefCount Protocol Flags Type St Inode[ Path]" (af_unix.c unix_seq_show; Inode is %5lu)
_UNIX_LINE = re.compile(
    r"[0-9a-fA-F]+: [0-9A-F]{8} [0-9A-F]{8} ([0-9A-F]{8}) [0-9A-F]{4} ([0-9A-F]{2}) +([0-9]+)"
    r"(?: (.*))?"
)
MAX_UNIX_PATH = 4096  # sun_path is 108 bytes; anything longer is a forged continuation


class RawSocket(NamedTuple):
    """One socket as its table line says, undecoded. `local`/`remote` are the kernel's hex
    "ADDR:PORT" (inet) or the path and None (unix); `state` is already a name."""

    protocol: str
    local: str | None
    remote: str | None
    state: str
    uid: int | None
    inode: int


def parse_inet(protocol: str, text: str) -> Iterator[RawSocket]:
    """The sockets of one /proc/net/{tcp,tcp6,udp,udp6} text. Time-wait entries (inode 0, no
    process holds them) and lines that do not parse are skipped."""
    states = UDP_STATES if protocol.startswith("udp") else TCP_STATES
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or not parts[0].endswith(":"):
            continue
        try:
            inode = int(parts[9])
            uid = int(parts[7])
        except ValueError:
            continue
        if inode == 0:
            continue
        state = states.get(parts[3], parts[3])
        yield RawSocket(protocol, parts[1], parts[2], state, uid, inode)


def parse_unix(text: str) -> Iterator[RawSocket]:
    """The sockets of one /proc/net/unix text (see the module docstring on hostile paths)."""
    parsed: list[RawSocket] = []
    seen: dict[int, int] = {}
    for line in text.split("\n")[1:]:
        entry = _unix_line(line)
        if entry is None:
            if parsed and parsed[-1].local is not None and line:
                last = parsed[-1]
                local = f"{last.local}\n{line}"[:MAX_UNIX_PATH]
                parsed[-1] = last._replace(local=local)
            elif parsed and parsed[-1].local is None and line:
                # A path that starts on its own line cannot happen: the line is forged.
                continue
            continue
        seen[entry.inode] = seen.get(entry.inode, 0) + 1
        parsed.append(entry)
    for entry in parsed:
        if seen[entry.inode] == 1:
            yield entry


def _unix_line(line: str) -> RawSocket | None:
    match = _UNIX_LINE.fullmatch(line)
    if match is None:
        return None
    flags, st, inode, path = match.groups()
    state = "LISTEN" if int(flags, 16) & UNIX_ACCEPTCON else UNIX_STATES.get(st, st)
    return RawSocket("unix", path or None, None, state, None, int(inode))


def parse_table(name: str, text: str) -> Iterable[RawSocket]:
    """Dispatch on the table's file name (one of TABLE_FILES)."""
    return parse_unix(text) if name == "unix" else parse_inet(name, text)


# -- decoding -----------------------------------------------------------------------------------


class Endpoint(NamedTuple):
    address: str | None
    port: int | None


def _word_bytes(hex_text: str) -> bytes:
    """The kernel prints each 32-bit word of an address in host byte order."""
    raw = bytes.fromhex(hex_text)
    if sys.byteorder == "big":
        return raw
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def decode_endpoint(hex_endpoint: str) -> Endpoint:
    """'0100007F:0050' → ('127.0.0.1', 80). An IPv4-mapped IPv6 address becomes its IPv4
    address; the unspecified address with port 0 (no peer) becomes (None, None)."""
    address_hex, _, port_hex = hex_endpoint.partition(":")
    try:
        port = int(port_hex, 16)
        packed = _word_bytes(address_hex)
        if len(packed) == 4:
            address = socket.inet_ntop(socket.AF_INET, packed)
        elif len(packed) == 16:
            v6 = ipaddress.IPv6Address(packed)
            mapped = v6.ipv4_mapped
            address = str(mapped) if mapped is not None else str(v6)
        else:
            return Endpoint(None, None)
    except ValueError:
        return Endpoint(None, None)
    if port == 0 and address in ("0.0.0.0", "::"):
        return Endpoint(None, None)
    return Endpoint(address, port)


def scope_of(address: str | None) -> str | None:
    """'loopback', 'link-local', 'multicast', 'private', 'public' (None without an address)."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return None
    if ip.is_private:
        return "private"
    return "public"
