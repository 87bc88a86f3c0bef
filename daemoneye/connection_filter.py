"""The filter language of `daemoneye connections FILTER`, and its `port:`/`remote:` terms that
the process filter (filters.py) also accepts.

    port:443             the local or the remote port
    remote:10.0.0.8      the remote address; remote:10.0.0.0/8 a network; remote:public a scope
                         (loopback, private, link-local, multicast, public)
    proto:tcp            tcp matches tcp and tcp6, udp matches udp and udp6; tcp6, udp6, unix exact
    state:listen         the state, case-insensitive (LISTEN, ESTABLISHED, SYN_SENT …)
    pid:1234             the holder's pid
    dir:outbound         the direction: listen, inbound, outbound
    not:TERM, -TERM      negation

All terms must match. A mistake raises FilterError naming the term.
"""

from __future__ import annotations

import difflib
import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from daemoneye.errors import DaemonEyeError
from daemoneye.models import CONNECTION_PROTOCOLS, Connection

ConnectionPredicate = Callable[[Connection], bool]
FIELDS = ("port", "remote", "proto", "state", "pid", "dir")
# The terms a process filter takes: "holds a connection that …"
PROCESS_TERMS = ("port", "remote")
SCOPES = ("loopback", "private", "link-local", "multicast", "public")
DIRECTIONS = ("listen", "inbound", "outbound")


class ConnectionFilterError(DaemonEyeError):
    """A connections filter could not be parsed; the message names the term."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ConnectionFilter:
    text: str
    predicates: tuple[ConnectionPredicate, ...]

    def matches(self, conn: Connection) -> bool:
        return all(predicate(conn) for predicate in self.predicates)


def _port(term: str, value: str) -> ConnectionPredicate:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ConnectionFilterError(f"{term!r}: a port is a whole number from 0 to 65535")
    port = int(value)
    return lambda conn: conn.local_port == port or conn.remote_port == port


def _remote(term: str, value: str) -> ConnectionPredicate:
    wanted = value.lower()
    if wanted in SCOPES:
        return lambda conn: conn.remote_scope == wanted
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConnectionFilterError(
            f"{term!r}: expected an address, a network (10.0.0.0/8) or one of {', '.join(SCOPES)}"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen == 128:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # the store shows IPv4-mapped addresses as IPv4
            network = ipaddress.ip_network(mapped)

    def remote_in(conn: Connection) -> bool:
        if conn.remote_address is None or conn.protocol == "unix":
            return False
        try:
            return ipaddress.ip_address(conn.remote_address) in network
        except ValueError:
            return False

    return remote_in


def _proto(term: str, value: str) -> ConnectionPredicate:
    wanted = value.lower()
    if wanted in ("tcp", "udp"):
        return lambda conn: conn.protocol in (wanted, wanted + "6")
    if wanted not in CONNECTION_PROTOCOLS:
        raise ConnectionFilterError(
            f"{term!r}: protocols are {', '.join(CONNECTION_PROTOCOLS)}"
            + _close(wanted, CONNECTION_PROTOCOLS)
        )
    return lambda conn: conn.protocol == wanted


def _state(term: str, value: str) -> ConnectionPredicate:
    wanted = value.upper()
    if not wanted:
        raise ConnectionFilterError(f"{term!r}: expected a state after state:")
    return lambda conn: conn.state == wanted


def _pid(term: str, value: str) -> ConnectionPredicate:
    if not value.isdigit():
        raise ConnectionFilterError(f"{term!r}: pid must be a whole number")
    pid = int(value)
    return lambda conn: conn.pid == pid


def _dir(term: str, value: str) -> ConnectionPredicate:
    wanted = value.lower()
    if wanted not in DIRECTIONS:
        raise ConnectionFilterError(
            f"{term!r}: directions are {', '.join(DIRECTIONS)}{_close(wanted, DIRECTIONS)}"
        )
    return lambda conn: conn.direction == wanted


_PARSERS: dict[str, Callable[[str, str], ConnectionPredicate]] = {
    "port": _port,
    "remote": _remote,
    "proto": _proto,
    "state": _state,
    "pid": _pid,
    "dir": _dir,
}


def _close(word: str, known: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def negated(term: str) -> str | None:
    """The term a negation negates (`not:TERM` or `-TERM`), or None."""
    if term.startswith("not:") and len(term) > 4:
        return term[4:]
    if term.startswith("-") and len(term) > 1:
        return term[1:]
    return None


def connection_term(term: str, allowed: tuple[str, ...] = FIELDS) -> ConnectionPredicate:
    """The predicate of one `field:value` term (not negated) among the `allowed` fields."""
    field, colon, value = term.partition(":")
    if not colon or field not in allowed:
        raise ConnectionFilterError(
            f"{term!r}: expected FIELD:VALUE with a field among {', '.join(allowed)}"
            f"{_close(field, allowed)}"
        )
    return _PARSERS[field](term, value)


def _negate(predicate: ConnectionPredicate) -> ConnectionPredicate:
    return lambda conn: not predicate(conn)


def parse_connection_filter(text: str) -> ConnectionFilter:
    """Parse a connections filter; raises ConnectionFilterError on the first bad term."""
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise ConnectionFilterError(f"{text!r}: {exc}") from None
    predicates: list[ConnectionPredicate] = []
    for term in terms:
        inner = negated(term)
        predicate = connection_term(term if inner is None else inner)
        predicates.append(predicate if inner is None else _negate(predicate))
    return ConnectionFilter(text, tuple(predicates))
