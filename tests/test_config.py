"""One settings model: a TOML file and IVR_* variables for the bridge and event delivery."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.config import Settings, load_settings
from ivr.demo import check_paths
from ivr.errors import ConfigError
from ivr.events.config import EventsConfig

ROOT = Path(__file__).resolve().parent.parent

FULL = """
[ami]
host = "pbx.example"
port = 5039
user = "bridge"
secret_file = "secrets/ami"
event_filter = false

[agi]
host = "0.0.0.0"
port = 4574

[redis]
url = "redis://r:6379/1"

[http]
port = 8080

[paths]
dialplans_dir = "defs"
prompts_dir = "/srv/prompts"
asterisk_conf_dir = "conf"

[tickets]
url = "http://tickets/v1/events"
secret = "ticket-s3cret"

[events]
stream_prefix = "site:events"
partitions = 8
backoff_base = 1
"""


def write(tmp_path: Path, text: str, name: str = "ivr.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_one_file_holds_bridge_and_event_settings(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ami").write_text("ami-s3cret\n", encoding="utf-8")
    path = write(tmp_path, FULL)
    s = load_settings(path, env={})
    assert (s.ami_host, s.ami_port, s.ami_user, s.ami_secret) == (
        "pbx.example", 5039, "bridge", "ami-s3cret")
    assert s.ami_event_filter is False
    assert (s.agi_host, s.agi_port, s.http_port) == ("0.0.0.0", 4574, 8080)
    assert s.redis_url == s.events.redis_url == "redis://r:6379/1"
    # relative paths are relative to the settings file
    assert s.dialplans_dir == tmp_path / "defs"
    assert s.prompts_dir == Path("/srv/prompts")
    assert s.asterisk_conf_dir == tmp_path / "conf"
    assert s.events.ticket_url == "http://tickets/v1/events"
    assert s.events.secret == "ticket-s3cret"
    assert (s.events.stream_prefix, s.events.partitions) == ("site:events", 8)
    assert s.events.backoff_base == 1.0 and isinstance(s.events.backoff_base, float)
    assert s.source == path
    s.require("ami_secret", "redis_url", "events.ticket_url", "events.secret")
    # $IVR_CONFIG names the file when --config does not
    assert load_settings(None, env={"IVR_CONFIG": str(path)}) == s


def test_environment_wins_with_the_documented_names(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace('secret_file = "secrets/ami"', 'secret = "from-file"'))
    secret = tmp_path / "ticket.key"
    secret.write_text("env-ticket\n", encoding="utf-8")
    ami_secret = tmp_path / "ami.key"
    ami_secret.write_text("env-ami", encoding="utf-8")
    s = load_settings(path, env={
        "IVR_AMI_HOST": "10.0.0.1", "IVR_AMI_PORT": "6000", "IVR_AMI_SECRET_FILE": str(ami_secret),
        "IVR_AMI_EVENT_FILTER": "yes", "IVR_AGI_PORT": "0", "IVR_REDIS_URL": "redis://e:1/0",
        "IVR_DIALPLANS_DIR": "elsewhere", "IVR_TICKET_URL": "http://e/v1/events",
        "IVR_TICKET_SECRET_FILE": str(secret), "IVR_EVENTS_PREFIX": "p",
        "IVR_EVENTS_PARTITIONS": "2", "IVR_EVENTS_BATCH": "7", "IVR_EVENTS_BACKOFF_MAX": "0.5",
        "IVR_EVENTS_LEASE_MS": "800", "IVR_HTTP_PORT": "0", "IVR_AGI_HOST": "",  # empty: unset
    })
    assert (s.ami_host, s.ami_port, s.ami_secret, s.ami_event_filter) == (
        "10.0.0.1", 6000, "env-ami", True)
    assert (s.agi_host, s.agi_port, s.http_port) == ("0.0.0.0", 0, 0)
    assert s.redis_url == s.events.redis_url == "redis://e:1/0"
    assert s.dialplans_dir == Path("elsewhere")
    e = s.events
    assert (e.ticket_url, e.secret, e.stream_prefix, e.partitions, e.batch_size,
            e.backoff_max, e.lease_ms) == ("http://e/v1/events", "env-ticket", "p", 2, 7, 0.5,
                                           800)
    # a secret given directly in the environment wins over the file's
    assert load_settings(path, env={"IVR_AMI_SECRET": "direct"}).ami_secret == "direct"


def test_no_repr_or_str_shows_a_secret(tmp_path: Path) -> None:
    s = load_settings(None, env={"IVR_AMI_SECRET": "ami-VERYSECRET",
                                 "IVR_TICKET_SECRET": "ticket-VERYSECRET"})
    assert s.ami_secret and s.events.secret
    for text in (repr(s), str(s), repr(s.events), str(s.events), f"{s}", f"{s!r}"):
        assert "VERYSECRET" not in text
    assert "ami_host='127.0.0.1'" in repr(s)  # the rest is shown


def test_no_default_points_into_the_source_checkout() -> None:
    s = Settings()
    for folder in (s.dialplans_dir, s.prompts_dir, s.asterisk_conf_dir):
        assert not folder.is_absolute()  # relative to the working directory
    assert s.ami_secret == "" and s.events.secret == "" and s.http_port is None


@pytest.mark.parametrize("text, key", [
    ('[ami]\nhost = "h"\ncolour = "red"\n', "[ami] colour"),
    ('[tickets]\nurl = "u"\nsecrett = "x"\n', "[tickets] secrett"),
    ('[colours]\nred = 1\n', "'colours'"),
    ('ami_host = "h"\n', "'ami_host' (did you mean [ami] host?)"),
    ('[ivr]\nami_host = "h"\n', "'ivr'"),
])
def test_unknown_key_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown setting") as err:
        load_settings(path, env={})
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text, key", [
    ('[ami]\nport = "5038"\n', "[ami] port"),
    ('[ami]\nport = 70000\n', "[ami] port"),
    ('[ami]\nevent_filter = "yes"\n', "[ami] event_filter"),
    ('[ami]\nsecret = 1234\n', "[ami] secret"),
    ('[events]\npartitions = 2.5\n', "[events] partitions"),
    ('[events]\nbackoff_base = true\n', "[events] backoff_base"),
    ('[paths]\nprompts_dir = 3\n', "[paths] prompts_dir"),
    ('[tickets]\nsecret_file = 3\n', "[tickets] secret_file"),
    ('ami = "x"\n', "[ami] must be a table"),
])
def test_wrong_type_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    assert str(path) in str(err.value) and key in str(err.value)


def test_wrong_type_in_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"\$IVR_EVENTS_PARTITIONS must be an integer"):
        load_settings(None, env={"IVR_EVENTS_PARTITIONS": "many"})
    with pytest.raises(ConfigError, match=r"\$IVR_AMI_EVENT_FILTER must be true or false"):
        load_settings(None, env={"IVR_AMI_EVENT_FILTER": "maybe"})


def test_missing_secret_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\nurl = "redis://x:1/0"\n[tickets]\nurl = "http://t"\n')
    s = load_settings(path, env={})
    with pytest.raises(ConfigError) as err:
        s.require("ami_secret", "redis_url")
    msg = str(err.value)
    assert str(path) in msg and "[ami] secret" in msg and "IVR_AMI_SECRET" in msg
    assert "[redis] url" not in msg  # only what is missing
    with pytest.raises(ConfigError, match=r"\[tickets\] secret"):
        s.require("events.secret")
    with pytest.raises(ConfigError, match=r"no settings file .*\[ami\] secret"):
        load_settings(None, env={}).require("ami_secret")
    # a secret file that is not there, or empty
    path = write(tmp_path, '[ami]\nsecret_file = "/nonexistent/ami"\n')
    with pytest.raises(ConfigError, match=r"\[ami\] secret_file: cannot read /nonexistent/ami"
                       ) as err:
        load_settings(path, env={})
    assert str(path) in str(err.value)
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    path = write(tmp_path, '[tickets]\nsecret_file = "empty"\n')
    with pytest.raises(ConfigError, match=r"\[tickets\] secret_file: .*empty is empty"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match=r"IVR_TICKET_SECRET_FILE.*cannot read"):
        load_settings(None, env={"IVR_TICKET_SECRET_FILE": "/nonexistent/t"})
    (tmp_path / "ami").write_text("b\n", encoding="utf-8")
    path = write(tmp_path, '[ami]\nsecret = "a"\nsecret_file = "ami"\n')
    with pytest.raises(ConfigError, match="not both"):
        load_settings(path, env={})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.toml", env={})
    path = write(tmp_path, "[ami\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_settings(path, env={})
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="IVR_EVENTS_CONFIG is no longer read"):
        load_settings(None, env={"IVR_EVENTS_CONFIG": "events.yaml"})


def test_events_config_require_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[tickets\] url .*IVR_TICKET_URL"):
        EventsConfig().require("ticket_url")
    with pytest.raises(ConfigError, match="partitions"):
        EventsConfig(redis_url="redis://x", partitions=0).require("redis_url")


def test_demo_paths_checked_before_anything_starts(tmp_path: Path) -> None:
    check_paths(load_settings(None, env={}))  # the tests run from the project root
    with pytest.raises(ConfigError, match=r"\[paths\] dialplans_dir .*scripts/demo"):
        check_paths(Settings(dialplans_dir=tmp_path / "none"))


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=30, check=False)


@pytest.mark.parametrize("command", [["serve"], ["events", "status"], ["events", "push"],
                                     ["ticket-sink", "--port", "0"], ["demo"]])
def test_commands_stop_on_a_bad_settings_file(tmp_path: Path, command: list[str]) -> None:
    path = write(tmp_path, '[ami]\nhots = "pbx"\n')
    done = _cli(*command, "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert f"{path}: unknown setting [ami] hots" in done.stderr


@pytest.mark.parametrize("command, key", [
    (["serve"], "[ami] secret"),
    (["serve", "--no-pusher"], "[ami] secret"),
    (["events", "push"], "[tickets] secret"),
    (["ticket-sink", "--port", "0"], "[tickets] secret"),
])
def test_commands_stop_on_a_missing_secret(tmp_path: Path, command: list[str],
                                           key: str) -> None:
    # a Redis URL nothing listens on: the command must stop before using it
    path = write(tmp_path, '[redis]\nurl = "redis://127.0.0.1:9/0"\n'
                           '[tickets]\nurl = "http://127.0.0.1:9/v1/events"\n')
    done = _cli(*command, "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr and key in done.stderr
    assert "Traceback" not in done.stderr


def test_agi_capacity_reaches_the_fastagi_server(tmp_path: Path) -> None:
    from ivr.bridge import Bridge

    path = write(tmp_path, "[ami]\nsecret = \"s\"\n[agi]\nmax_sessions = 300\n"
                 "max_sessions_per_peer = 120\n")
    s = load_settings(path, env={"IVR_AGI_MAX_SESSIONS_PER_PEER": "100"})
    assert (s.agi_max_sessions, s.agi_max_sessions_per_peer) == (300, 100)

    async def handler(channel: object) -> None:
        return None

    bridge = Bridge(s, ivr_handler=handler)  # type: ignore[arg-type]
    assert (bridge.agi.max_sessions, bridge.agi.max_sessions_per_peer) == (300, 100)
    with pytest.raises(ConfigError, match=r"\[agi\] max_sessions must be at least 1"):
        load_settings(write(tmp_path, "[agi]\nmax_sessions = 0\n"), env={})
