"""Sigma's contains/startswith/endswith mean Python's casefold, in every script, end to end:
pySigma parses the value, the converter writes the SQL literal, SQLite calls sigma_match."""

from __future__ import annotations

from collections.abc import Iterator

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemoneye.engine.sigma_file import parse_sigma_text
from daemoneye.engine.sigma_sql import regexp_sql, required_literal
from daemoneye.store.sandbox import (
    ALLOWED_FUNCTIONS,
    UnsafePatternError,
    compile_pattern,
    register_functions,
)
from daemoneye.store.sigma_match import SigmaPatternError, escape, sigma_match
from tests.unit.test_sigma import sigma_text

# Process text never holds NUL (argv is NUL-separated); the rest of Unicode is fair game,
# with the characters LIKE, GLOB, SQL and Sigma treat specially weighted in.
UNICODE = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        # LIKE's, GLOB's, SQL's and Sigma's specials, and letters whose case folding is not
        # ASCII's (ß → ss, Kelvin K → k, long s → s, dotted İ → i̇)
        st.sampled_from("%_\\*?[]'\"ßẞİ\u0131\u017f\u212aÅΣ\u03c3ς"),
    ),
    max_size=12,
)
# ASCII text takes the native LIKE/GLOB path, the rest sigma_match: both must agree.
ASCII = st.text(alphabet=st.sampled_from("aAbBsSkK %_\\*?[]'-/"), max_size=12)
TEXT = st.one_of(ASCII, UNICODE)


@pytest.fixture(scope="module")
def conn() -> Iterator[apsw.Connection]:
    connection = apsw.Connection(":memory:")
    register_functions(connection)
    yield connection
    connection.close()


def yaml_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar; what YAML may not hold raw is escaped."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\' or not (
            0x20 <= code <= 0x7E
            or 0xA0 <= code <= 0xD7FF
            or 0xE000 <= code <= 0xFFFD
            or code >= 0x10000
        ):
            out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def converted_where(modifier: str, needle: str) -> str:
    """The WHERE clause the converter writes for `CommandLine|modifier: needle`."""
    value = yaml_quoted(escape(needle))
    text = sigma_text(f"s:\n  CommandLine|{modifier}: {value}\ncondition: s")
    parsed = parse_sigma_text(text, "t.yml")
    assert parsed.problems == ()
    return parsed.rules[0].query.split("\nWHERE ", 1)[1]


@settings(max_examples=300, deadline=None)
@given(haystack=TEXT, needle=TEXT)
def test_contains_startswith_endswith_agree_with_casefold_and_cased_with_plain_python(
    conn: apsw.Connection, haystack: str, needle: str
) -> None:
    folded, wanted = haystack.casefold(), needle.casefold()
    expected = {
        "contains": wanted in folded,
        "startswith": folded.startswith(wanted),
        "endswith": folded.endswith(wanted),
    }
    expected |= {
        "contains|cased": needle in haystack,
        "startswith|cased": haystack.startswith(needle),
        "endswith|cased": haystack.endswith(needle),
    }
    for modifier, truth in expected.items():
        where = converted_where(modifier, needle)
        sql = f"SELECT {where} FROM (SELECT ? AS cmdline) AS p"
        got = conn.execute(sql, (haystack,)).get
        assert bool(got) is truth, (modifier, haystack, needle, where)


def test_casefold_is_more_than_ascii(conn: apsw.Connection) -> None:
    like = conn.execute("SELECT 'ÄRGER' LIKE '%ärger%'").get
    sigma = conn.execute("SELECT sigma_match('ÄRGER', 'any', '*ärger*')").get
    assert (like, sigma) == (0, 1)  # the reason sigma_match exists
    assert sigma_match("STRASSE", "any", "straße") == 1
    assert sigma_match("STRASSE", "any cased", "straße") == 0
    assert sigma_match("a\nb", "any", "a?b") == 1  # `?` and `*` cross newlines too


def test_null_matches_nothing_and_modes_combine() -> None:
    assert sigma_match(None, "any", "*") == 0
    assert sigma_match("curl wget", "all", "*curl*", "*wget*") == 1
    assert sigma_match("curl", "all", "*curl*", "*wget*") == 0
    assert sigma_match("curl", "any", "*curl*", "*wget*") == 1
    assert sigma_match(12, "any", "12") == 1


def test_bad_calls_are_refused() -> None:
    with pytest.raises(SigmaPatternError):
        sigma_match("x", "some", "x")
    with pytest.raises(SigmaPatternError):
        sigma_match("x", "any", "x" * 5000)


def test_sigma_match_is_on_the_sandbox_allow_list() -> None:
    assert "sigma_match" in ALLOWED_FUNCTIONS


REGEX_TOKENS = st.sampled_from(
    ["a", "b", "c", "ab", "abc", "k", "s", "K", ".", "\\.", "x?", "y*", "z+", "c{2}", "(a|b)",
     "[ab]", "[^]a]", "|", "(?i)", "\\s", "\\d", "^", "$", "%", "_", "\\\\"]
)  # fmt: skip
REGEX_TEXT = st.text(alphabet=st.sampled_from("abcxyzkKsS\u017f\u212a. %_\\1"), max_size=14)


@settings(max_examples=400, deadline=None)
@given(tokens=st.lists(REGEX_TOKENS, max_size=7), text=REGEX_TEXT)
def test_the_regexp_prefilter_never_changes_an_answer(
    conn: apsw.Connection, tokens: list[str], text: str
) -> None:
    """The native test before REGEXP only skips rows REGEXP would refuse."""
    pattern = "".join(tokens)
    try:
        compile_pattern(pattern)
    except UnsafePatternError:
        return
    plain = conn.execute("SELECT coalesce(regexp(?, ?), 0)", (pattern, text)).get
    filtered = conn.execute(f"SELECT {regexp_sql('v', pattern)} FROM (SELECT ? AS v)", (text,)).get
    assert filtered == plain, (pattern, text, required_literal(pattern))


def test_the_regexp_prefilter_finds_the_literal_every_match_needs() -> None:
    assert required_literal("wget\\s+-q\\S+\\|\\s*sh") == ("wget", False)
    assert required_literal("(?i)curl.*-O") == ("curl", True)
    assert required_literal("ab?cde") == ("cde", False)  # b may be absent
    assert required_literal("abc+d") == ("abc", False)  # c may repeat: "abccd" lacks "abcd"
    assert required_literal("x\\.y\\.z") == ("x.y.z", False)
    assert required_literal("abc|def") is None  # either side may match
    assert required_literal("\\Qabc\\E") is None
