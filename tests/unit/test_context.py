"""What a process runs in (collector/context.py): the parsers over hostile /proc text, and the
reader over fake /proc trees and real processes (sockets on stdio, foreign namespaces, a huge
environment, 100,000 fds)."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemoneye.collector import context as context_module
from daemoneye.collector.context import (
    ENVIRON_MAX_BYTES,
    NO_CONTEXT,
    Context,
    ContextReader,
    allowed_environment,
    classify_cgroup,
    foreign_namespaces,
    parse_inet_table,
    parse_loginuid,
    parse_unix_table,
    pick_cgroup_path,
    ssh_client,
    stdio_kind,
    tty_name,
)
from daemoneye.collector.details import read_instance
from daemoneye.collector.users import UserNames

ROOT = os.geteuid() == 0
DOCKER_ID = "3f2a9c1b7d20" + "a" * 52
STAT = b"4242 (a) b) S 1 4242 4242 34816 4242 4194560 0 0 0 0 5 3 0 0 20 0 1 0 500 0 0"


# -- cgroup -------------------------------------------------------------------------------------


def test_the_unified_line_is_the_path_unless_a_hybrid_host_says_more_in_v1() -> None:
    assert pick_cgroup_path(b"0::/system.slice/nginx.service\n") == "/system.slice/nginx.service"
    hybrid = b"9:name=systemd:/system.slice/cron.service\n4:memory:/x\n0::/\n"
    assert pick_cgroup_path(hybrid) == "/system.slice/cron.service"
    assert pick_cgroup_path(b"4:memory:/docker/abc\n1:cpu:/\n") == "/docker/abc"
    assert pick_cgroup_path(b"0::/a:b:c\n") == "/a:b:c", "only two colons separate fields"
    assert pick_cgroup_path(b"0::/\n") == "/"
    assert pick_cgroup_path(b"garbage") is None


@pytest.mark.parametrize(
    ("path", "runtime", "container_id", "unit"),
    [
        (
            f"/system.slice/docker-{DOCKER_ID}.scope",
            "docker",
            DOCKER_ID,
            f"docker-{DOCKER_ID}.scope",
        ),
        (f"/docker/{DOCKER_ID}", "docker", DOCKER_ID, None),
        (
            f"/machine.slice/libpod-{DOCKER_ID}.scope/container",
            "podman",
            DOCKER_ID,
            f"libpod-{DOCKER_ID}.scope",
        ),
        (
            f"/machine.slice/libpod-conmon-{DOCKER_ID}.scope",
            None,
            None,
            f"libpod-conmon-{DOCKER_ID}.scope",
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/"
            f"cri-containerd-{DOCKER_ID}.scope",
            "containerd",
            DOCKER_ID,
            f"cri-containerd-{DOCKER_ID}.scope",
        ),
        (f"/kubepods/besteffort/pod1234-5678/{DOCKER_ID}", "kubernetes", DOCKER_ID, None),
        (
            f"/kubepods.slice/x/crio-{DOCKER_ID}.scope",
            "cri-o",
            DOCKER_ID,
            f"crio-{DOCKER_ID}.scope",
        ),
        ("/lxc/web1", "lxc", "web1", None),
        ("/lxc.payload.web1/system.slice/sshd.service", "lxc", "web1", "sshd.service"),
        ("/lxc.monitor.web1", None, None, None),
        ("/system.slice/nginx.service", None, None, "nginx.service"),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            None,
            None,
            "foo.service",
        ),
        ("/user.slice/user-1000.slice/session-3.scope", None, None, "session-3.scope"),
        ("/", None, None, None),
        (None, None, None, None),
    ],
)
def test_a_cgroup_path_names_its_container_and_unit(
    path: str | None, runtime: str | None, container_id: str | None, unit: str | None
) -> None:
    found = classify_cgroup(path)
    assert (found.path, found.runtime, found.container_id, found.unit) == (
        path,
        runtime,
        container_id,
        unit,
    )


def test_a_hostile_cgroup_name_is_kept_literally() -> None:
    """A delegated subtree lets a user name cgroups: escapes and newlines stay text (the views
    escape them); a name that only looks like a runtime's pattern is not a container."""
    path = "/user.slice/x\x1b[2J\nevil.service/lxc.payload.\x1b]0;t\x07"
    raw = f"0::{path}\n".encode() + b"\xff"
    picked = pick_cgroup_path(raw)
    assert picked is not None and "\x1b[2J" in picked
    found = classify_cgroup(path)
    assert found.container_id == "\x1b]0;t\x07" and found.runtime == "lxc"
    assert classify_cgroup("/user.slice/docker-notanid.scope").runtime is None


