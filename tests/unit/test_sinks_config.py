"""The sink and delivery configuration: nested `[sinks.*]` sections, the table kind, the
environment form, secrets hidden from `config show`, and the same error style as every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemoneye.config.loading import coerce, env_key, load_config
from daemoneye.config.schema import GROUPS, KEYS, SECTIONS
from daemoneye.errors import ConfigError
from daemoneye.paths import Mode


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        **extra,
    }


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg" / "daemoneye" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def setting(loaded, key: str):  # type: ignore[no-untyped-def]
    (found,) = [s for s in loaded.settings if s.key == key]
    return found.value, found.origin


def test_sections_and_defaults(tmp_path: Path) -> None:
    assert {"sinks.stdout", "sinks.file", "sinks.syslog", "sinks.webhook", "delivery"} <= set(
        SECTIONS
    )
    assert {"sinks"} == GROUPS
    config = load_config(mode=Mode.USER, env=user_env(tmp_path)).config
    assert not any(
        getattr(config.sinks, name).enabled for name in ("stdout", "file", "syslog", "webhook")
    )
    assert config.sinks.syslog.address == "/dev/log"
    assert config.sinks.webhook.verify_tls is True
    assert (
        config.delivery.max_attempts,
        config.delivery.backoff_base,
        config.delivery.backoff_max,
    ) == (20, 1.0, 300.0)


def test_nested_toml_sections_and_headers_table(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[sinks.webhook]
enabled = true
url = "https://hooks.example.com/services/T0/B0/secret"
timeout = "3s"

[sinks.webhook.headers]
Authorization = "Bearer s3cret"
X-Team = "secops"

[sinks.syslog]
enabled = true
address = "tcp://logs.example.com:6514"
facility = "local4"

[delivery]
max_attempts = 7
backoff_max = "2m"
""",
    )
    loaded = load_config(mode=Mode.USER, env=user_env(tmp_path))
    hook = loaded.config.sinks.webhook
    assert hook.enabled and hook.timeout == 3.0
    assert hook.headers == (("Authorization", "Bearer s3cret"), ("X-Team", "secops"))
    assert loaded.config.sinks.syslog.facility == "local4"
    assert (loaded.config.delivery.max_attempts, loaded.config.delivery.backoff_max) == (7, 120.0)
    # `config show` never prints secrets.
    assert setting(loaded, "sinks.webhook.headers") == (
        {"Authorization": "<hidden>", "X-Team": "<hidden>"},
        f"user file {path}",
    )
    assert setting(loaded, "sinks.webhook.url")[0] == "https://hooks.example.com/<hidden>"


def test_environment_reaches_nested_keys_and_tables(tmp_path: Path) -> None:
    assert env_key("DAEMONEYE_SINKS__WEBHOOK__URL") == "sinks.webhook.url"
    assert env_key("DAEMONEYE_AGENT_SINKS__FILE__PATH") == "sinks.file.path"
    env = user_env(
        tmp_path,
        DAEMONEYE_SINKS__FILE__ENABLED="yes",
        DAEMONEYE_SINKS__FILE__PATH=str(tmp_path / "alerts.jsonl"),
        DAEMONEYE_SINKS__WEBHOOK__HEADERS='{"Authorization": "Bearer x"}',
        DAEMONEYE_DELIVERY__MAX_ATTEMPTS="3",
    )
    loaded = load_config(mode=Mode.USER, env=env)
    config = loaded.config
    assert config.sinks.file.enabled and config.sinks.file.path == str(tmp_path / "alerts.jsonl")
    assert config.sinks.webhook.headers == (("Authorization", "Bearer x"),)
    assert config.delivery.max_attempts == 3
    assert setting(loaded, "delivery.max_attempts") == (3, "env DAEMONEYE_DELIVERY__MAX_ATTEMPTS")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[sinks.webhok]\nurl = 'x'\n",
            r":1: unknown section 'sinks.webhok' \(did you mean 'sinks.webhook'\?\)",
        ),
        (
            "[sinks.webhook]\nurll = 'https://x'\n",
            r":2: unknown key 'sinks.webhook.urll' \(did you mean 'sinks.webhook.url'\?\)",
        ),
        ("[sinks]\nurl = 'x'\n", r"unknown key 'sinks.url' \(did you mean 'sinks.webhook.url'\?\)"),
        (
            "[sinks.syslog]\naddress = 'http://x'\n",
            r":2: sinks.syslog.address: expected '/dev/log'",
        ),
        ("[sinks.syslog]\nfacility = 'local9'\n", r":2: sinks.syslog.facility: expected one of"),
        ("[sinks.webhook]\nurl = 'ftp://x/'\n", r":2: sinks.webhook.url: expected an http"),
        ("[sinks.webhook.headers]\n'Bad Name' = 'x'\n", r":1: sinks.webhook.headers: 'Bad Name'"),
        ("[sinks.webhook.headers]\nContent-Length = '1'\n", r"set by the HTTP client"),
        ("[sinks.webhook]\nheaders = 3\n", r"expected a table of strings"),
        ("[delivery]\nmax_attempts = 0\n", r":2: delivery.max_attempts: 0 is out of range"),
        ("[delivery]\nmax_attempts = 2.5\n", r"expected a whole number"),
        ("[sinks.file]\nenabled = true\n", r"sinks.file.enabled is true but sinks.file.path is"),
        ("[sinks.webhook]\nenabled = true\n", r"sinks.webhook.url is empty"),
    ],
)
def test_problems_name_file_line_key_and_closest(tmp_path: Path, text: str, message: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_config(mode=Mode.USER, env=user_env(tmp_path))


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    env = user_env(tmp_path, DAEMONEYE_SINKS__WEBHOOK__HEADERS="Authorization: x")
    with pytest.raises(
        ConfigError,
        match=r"DAEMONEYE_SINKS__WEBHOOK__HEADERS: "
        r"sinks\.webhook\.headers: expected a JSON object",
    ):
        load_config(mode=Mode.USER, env=env)
    env = user_env(tmp_path, DAEMONEYE_SINKS__WEBHOK__URL="https://x/")
    with pytest.raises(ConfigError, match=r"did you mean 'sinks\.webhook'"):
        load_config(mode=Mode.USER, env=env)


def test_every_key_has_a_doc_and_coerces_its_own_default() -> None:
    from daemoneye.config.schema import Config

    defaults = Config()
    for dotted, spec in KEYS.items():
        assert spec["doc"]
        value: object = defaults
        for part in dotted.split("."):
            value = getattr(value, part)
        if spec["kind"] == "table":
            assert coerce(dotted, dict(value), from_text=False) == value  # type: ignore[call-overload]
        else:
            assert coerce(dotted, value, from_text=False) == value
