"""The process filter language: what matches, and the errors a user sees for a bad term."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemoneye.filters import FilterError, narrows, parse_filter
from daemoneye.models import ProcessKey, ProcessRecord


def proc(
    pid: int = 100,
    name: str = "sshd",
    user: str | None = "root",
    cpu: float = 0.0,
    rss: int = 10 * 1024**2,
    exe: str | None = "/usr/sbin/sshd",
    cmdline: tuple[str, ...] = ("sshd: -D",),
) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        ppid=1,
        start_time=1000.0 + pid,
        name=name,
        exe=exe,
        cmdline=cmdline,
        cwd="/",
        uid=0,
        user=user,
        gid=0,
        state="S",
        threads=1,
        rss=rss,
        cpu_percent=cpu,
        exe_sha256=None,
        exe_deleted=False,
        first_seen=1.0,
        last_seen=2.0,
    )


SSHD = proc()
MINER = proc(
    pid=4242,
    name="kworkerds",
    user="www-data",
    cpu=98.5,
    rss=600 * 1024**2,
    exe="/tmp/.x/kworkerds",
    cmdline=("/tmp/.x/kworkerds", "-o", "stratum+tcp://p:1"),
)


@pytest.mark.parametrize(
    ("text", "matches_sshd", "matches_miner"),
    [
        ("", True, True),
        ("ssh", True, False),
        ("SSH", True, False),
        ("user:root", True, False),
        ("user:www", False, True),
        ("exe:/tmp", False, True),
        ("cmd:stratum", False, True),
        ("name:kworker cpu>50", False, True),
        ("cpu>50", False, True),
        ("cpu<1", True, False),
        ("rss>100M", False, True),
        ("rss<1G", True, True),
        ("pid:4242", False, True),
        ("-user:root", False, True),
        ("'stratum+tcp://p:1'", False, True),
    ],
)
def test_terms_match_what_they_name(text: str, matches_sshd: bool, matches_miner: bool) -> None:
    process_filter = parse_filter(text)
    assert process_filter.matches(SSHD) is matches_sshd
    assert process_filter.matches(MINER) is matches_miner


def test_alerted_uses_the_alerted_instances() -> None:
    process_filter = parse_filter("alerted")
    assert process_filter.matches(MINER, alerted={ProcessKey(4242, MINER.start_time)})
    assert not process_filter.matches(MINER, alerted={ProcessKey(4242, 0.0)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("usr:root", "unknown field 'usr' (did you mean 'user'?)"),
        ("cpu>lots", "expected a number"),
        ("name>3", "cannot compare 'name'"),
        ("pid:abc", "pid must be a whole number"),
        ("cpu>5M", "size suffixes only apply to rss"),
        ("'unclosed", "No closing quotation"),
        ("user:", "expected a value after user:"),
    ],
)
def test_bad_terms_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(text)
    assert message in str(raised.value)


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_filter_error(text: str) -> None:
    try:
        process_filter = parse_filter(text)
    except FilterError:
        return
    process_filter.matches(MINER)


@pytest.mark.parametrize(
    "text",
    ["ssh", "x/kw", "-name:sshd", "cwd:/ state:s", "stratum", "user:www cpu>5", "'-o stratum'"],
)
def test_a_kept_record_text_matches_as_the_record_itself(text: str) -> None:
    """The dashboard keeps each record's lowered text across keystrokes; matching with it must
    give what matching the record gives."""
    from daemoneye.filters import record_text

    process_filter = parse_filter(text)
    for record in (SSHD, MINER):
        assert process_filter.matches(record, text=record_text(record)) is process_filter.matches(
            record
        )


def test_free_text_never_matches_across_two_fields() -> None:
    """Free text looks in name, command line, exe and user one at a time: "sd" must not match
    the end of one field and the start of the next."""
    record = proc(name="ss", cmdline=("ds",), exe="/bin/x", user="u")
    assert not parse_filter("sd").matches(record)
    assert parse_filter("ds").matches(record)


@pytest.mark.parametrize(
    ("before", "after", "narrower"),
    [
        ("", "ssh", True),
        ("ss", "ssh", True),
        ("ssh", "ssh user:root", True),
        ("user:ro", "user:root", True),
        ("ssh cpu>5", "ssh cpu>5 alerted", True),
        ("ssh", "ssh", True),
        ("ssh", "ss", False),
        ("pid:1", "pid:12", False),
        ("cpu<5", "cpu<50", False),
        ("-ng", "-ngi", False),
        ("alert", "alerted", False),
        ("user", "user:root", False),
        ("ssh", "sshd user:root", True),
        ("ssh user:root", "sshd user:root", False),
        ("'a b", "'a b'", False),
    ],
)
def test_narrows_says_when_a_longer_filter_can_only_match_less(
    before: str, after: str, narrower: bool
) -> None:
    assert narrows(before, after) is narrower


_RECORDS = [SSHD, MINER, proc(pid=7, name="ngx", user="rot", cmdline=("a b", "ssh"))]


@given(
    st.text(alphabet="ars:ou -'>5dt1", max_size=8), st.text(alphabet="ars:ou -'>5dt1", max_size=4)
)
def test_a_filter_that_narrows_never_matches_more(before: str, typed: str) -> None:
    """What the dashboard relies on when it looks only among the rows shown."""
    after = before + typed
    if not narrows(before, after):
        return
    try:
        old, new = parse_filter(before), parse_filter(after)
    except FilterError:
        return
    for record in _RECORDS:
        assert old.matches(record) or not new.matches(record), (before, after, record.pid)


@pytest.mark.parametrize(
    ("shell_safe", "classic"),
    [
        ("cpu:>50", "cpu>50"),
        ("rss:>100M", "rss>100M"),
        ("rss:<=1G", "rss<=1G"),
        ("threads:>=1", "threads>=1"),
        ("not:name:kworker", "-name:kworker"),
        ("not:ssh cpu:<1", "-ssh cpu<1"),
    ],
)
def test_forms_the_shell_leaves_alone_mean_what_the_classic_forms_mean(
    shell_safe: str, classic: str
) -> None:
    """`cpu:>1` is not a redirection and `not:TERM` is not an option on a shell command line."""
    for record in (SSHD, MINER):
        assert parse_filter(shell_safe).matches(record) is parse_filter(classic).matches(record)
    assert parse_filter("cpu:>50").matches(MINER) and not parse_filter("cpu:>50").matches(SSHD)
    assert parse_filter("not:name:kworker").matches(SSHD)
    assert not parse_filter("not:name:kworker").matches(MINER)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu:5", "cpu takes a comparison, e.g. cpu:>5"),
        ("not:", "expected a term after not:"),
        ("rss:>1X", "sizes like 100M"),
    ],
)
def test_shell_safe_forms_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(FilterError) as raised:
        parse_filter(text)
    assert message in str(raised.value)


def test_a_text_field_may_still_contain_a_comparison_sign() -> None:
    assert parse_filter("cmd:>/dev/null").matches(proc(cmdline=("sh", "-c", "x >/dev/null")))


@pytest.mark.parametrize(("before", "after"), [("cpu:>5", "cpu:>50"), ("not:ng", "not:ngi")])
def test_shell_safe_comparisons_and_negations_are_not_narrowings(before: str, after: str) -> None:
    assert not narrows(before, after)


# -- context terms: container:, unit:, tty: ---------------------------------------------------


def test_context_terms_match_the_container_unit_and_tty() -> None:
    import dataclasses

    in_docker = dataclasses.replace(
        proc(1, "bash"),
        container_runtime="docker",
        container_id="3f2a9c1b7d20" + "a" * 52,
        unit="docker-3f2a.scope",
        tty="pts/0",
    )
    on_host = dataclasses.replace(proc(2, "nginx"), unit="nginx.service", tty=None)
    kernel = proc(3, "kworker/0:1")  # nothing known: never matches a context term

    def names(text: str) -> list[str]:
        parsed = parse_filter(text)
        return [r.name for r in (in_docker, on_host, kernel) if parsed.matches(r)]

    assert names("container:docker") == ["bash"]
    assert names("container:3F2A9C") == ["bash"], "the id, case-insensitively"
    assert names("not:container:docker") == ["nginx", "kworker/0:1"]
    assert names("unit:nginx") == ["nginx"]
    assert names("unit:.scope") == ["bash"]
    assert names("tty:pts/0") == ["bash"]
    assert names("tty:pts/0 container:podman") == []
    assert narrows("container:doc", "container:docker")
    with pytest.raises(FilterError, match="expected a value after container:"):
        parse_filter("container:")
    with pytest.raises(FilterError, match="did you mean 'container'"):
        parse_filter("containr:x")