# -- namespaces, session, tty, loginuid ---------------------------------------------------------


def test_foreign_namespaces_name_the_ones_that_differ_from_init() -> None:
    init = {"pid": 1, "mnt": 2, "net": 3, "user": 4}
    assert foreign_namespaces({"pid": 9, "mnt": 2, "net": 8, "user": 4}, init) == "pid net"
    assert foreign_namespaces(dict(init), init) == ""
    assert foreign_namespaces(dict(init), {}) is None, "init's unreadable: unknown, not ''"
    unreadable = dict.fromkeys(init, None)
    assert foreign_namespaces(unreadable, init) is None


@pytest.mark.parametrize(
    ("tty_nr", "name"),
    [
        (0, None),
        (34816, "pts/0"),  # 136:0
        (34819, "pts/3"),
        ((137 << 8) | 2, "pts/258"),
        ((4 << 8) | 1, "tty1"),
        ((4 << 8) | 64, "ttyS0"),
        ((5 << 8) | 1, "console"),
        ((136 << 8) | (1 << 20), "pts/256"),  # minor 256: its high bits sit above the major
        ((188 << 8) | 0, "188:0"),
    ],
)
def test_the_controlling_tty_is_named_from_stat(tty_nr: int, name: str | None) -> None:
    assert tty_name(tty_nr) == name


def test_loginuid_unset_is_none() -> None:
    assert parse_loginuid(b"1000") == 1000
    assert parse_loginuid(b"4294967295") is None
    assert parse_loginuid(b"junk") is None


# -- environment ----------------------------------------------------------------------------------


def test_only_allow_listed_variables_are_taken() -> None:
    raw = b"PATH=/bin\0SECRET=hunter2\0FOO=x\0LD_PRELOAD_X=no\0LD_PRELOAD=/tmp/a.so\0HISTFILE=\0"
    found = allowed_environment(raw, ("LD_PRELOAD", "HISTFILE", "SUDO_USER"))
    assert found == {"LD_PRELOAD": "/tmp/a.so", "HISTFILE": ""}
    assert "hunter2" not in json.dumps(found)


def test_a_value_that_spells_an_assignment_is_not_a_variable() -> None:
    raw = b"FOO=x\x00BAR=y LD_PRELOAD=/tmp/fake.so\0"
    assert allowed_environment(raw, ("LD_PRELOAD",)) == {}


def test_a_name_set_twice_keeps_both_values() -> None:
    raw = b"LD_PRELOAD=/usr/lib/ok.so\0X=1\0LD_PRELOAD=/dev/shm/.x.so"
    assert allowed_environment(raw, ("LD_PRELOAD",)) == {
        "LD_PRELOAD": "/usr/lib/ok.so\n/dev/shm/.x.so"
    }


def test_a_128_kib_variable_is_kept_whole_and_undecodable_bytes_stay_visible() -> None:
    """A path at the end of a long value must not be cut off (it is what a rule looks for)."""
    value = b" " * (128 * 1024 - 20) + b"/tmp/.hidden/x.so\xff"
    found = allowed_environment(b"A=1\0LD_PRELOAD=" + value + b"\0", ("LD_PRELOAD",))
    assert found["LD_PRELOAD"].endswith("/tmp/.hidden/x.so\\xff")
    assert len(found["LD_PRELOAD"]) == len(value) + 3


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("10.0.0.9 51234 10.0.0.1 22", "10.0.0.9 51234"),
        ("2001:db8::1 40000 2001:db8::2 22", "2001:db8::1 40000"),
        ("::ffff:10.1.2.3 40000 ::ffff:10.0.0.1 22", "::ffff:10.1.2.3 40000"),
        ("10.0.0.9 51234", None),
        ("evil\x1b[2J 1 2 3", None),
        ("10.0.0.9 99999 10.0.0.1 22", None),
        (None, None),
    ],
)
def test_ssh_client_only_from_a_well_formed_ssh_connection(
    value: str | None, client: str | None
) -> None:
    assert ssh_client(value) == client


