"""What several commands share: the loaded configuration and how they reach the daemon.

Commands talk to the running daemon over IPC (ARCHITECTURE.md §1, §7). Two helpers do the
connecting, so a command only says what to ask and what to do without a daemon:

    def list_things(ctx: Context) -> int:
        things = with_daemon_or_store(
            ctx,
            lambda client: client.alerts_list(state="open"),   # async, gets a DaemonClient
            lambda store: read_alerts_from(store),              # sync, gets a ReadOnlyStore
        )
        render(...)

- `with_daemon_or_store(ctx, rpc_call, fallback)` — read-only commands. When no daemon answers
  on the socket (or it answers NOT_AVAILABLE because the part that knows is not running, e.g.
  the detection engine), it says so on stderr and runs `fallback` on the store opened
  read-only instead. Errors the daemon returns (RpcError) are raised as they are: the CLI
  prints them and exits 2 for bad input, 1 otherwise.
- `with_daemon(ctx, rpc_call)` — admin and other daemon-only commands: no fallback; without a
  daemon it raises DaemonUnavailable with a sentence that says how to start one.

`--socket` (daemon.socket) chooses the daemon; the mode's default path otherwise. `--db PATH`
names a store: the read-only commands over the data (`query`, `processes`, `alerts list`) then
read that file, even while a daemon runs (whose answers would come from its own store, perhaps
another file); `health` asks the daemon first (it is about the daemon).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from daemoneye import __version__
from daemoneye.config.schema import LoadedConfig
from daemoneye.errors import ConfigError
from daemoneye.ipc.client import DaemonClient, DaemonUnavailable, ErrorCode, RpcError
from daemoneye.ipc.ssh import SshRoute, route_for
from daemoneye.store.readonly import ReadOnlyStore, open_readonly
from daemoneye.units import format_bytes as format_bytes
from daemoneye.units import format_time as format_time

T = TypeVar("T")

RpcCall = Callable[[DaemonClient], Awaitable[T]]
StoreFallback = Callable[[ReadOnlyStore], T]


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a command needs from the command line besides its own arguments."""

    loaded: LoadedConfig
    output: str  # table | json | ndjson | csv
    store_given: bool = False  # --db on the command line: read that file, not the daemon
    remote: SshRoute | None = None  # --host: that host's daemon through ssh; no local fallback

    def open_store(self) -> ReadOnlyStore:
        """The store, read-only (for fallbacks and commands that read it directly). Never with
        --host: this host's store is not that host's."""
        if self.remote is not None:
            raise DaemonUnavailable(
                f"--host {self.remote.target}: this command reads the store, which is on that "
                f"host: run it there (ssh {self.remote.target.destination} "
                f"{self.remote.remote_program} ...)"
            )
        return open_readonly(self.loaded.paths.db)

    def client(self) -> DaemonClient:
        """An unconnected client for this command's daemon socket."""
        return DaemonClient(
            self.loaded.paths.socket,
            client_name=f"daemoneye-cli {__version__}",
            connect_timeout=15.0 if self.remote else 5.0,  # ssh's own login takes a while
            ssh=self.remote,
        )


class _NoDaemon:
    def __init__(self, reason: str) -> None:
        self.reason = reason


async def _ask(ctx: Context, rpc_call: RpcCall[T], *, may_fall_back: bool) -> T | _NoDaemon:
    client = ctx.client()
    try:
        await client.connect()
    except DaemonUnavailable as exc:
        return _NoDaemon(str(exc))
    try:
        return await rpc_call(client)
    except RpcError as exc:
        if may_fall_back and exc.code == ErrorCode.NOT_AVAILABLE:
            return _NoDaemon(f"the daemon answered: {exc.message}")
        raise
    finally:
        await client.close()


def with_daemon_or_store(
    ctx: Context,
    rpc_call: RpcCall[T],
    fallback: StoreFallback[T],
    *,
    named_store_first: bool = True,
) -> T:
    """`rpc_call` against the daemon, or `fallback` on the read-only store when no daemon
    can answer (said on stderr), or at once when the command line named the store (--db) and
    `named_store_first` (False for questions only the daemon answers in full: `health`).
    See the module docstring."""
    if ctx.store_given and named_store_first:
        with ctx.open_store() as store:
            return fallback(store)
    answer = asyncio.run(_ask(ctx, rpc_call, may_fall_back=True))
    if not isinstance(answer, _NoDaemon):
        return answer
    if ctx.remote is not None:  # this host's store is not that host's: never read it instead
        raise DaemonUnavailable(answer.reason)
    note(f"{answer.reason}; reading the store {ctx.loaded.paths.db} directly (read-only)")
    with ctx.open_store() as store:
        return fallback(store)


def with_daemon(ctx: Context, rpc_call: RpcCall[T]) -> T:
    """`rpc_call` against the daemon; DaemonUnavailable when none answers."""
    answer = asyncio.run(_ask(ctx, rpc_call, may_fall_back=False))
    if isinstance(answer, _NoDaemon):
        raise DaemonUnavailable(
            f"{answer.reason}; this command needs the running daemon "
            "(start it with `daemoneye daemon`, or pass --socket)"
        )
    return answer


def note(message: str) -> None:
    """A diagnostic for the person at the terminal: stderr, never stdout."""
    print(f"daemoneye: {message}", file=sys.stderr)


def remote_routes(
    loaded: LoadedConfig, hosts: list[str] | None, *, socket_given: bool
) -> dict[str, SshRoute]:
    """The ssh route of each `--host`, by the label the dashboard shows (the name as given,
    or the URL's host). With --socket, that is the remote socket the bridges connect to."""
    routes: dict[str, SshRoute] = {}
    for host in hosts or ():
        try:
            route = route_for(
                loaded.config.remote,
                host,
                remote_socket=str(loaded.paths.socket) if socket_given else None,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        label = route.target.host if host.startswith("ssh://") else host
        if label in routes:
            label = str(route.target)
        routes[label] = route
    return routes


def remote_route(
    loaded: LoadedConfig, hosts: list[str] | None, *, socket_given: bool
) -> SshRoute | None:
    """The one ssh route of a CLI command's `--host`, or None without it."""
    routes = remote_routes(loaded, hosts, socket_given=socket_given)
    if len(routes) > 1:
        raise ConfigError(
            "--host: a command talks to one host; several at once are for the dashboard "
            "(daemoneye --host a --host b)"
        )
    return next(iter(routes.values()), None)
