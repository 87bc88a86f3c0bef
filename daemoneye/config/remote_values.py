"""The value of `--host` and `[remote] hosts`: an ssh:// URL, parsed strictly — nothing in it
may reach ssh as an option."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A host name or address as ssh takes it; never anything that starts like an option.
_HOST = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, slots=True)
class SshTarget:
    """Where `--host ssh://[user@]host[:port]` points."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"ssh://{self.destination}{port}"


def parse_ssh_target(text: str) -> SshTarget:
    """`ssh://[user@]host[:port]`; ValueError names what is wrong."""
    if not text.startswith("ssh://"):
        raise ValueError(f"expected ssh://[user@]host[:port], got {text!r}")
    rest = text[len("ssh://") :].rstrip("/")
    user: str | None = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if not _USER.match(user):
            raise ValueError(f"{text!r}: {user!r} is not a user name")
    port: int | None = None
    host = rest
    if rest.startswith("["):  # [v6]:port
        close = rest.find("]")
        host, tail = rest[: close + 1], rest[close + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"{text!r}: expected :port after {host}")
            port = _port(text, tail[1:])
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = _port(text, port_text)
    if not host or not _HOST.match(host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    return SshTarget(host, user, port)


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535, not {port_text!r}")
    return int(port_text)