# -- sockets and stdio -------------------------------------------------------------------------

_TCP = b"""  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  \
timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0
   1: 0500000A:9A42 0900000A:115C 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0
   2: garbage line
"""
_TCP6 = (
    b"  sl  local_address                         remote_address                        "
    b"st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    b"   0: 0000000000000000FFFF00000100007F:CB4F 0000000000000000FFFF00000900000A:115C 01 "
    b"00000000:00000000 03:00000FF0 00000000     0        0 333 3 0\n"
    b"   1: B80D0120000000000000000001000000:0016 B80D0120000000000000000002000000:9C40 01 "
    b"00000000:00000000 03:00000FF0 00000000     0        0 444 3 0\n"
)


@pytest.mark.skipif(sys.byteorder != "little", reason="the samples are from a little-endian host")
def test_inet_tables_give_addresses_ports_and_states() -> None:
    assert parse_inet_table(_TCP, "tcp") == {
        111: "tcp 127.0.0.1:8080 listen",
        222: "tcp 10.0.0.5:39490->10.0.0.9:4444 established",
    }
    assert parse_inet_table(_TCP6, "tcp") == {
        333: "tcp [::ffff:127.0.0.1]:52047->[::ffff:10.0.0.9]:4444 established",
        444: "tcp [2001:db8::1]:22->[2001:db8::2]:40000 established",
    }
    udp = _TCP.replace(b" 0A ", b" 07 ").replace(b"0900000A:115C", b"00000000:0000")
    assert parse_inet_table(udp, "udp")[222] == "udp 10.0.0.5:39490"


def test_a_unix_path_is_kept_literally_and_a_forged_line_voids_it() -> None:
    header = b"Num       RefCount Protocol Flags    Type St Inode Path\n"
    line = b"0000000000000000: 00000002 00000000 00010000 0001 01 %5d %s\n"
    table = header + line % (77, b"/run/my sock\x1b[2J") + line % (78, b"") + line % (5, b"@abs")
    parsed = parse_unix_table(table)
    assert parsed[77] == "unix stream /run/my sock\x1b[2J"
    assert parsed[78] == "unix stream"
    # a path holding a newline and a whole fake line claiming inode 77
    forged = (
        header
        + line % (9, b"/x\n" + line.rstrip(b"\n") % (77, b"/fake"))
        + line
        % (
            77,
            b"/run/real",
        )
    )
    assert parse_unix_table(forged)[77].startswith("unix (path not trusted")


@pytest.mark.parametrize(
    ("target", "described"),
    [
        ("/dev/pts/3", "tty:/dev/pts/3"),
        ("/dev/tty1", "tty:/dev/tty1"),
        ("/dev/null", "file:/dev/null"),
        ("/var/log/x (deleted)", "file:/var/log/x (deleted)"),
        ("pipe:[12]", "pipe:[12]"),
        ("anon_inode:[eventfd]", "other:anon_inode:[eventfd]"),
    ],
)
def test_stdio_kinds(target: str, described: str) -> None:
    assert stdio_kind(target) == described


# -- the reader over a fake /proc --------------------------------------------------------------


def fake_process(root: Path, pid: int, *, fds: dict[int, str], environ: bytes = b"") -> Path:
    proc = root / str(pid)
    (proc / "ns").mkdir(parents=True)
    (proc / "fd").mkdir()
    (proc / "net").mkdir()
    (proc / "stat").write_bytes(STAT)
    (proc / "cgroup").write_bytes(f"0::/system.slice/docker-{DOCKER_ID}.scope\n".encode())
    (proc / "loginuid").write_bytes(b"1000")
    (proc / "environ").write_bytes(environ)
    for name, inode in (("pid", 10), ("mnt", 11), ("net", 12), ("user", 13)):
        (proc / "ns" / name).symlink_to(
            f"{name}:[{inode + (0 if pid == 1 else 100 * (name == 'pid'))}]"
        )
    for fd, target in fds.items():
        (proc / "fd" / str(fd)).symlink_to(target)
    for table in ("tcp", "tcp6", "udp", "udp6", "unix"):
        (proc / "net" / table).write_bytes(b"header\n")
    return proc


def read_fake(reader: ContextReader, proc: Path) -> Context:
    fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return reader.read(fd, STAT, 500)
    finally:
        os.close(fd)


def test_the_reader_over_a_fake_proc(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, fds={})
    proc = fake_process(
        tmp_path,
        4242,
        fds={0: "socket:[222]", 1: "pipe:[5]", 2: "/dev/pts/3"},
        environ=b"SSH_CONNECTION=10.0.0.9 51234 10.0.0.1 22\0SECRET=x\0",
    )
    (proc / "net" / "tcp").write_bytes(_TCP)
    found = read_fake(ContextReader(os.fsencode(tmp_path)), proc)
    assert (found.container_runtime, found.container_id) == ("docker", DOCKER_ID)
    assert (found.pid_ns, found.mnt_ns, found.ns_foreign) == (110, 11, "pid")
    assert (found.session_id, found.tty, found.loginuid) == (4242, "pts/0", 1000)
    assert (found.ssh_client, found.ssh_source) == ("10.0.0.9 51234", "process")
    if sys.byteorder == "little":
        assert found.stdin == "socket:tcp 10.0.0.5:39490->10.0.0.9:4444 established"
    assert (found.stdout, found.stderr) == ("pipe:[5]", "tty:/dev/pts/3")
    assert json.loads(found.environment or "") == {"SSH_CONNECTION": "10.0.0.9 51234 10.0.0.1 22"}


def test_a_socket_that_vanished_or_is_unknown_stays_an_inode_and_a_closed_fd_says_so(
    tmp_path: Path,
) -> None:
    proc = fake_process(tmp_path, 4242, fds={0: "socket:[999]", 2: "/dev/null"})
    found = read_fake(ContextReader(os.fsencode(tmp_path)), proc)
    assert (found.stdin, found.stdout, found.stderr) == ("socket:[999]", "closed", "file:/dev/null")
    assert found.ns_foreign is None, "no PID 1 in this root: unknown"


def test_socket_tables_are_read_again_for_a_socket_made_after_they_were_cached(
    tmp_path: Path,
) -> None:
    proc = fake_process(tmp_path, 4242, fds={0: "socket:[222]"})
    reader = ContextReader(os.fsencode(tmp_path))
    reader.new_scan()
    assert read_fake(reader, proc).stdin == "socket:[222]"
    (proc / "net" / "tcp").write_bytes(_TCP)
    # within one scan a table is read at most twice, whatever the processes hold
    assert read_fake(reader, proc).stdin == "socket:[222]"
    reader.new_scan()
    assert (read_fake(reader, proc).stdin or "").startswith("socket:tcp")


def test_the_session_leaders_ssh_client_is_used_and_says_so(tmp_path: Path) -> None:
    leader = fake_process(
        tmp_path, 4242, fds={}, environ=b"SSH_CONNECTION=10.0.0.7 5000 10.0.0.1 22"
    )
    member = fake_process(tmp_path, 4300, fds={}, environ=b"PATH=/bin")
    found = read_fake(ContextReader(os.fsencode(tmp_path)), member)
    assert (found.ssh_client, found.ssh_source) == ("10.0.0.7 5000", "session leader")
    # a leader pid reused by a younger process is not this session's leader
    (leader / "stat").write_bytes(STAT.replace(b" 500 ", b" 900 "))
    found = read_fake(ContextReader(os.fsencode(tmp_path)), member)
    assert found.ssh_client is None
    # and without SSH_CONNECTION on the allow-list, no SSH client is looked for
    reader = ContextReader(os.fsencode(tmp_path), ("LD_PRELOAD",))
    (leader / "stat").write_bytes(STAT)
    assert read_fake(reader, member).ssh_client is None


def test_an_empty_allow_list_reads_no_environment(tmp_path: Path) -> None:
    proc = fake_process(tmp_path, 4242, fds={}, environ=b"LD_PRELOAD=/tmp/x.so")
    (proc / "environ").chmod(0)
    found = read_fake(ContextReader(os.fsencode(tmp_path), ()), proc)
    assert found.environment == "{}"


def test_the_environ_read_stops_at_its_bound(tmp_path: Path) -> None:
    """A 3 MiB environment is read to 2 MiB: a variable past the bound is not seen (the
    kernel's default exec limit keeps argv and environment under it)."""
    filler = b"F=" + b"x" * (ENVIRON_MAX_BYTES + 1024) + b"\0"
    proc = fake_process(
        tmp_path,
        4242,
        fds={},
        environ=b"HISTFILE=/dev/null\0" + filler + b"LD_PRELOAD=/tmp/late.so\0",
    )
    found = json.loads(read_fake(ContextReader(os.fsencode(tmp_path)), proc).environment or "")
    assert found == {"HISTFILE": "/dev/null"}


# -- the reader over real processes ----------------------------------------------------------


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    spawned: list[subprocess.Popen[bytes]] = []
    yield spawned
    for child in spawned:
        child.kill()
        child.wait()


def context_of(pid: int, reader: ContextReader | None = None) -> Context:
    read = read_instance(b"/proc", str(pid).encode(), UserNames(), reader or ContextReader())
    assert read is not None
    details = read.details
    return Context(**{name: getattr(details, name) for name in Context.__dataclass_fields__})


def wait_for_exec(child: subprocess.Popen[bytes], comm: str) -> None:
    """Until the exec is complete: the kernel renames the task before the new image's
    environment is in place (environ reads empty in between)."""
    for _ in range(20000):
        proc = Path(f"/proc/{child.pid}")
        if (proc / "comm").read_bytes().strip() == comm.encode() and (
            proc / "environ"
        ).read_bytes():
            return
        os.sched_yield()
    raise AssertionError(f"{child.pid} never became {comm}")


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_real_shell_with_a_tcp_socket_on_stdin(
    family: socket.AddressFamily, children: list[subprocess.Popen[bytes]]
) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family) as server:
        server.bind((host, 0))
        server.listen()
        with socket.create_connection((host, server.getsockname()[1])) as client:
            accepted, _ = server.accept()
            with accepted:
                server_port = server.getsockname()[1]
                child = subprocess.Popen(
                    ["sleep", "30"],
                    stdin=accepted.fileno(),
                    stdout=accepted.fileno(),
                    stderr=subprocess.DEVNULL,
                )
                children.append(child)
                wait_for_exec(child, "sleep")
                found = context_of(child.pid)
            port = client.getsockname()[1]
    bracket = f"[{host}]" if family == socket.AF_INET6 else host
    assert found.stdin == found.stdout
    assert (found.stdin or "").startswith(f"socket:tcp {bracket}:{server_port}->")
    assert (found.stdin or "").endswith(f"{bracket}:{port} established")
    assert found.stderr == "file:/dev/null"


def test_a_hostile_unix_socket_path_on_stdout(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    path = str(tmp_path / "s \x1b[2J")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        child = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=server.fileno())
        children.append(child)
        wait_for_exec(child, "sleep")
        found = context_of(child.pid)
    assert found.stdout == f"socket:unix stream {path}"
    assert found.stdin == "file:/dev/null"


def test_a_real_environment_is_filtered_and_a_128_kib_variable_kept(
    children: list[subprocess.Popen[bytes]],
) -> None:
    big = "/opt/" + "a" * (128 * 1024 - 32) + "/x.so"  # MAX_ARG_STRLEN counts "NAME=" and NUL
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": big, "AWS_SECRET": "hunter2"}
    child = subprocess.Popen(["sleep", "30"], env=env)
    children.append(child)
    wait_for_exec(child, "sleep")
    found = context_of(child.pid)
    assert json.loads(found.environment or "") == {"LD_PRELOAD": big}


def test_a_closed_stdin_and_only_fds_0_to_2_are_read(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with 100,000 fds (or as many as RLIMIT_NOFILE's hard limit allows here) costs
    the same three readlinks: the fd directory is never listed."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = 100_000 if hard == resource.RLIM_INFINITY else min(100_000, hard - 16)
    if count < 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} leaves room for too few fds")
    script = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({count + 12}, {count + 12}))\n"
        "fd = os.open('/dev/null', os.O_RDONLY)\n"
        f"for n in range({count}): os.dup2(fd, 10 + n)\n"
        "os.close(0)\n"
        "print('ready', flush=True)\n"
        "sys.stdin = None\n"
        "import time; time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    children.append(child)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    assert len(os.listdir(f"/proc/{child.pid}/fd")) > count

    def refuse(*args: object) -> None:
        raise AssertionError("the fd directory was listed")

    monkeypatch.setattr(os, "listdir", refuse)
    monkeypatch.setattr(os, "scandir", refuse)
    found = context_of(child.pid)
    assert found.stdin == "closed"
    assert (found.stdout or "").startswith("pipe:[")


@pytest.mark.skipif(not ROOT, reason="new pid and net namespaces need root")
def test_a_process_in_other_pid_and_net_namespaces(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Its pids do not match the host's, its sockets are in its own network namespace's
    tables, and no known runtime owns it: container 'unknown'."""
    script = (
        "import socket, subprocess, sys, time\n"
        "subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname()); a, _ = s.accept()\n"
        "p = subprocess.Popen(['sleep', '30'], stdin=a)\n"
        "print(p.pid, flush=True); time.sleep(30)\n"
    )
    child = subprocess.Popen(
        ["unshare", "--pid", "--net", "--fork", "--kill-child", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
    )
    children.append(child)
    assert child.stdout is not None
    inner_pid = int(child.stdout.readline())
    sleeper = _host_pid_of_sleep(child.pid)
    assert sleeper != inner_pid, "the namespace's pid is not the host's"
    found = context_of(sleeper, ContextReader(init_pid=os.getpid()))
    assert found.ns_foreign == "pid net"
    assert found.container_runtime == "unknown" and found.container_id is None
    assert (found.stdin or "").startswith("socket:tcp 127.0.0.1:")


def _host_pid_of_sleep(ancestor: int) -> int:
    for _ in range(2000):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_bytes().strip()
            except OSError:
                continue
            if comm == b"sleep" and _descends(int(entry), ancestor):
                return int(entry)
        os.sched_yield()
    raise AssertionError("the sleeper never appeared")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return False
        pid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        if pid == ancestor:
            return True
    return False


def test_no_reader_means_no_context(children: list[subprocess.Popen[bytes]]) -> None:
    child = subprocess.Popen(["sleep", "30"])
    children.append(child)
    read = read_instance(b"/proc", str(child.pid).encode(), UserNames())
    assert read is not None
    assert all(getattr(read.details, name) is None for name in Context.__dataclass_fields__)
    assert Context() == NO_CONTEXT


def test_equal_context_values_are_one_object_but_long_ones_are_not_kept(tmp_path: Path) -> None:
    """Thousands of processes share a cgroup and stdio: one string each, not one per process;
    a long hostile value is not held by the reader after its process is gone."""
    long_value = b"/tmp/" + b"x" * 4096
    first = fake_process(tmp_path, 4242, fds={0: "/dev/null"}, environ=b"LD_PRELOAD=" + long_value)
    second = fake_process(tmp_path, 4243, fds={0: "/dev/null"}, environ=b"LD_PRELOAD=" + long_value)
    reader = ContextReader(os.fsencode(tmp_path))
    a, b = read_fake(reader, first), read_fake(reader, second)
    assert a.cgroup == b.cgroup and a.cgroup is b.cgroup
    assert a.stdin is b.stdin and a.pid_ns is b.pid_ns
    assert a.environment == b.environment and a.environment is not b.environment


def test_a_socket_table_larger_than_one_read_is_read_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/net/tcp returns whole lines per read, so a first read shorter than asked is not
    the end of the table (a busy host lists thousands of sockets)."""
    proc = fake_process(tmp_path, 4242, fds={0: "socket:[222]"})
    line = _TCP.split(b"\n")[1]
    filler = [line.replace(b" 111 ", f" {9000 + n} ".encode()) for n in range(200)]
    (proc / "net" / "tcp").write_bytes(
        _TCP.split(b"\n")[0] + b"\n" + b"\n".join(filler) + b"\n" + _TCP.split(b"\n")[2] + b"\n"
    )
    real_read = os.read

    def line_by_line(fd: int, size: int) -> bytes:  # like seq_file: never a partial line
        data = real_read(fd, size)
        cut = data.rfind(b"\n", 0, len(data) - 1) + 1 if len(data) == size else len(data)
        os.lseek(fd, cut - len(data), os.SEEK_CUR)
        return data[:cut]

    monkeypatch.setattr(os, "read", line_by_line)
    found = read_fake(ContextReader(os.fsencode(tmp_path)), proc)
    assert (found.stdin or "").startswith("socket:tcp 10.0.0.5:39490->")


def test_a_cgroup_is_classified_once_per_text_and_a_move_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes that share a cgroup file share its classification (the parse ran once per
    process before); a process moved to another cgroup is classified anew, and a long,
    hostile cgroup text is classified but never kept."""
    first = fake_process(tmp_path, 4242, fds={})
    second = fake_process(tmp_path, 4243, fds={})
    reader = ContextReader(os.fsencode(tmp_path))
    calls: list[str | None] = []
    real = context_module.classify_cgroup

    def counting(path: str | None) -> context_module.CgroupContext:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(context_module, "classify_cgroup", counting)
    a, b = read_fake(reader, first), read_fake(reader, second)
    assert (a.container_runtime, b.container_runtime) == ("docker", "docker")
    assert len(calls) == 1
    (second / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    moved = read_fake(reader, second)
    assert (moved.container_runtime, moved.unit) == (None, "cron.service")
    assert len(calls) == 2
    hostile = b"0::/" + b"x" * 2000 + b".scope\n"
    (second / "cgroup").write_bytes(hostile)
    assert read_fake(reader, second).unit == "x" * 2000 + ".scope"
    assert read_fake(reader, second).unit == "x" * 2000 + ".scope"
    assert len(calls) == 4, "a long cgroup text is not kept as a cache key"
    assert hostile not in reader._cgroups


def test_namespace_links_and_stdio_targets_are_worked_out_once_per_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of processes share namespaces and stdio targets: what a set of namespace
    links or a stdio link says is parsed once; a different target is parsed anew, and a long,
    hostile path is described but never kept as a cache key."""
    fake_process(tmp_path, 1, fds={})
    first = fake_process(tmp_path, 4242, fds={0: "/dev/null", 1: "/dev/pts/1"})
    second = fake_process(tmp_path, 4243, fds={0: "/dev/null", 1: "/dev/pts/1"})
    reader = ContextReader(os.fsencode(tmp_path))
    reader.init_namespaces()
    ns_parsed: list[bytes] = []
    kinds: list[str] = []
    real_parse, real_kind = context_module.parse_ns_link, context_module.stdio_kind

    def counting_parse(target: bytes) -> int | None:
        ns_parsed.append(target)
        return real_parse(target)

    def counting_kind(target: str) -> str:
        kinds.append(target)
        return real_kind(target)

    monkeypatch.setattr(context_module, "parse_ns_link", counting_parse)
    monkeypatch.setattr(context_module, "stdio_kind", counting_kind)
    a = read_fake(reader, first)
    parsed_for_first = (len(ns_parsed), len(kinds))
    b = read_fake(reader, second)
    assert (a.pid_ns, a.ns_foreign, a.stdin, a.stdout) == (
        110,
        "pid",
        "file:/dev/null",
        "tty:/dev/pts/1",
    )
    assert (b.pid_ns, b.ns_foreign, b.stdin, b.stdout) == (
        a.pid_ns,
        a.ns_foreign,
        a.stdin,
        a.stdout,
    )
    assert b.stdin is a.stdin
    assert (len(ns_parsed), len(kinds)) == parsed_for_first, "nothing parsed again"
    (second / "ns" / "net").unlink()
    (second / "ns" / "net").symlink_to("net:[99]")
    (second / "fd" / "0").unlink()
    (second / "fd" / "0").symlink_to("/var/log/x")
    moved = read_fake(reader, second)
    assert (moved.net_ns, moved.ns_foreign, moved.stdin) == (99, "pid net", "file:/var/log/x")
    hostile = "/tmp/" + "\n" * 600
    (second / "fd" / "0").unlink()
    (second / "fd" / "0").symlink_to(hostile)
    assert read_fake(reader, second).stdin == "file:" + hostile
    assert read_fake(reader, second).stdin == "file:" + hostile
    assert kinds.count(hostile) == 2, "a long stdio target is not kept as a cache key"
