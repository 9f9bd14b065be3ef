"""Settings of every ``ivr`` command: one TOML file and ``IVR_*`` environment variables.

The file (``--config FILE`` or ``$IVR_CONFIG``) has one table per part::

    [ami]      host, port, user, secret | secret_file, event_filter
    [agi]      host, port
    [redis]    url
    [http]     host, port            (no port: no HTTP listener)
    [paths]    dialplans_dir, prompts_dir, asterisk_conf_dir, staff_policy (supervision
               and quality review: docs/supervision.md)
    [tickets]  url, secret | secret_file
    [events]   stream_prefix, partitions, … (ivr.events.config.KEYS)
    [recordings] dir, retention_days  (archives of call recordings, docs/recordings.md)
    [[asterisk]] name, host, port, user, secret | secret_file, agi_port   (one table per
               Asterisk server when there are several; without it, [ami] is the one)
    [callbacks] enabled, attempts, backoff_s, delay_s, timeout_s, dial_context, caller_id,
               priority  (missed-call callbacks, docs/callbacks.md)

Precedence: environment over file over defaults.  Secrets have no default in code and
can be read from a file (``secret_file`` / ``IVR_…_SECRET_FILE``); no repr shows them.
Relative paths in the file are relative to the file; the defaults are relative to the
working directory (run from the project root, as ``scripts/demo`` does), never to where
the code is installed.  A bad file — unknown key, wrong type, unreadable secret file —
raises :class:`ConfigError` naming the key and the file, before anything starts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError
from ivr.events.config import KEYS as EVENTS_KEYS
from ivr.events.config import EventsConfig


@dataclass(frozen=True, slots=True)
class AsteriskServer:
    """One Asterisk server the application serves: its AMI login and the FastAGI port its
    dialplan calls.  ``name`` is its system name (asterisk.conf ``systemname``): call ids
    are ``<name>-<Linkedid>`` (the Linkedids of two servers can be equal); ``""`` only
    for the single server of ``[ami]`` (call id = Linkedid)."""

    name: str = ""
    host: str = "127.0.0.1"
    port: int = 5038
    user: str = "ivr"
    secret: str = field(default="", repr=False)
    agi_port: int | None = None  # None: the [agi] port


_SERVER_KEYS = {"name": "str", "host": "str", "port": "port", "user": "str",
                "secret": "str", "secret_file": "path", "agi_port": "port"}


def _read_servers(raw: Any, where: str, base: Path) -> tuple[AsteriskServer, ...]:
    """The ``[[asterisk]]`` tables: each checked, then the set (no Asterisk named twice,
    no system name twice, no FastAGI port twice)."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{where}: [[asterisk]] must be an array of tables (one "
                          "[[asterisk]] header per server) / [[asterisk]] 必须是表数组")
    servers: list[AsteriskServer] = []
    for i, table in enumerate(raw, 1):
        label = f"[[asterisk]] #{i}"
        values: dict[str, Any] = {}
        for key, value in table.items():
            kind = _SERVER_KEYS.get(key)
            if kind is None:
                raise ConfigError(f"{where}: {label}: unknown setting {key!r}; the keys are "
                                  f"{', '.join(_SERVER_KEYS)} / 未知配置项 {key}")
            ok = (isinstance(value, str) if kind in ("str", "path") else
                  isinstance(value, int) and not isinstance(value, bool)
                  and 0 < value <= 65535)
            if not ok:
                raise ConfigError(f"{where}: {label} {key} must be {_WHAT[kind]}, got "
                                  f"{value!r} / 配置项 {key} 类型错误")
            values[key] = value
        if "secret" in values and "secret_file" in values:
            raise ConfigError(f"{where}: {label}: give secret or secret_file, not both "
                              "/ 只能设置其一")
        if "secret_file" in values:
            path = base / Path(values.pop("secret_file")).expanduser()
            values["secret"] = _read_secret(_SPECS_BY_FIELD["ami_secret"], path, where,
                                            f"{label} secret_file")
        name = str(values.get("name", "")).strip()
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"{where}: {label}: name must be the server's system name "
                              f"(letters, digits, - _ .), got {values.get('name')!r} "
                              "/ 服务器名称无效")
        values["name"] = name
        servers.append(AsteriskServer(**values))
    check_servers(servers, where)
    return tuple(servers)


def check_servers(servers: list[AsteriskServer] | tuple[AsteriskServer, ...],
                  where: str = "settings") -> None:
    """Several Asterisk servers must be told apart: a clear error, not a split brain."""
    seen_names: dict[str, int] = {}
    seen_ami: dict[tuple[str, int], str] = {}
    seen_agi: dict[int, str] = {}
    for s in servers:
        if s.name in seen_names:
            raise ConfigError(f"{where}: two Asterisk servers with the system name "
                              f"{s.name!r}: call ids would collide / 两台 Asterisk 服务器"
                              f"系统名称相同：{s.name}")
        seen_names[s.name] = 1
        ami = (s.host.lower(), s.port)
        if ami in seen_ami:
            raise ConfigError(f"{where}: Asterisk {s.host}:{s.port} is named twice "
                              f"({seen_ami[ami]!r} and {s.name!r}): its calls would be "
                              f"counted twice / 同一台 Asterisk 被配置了两次")
        seen_ami[ami] = s.name
        if s.agi_port is not None:
            if s.agi_port in seen_agi:
                raise ConfigError(f"{where}: Asterisk servers {seen_agi[s.agi_port]!r} and "
                                  f"{s.name!r} share the FastAGI port {s.agi_port}: each "
                                  f"server's IVR steps need their own / FastAGI 端口重复")
            seen_agi[s.agi_port] = s.name
    if len(servers) > 1 and sum(s.agi_port is None for s in servers) > 1:
        raise ConfigError(f"{where}: with several Asterisk servers give each but one an "
                          "agi_port of its own / 多台服务器需各自的 FastAGI 端口")


@dataclass(frozen=True, slots=True)
class Settings:
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "ivr"
    ami_secret: str = field(default="", repr=False)
    # After each login, ask Asterisk (AMI ``Filter``) for only the events the bridge
    # consumes; off = every event (e.g. an AMI user without the ``system`` privilege).
    ami_event_filter: bool = True
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    # FastAGI capacity (docs/agi.md "Capacity"): sessions in all and from one address
    agi_max_sessions: int = 2000
    agi_max_sessions_per_peer: int = 1000
    redis_url: str = ""  # also ``events.redis_url`` (kept equal)
    http_host: str = "127.0.0.1"
    http_port: int | None = None  # None: the application binds no HTTP listener
    dialplans_dir: Path = Path("dialplans")
    prompts_dir: Path = Path("prompts")
    asterisk_conf_dir: Path = Path("asterisk-conf")
    # supervisors, reviewers and the quality form (TOML; ivr/supervision, ivr/quality)
    staff_policy: Path = Path("staff.toml")
    events: EventsConfig = field(default_factory=EventsConfig)  # [tickets] and [events]
    # call recordings' archives (date/call layout; None: recordings are not archived, the
    # application runs no recordings worker) and how many days they are kept
    recordings_dir: Path | None = None
    recordings_retention_days: int = 180
    # missed-call callbacks (漏接回拨, docs/callbacks.md): every call abandoned in a queue
    # and every IVR callback request is called back (needs the event pipeline)
    callbacks_enabled: bool = True
    callbacks_attempts: int = 3  # attempts per job (no answer, busy, failed) before giving up
    callbacks_backoff_s: float = 600.0  # wait before attempt n+1: backoff_s * 2**(n-1)
    callbacks_delay_s: float = 60.0  # the first attempt this long after the missed call
    callbacks_timeout_s: float = 30.0  # how long the citizen's phone rings (Originate Timeout)
    callbacks_dial_context: str = ""  # "" = the definition's settings.dial_context
    callbacks_caller_id: str = '"12345" <12345>'  # what the citizen's phone shows
    callbacks_priority: int = 100  # QUEUE_PRIO of the callback in its queue (at the head)
    # several Asterisk servers ([[asterisk]]); empty: the one of [ami] (see .servers)
    asterisk: tuple[AsteriskServer, ...] = ()
    source: Path | None = None  # the settings file these came from (for messages)

    @property
    def servers(self) -> tuple[AsteriskServer, ...]:
        """Every Asterisk server the application serves: the ``[[asterisk]]`` tables, or
        the single unnamed one of ``[ami]``/``[agi]``."""
        if self.asterisk:
            return self.asterisk
        return (AsteriskServer("", self.ami_host, self.ami_port, self.ami_user,
                               self.ami_secret, None),)

    def for_server(self, server: AsteriskServer) -> Settings:
        """These settings with ``[ami]`` (and the FastAGI port) of ``server``."""
        return replace(self, ami_host=server.host, ami_port=server.port,
                       ami_user=server.user, ami_secret=server.secret,
                       agi_port=self.agi_port if server.agi_port is None else server.agi_port,
                       asterisk=())

    def __post_init__(self) -> None:
        for key, value in (("max_sessions", self.agi_max_sessions),
                           ("max_sessions_per_peer", self.agi_max_sessions_per_peer)):
            if value < 1:
                where = str(self.source) if self.source else "settings"
                raise ConfigError(f"{where}: [agi] {key} must be at least 1, got {value} / "
                                  f"[agi] {key} 至少为 1")
        if self.recordings_retention_days < 1:
            where = str(self.source) if self.source else "settings"
            raise ConfigError(f"{where}: [recordings] retention_days must be at least 1, got "
                              f"{self.recordings_retention_days} / 录音保留天数至少为 1")
        where = str(self.source) if self.source else "settings"
        if not 1 <= self.callbacks_attempts <= 20:
            raise ConfigError(f"{where}: [callbacks] attempts must be 1..20, got "
                              f"{self.callbacks_attempts} / 回拨次数应为 1-20")
        for key, secs in (("backoff_s", self.callbacks_backoff_s),
                          ("delay_s", self.callbacks_delay_s)):
            if secs < 0:
                raise ConfigError(f"{where}: [callbacks] {key} must not be negative, got "
                                  f"{secs} / 回拨间隔不能为负")
        if not 5 <= self.callbacks_timeout_s <= 300:
            raise ConfigError(f"{where}: [callbacks] timeout_s must be 5..300, got "
                              f"{self.callbacks_timeout_s} / 振铃时长应为 5-300 秒")
        # one Redis URL: the bridge's is the event pipeline's
        if self.redis_url and self.events.redis_url != self.redis_url:
            object.__setattr__(self, "events", self.events.with_(redis_url=self.redis_url))
        elif not self.redis_url and self.events.redis_url:
            object.__setattr__(self, "redis_url", self.events.redis_url)

    def require(self, *names: str) -> Settings:
        """Raise ConfigError naming, with the settings file, every required setting that
        is empty.  Names are attributes (``ami_secret``) or ``events.<attribute>``."""
        if self.asterisk and "ami_secret" in names:
            names = tuple(n for n in names if n != "ami_secret")
            for server in self.asterisk:
                if not server.secret:
                    where = str(self.source) if self.source else "settings"
                    raise ConfigError(f"{where}: [[asterisk]] {server.name!r}: missing "
                                      "secret (or secret_file) / 缺少 AMI 密码")
        missing = [_SPECS_BY_FIELD[n] for n in names if not _get(self, n)]
        if missing:
            where = str(self.source) if self.source else "no settings file (--config / IVR_CONFIG)"
            keys = ", ".join(s.label for s in missing)
            how = "; ".join(s.how_to_set() for s in missing)
            raise ConfigError(f"{where}: missing setting(s) {keys} ({how}) / 缺少配置项 {keys}")
        return self


def _get(settings: Settings, name: str) -> Any:
    obj: Any = settings
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True, slots=True)
class _Spec:
    field: str  # Settings attribute, or "events.<EventsConfig attribute>"
    section: str
    key: str
    env: str
    kind: str  # str, int, float, bool, path, port, port?
    secret: bool = False

    @property
    def label(self) -> str:
        return f"[{self.section}] {self.key}"

    def how_to_set(self) -> str:
        if self.secret:
            return (f"{self.label} or {self.key}_file in the settings file, or {self.env} / "
                    f"{self.env}_FILE")
        return f"{self.label} in the settings file, or {self.env}"


_KINDS = {str: "str", int: "int", float: "float", bool: "bool"}

_SPECS: tuple[_Spec, ...] = (
    _Spec("ami_host", "ami", "host", "IVR_AMI_HOST", "str"),
    _Spec("ami_port", "ami", "port", "IVR_AMI_PORT", "port"),
    _Spec("ami_user", "ami", "user", "IVR_AMI_USER", "str"),
    _Spec("ami_secret", "ami", "secret", "IVR_AMI_SECRET", "str", secret=True),
    _Spec("ami_event_filter", "ami", "event_filter", "IVR_AMI_EVENT_FILTER", "bool"),
    _Spec("agi_host", "agi", "host", "IVR_AGI_HOST", "str"),
    _Spec("agi_port", "agi", "port", "IVR_AGI_PORT", "port"),
    _Spec("agi_max_sessions", "agi", "max_sessions", "IVR_AGI_MAX_SESSIONS", "int"),
    _Spec("agi_max_sessions_per_peer", "agi", "max_sessions_per_peer",
          "IVR_AGI_MAX_SESSIONS_PER_PEER", "int"),
    _Spec("redis_url", "redis", "url", "IVR_REDIS_URL", "str"),
    _Spec("http_host", "http", "host", "IVR_HTTP_HOST", "str"),
    _Spec("http_port", "http", "port", "IVR_HTTP_PORT", "port?"),
    _Spec("dialplans_dir", "paths", "dialplans_dir", "IVR_DIALPLANS_DIR", "path"),
    _Spec("prompts_dir", "paths", "prompts_dir", "IVR_PROMPTS_DIR", "path"),
    _Spec("asterisk_conf_dir", "paths", "asterisk_conf_dir", "IVR_ASTERISK_CONF_DIR", "path"),
    _Spec("staff_policy", "paths", "staff_policy", "IVR_STAFF_POLICY", "path"),
    _Spec("recordings_dir", "recordings", "dir", "IVR_RECORDINGS_DIR", "path"),
    _Spec("recordings_retention_days", "recordings", "retention_days",
          "IVR_RECORDINGS_RETENTION_DAYS", "int"),
    _Spec("callbacks_enabled", "callbacks", "enabled", "IVR_CALLBACKS_ENABLED", "bool"),
    _Spec("callbacks_attempts", "callbacks", "attempts", "IVR_CALLBACKS_ATTEMPTS", "int"),
    _Spec("callbacks_backoff_s", "callbacks", "backoff_s", "IVR_CALLBACKS_BACKOFF_S", "float"),
    _Spec("callbacks_delay_s", "callbacks", "delay_s", "IVR_CALLBACKS_DELAY_S", "float"),
    _Spec("callbacks_timeout_s", "callbacks", "timeout_s", "IVR_CALLBACKS_TIMEOUT_S", "float"),
    _Spec("callbacks_dial_context", "callbacks", "dial_context", "IVR_CALLBACKS_DIAL_CONTEXT",
          "str"),
    _Spec("callbacks_caller_id", "callbacks", "caller_id", "IVR_CALLBACKS_CALLER_ID", "str"),
    _Spec("callbacks_priority", "callbacks", "priority", "IVR_CALLBACKS_PRIORITY", "int"),
) + tuple(
    _Spec(f"events.{name}", section, key, env,
          _KINDS[type(getattr(EventsConfig(), name))], secret=name == "secret")
    for name, (section, key, env) in EVENTS_KEYS.items()
    if name != "redis_url"  # the bridge's [redis] url
)
_SPECS_BY_FIELD = {s.field: s for s in _SPECS}
_SPECS_BY_FIELD["events.redis_url"] = _SPECS_BY_FIELD["redis_url"]
_SPECS_BY_KEY = {(s.section, s.key): s for s in _SPECS}
_SECRET_FILES = {(s.section, f"{s.key}_file"): s for s in _SPECS if s.secret}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in _SPECS))

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_WHAT = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
         "path": "a path (string)", "port": "a port number 0..65535",
         "port?": "a port number 0..65535"}


def _from_file(spec: _Spec, raw: Any, where: str, base: Path) -> Any:
    """A value from the TOML file: TOML has types, so they must match."""
    kind = spec.kind
    ok = {
        "str": isinstance(raw, str),
        "path": isinstance(raw, str),
        "bool": isinstance(raw, bool),
        "int": isinstance(raw, int) and not isinstance(raw, bool),
        "float": isinstance(raw, (int, float)) and not isinstance(raw, bool),
        "port": isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 65535,
        "port?": isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 65535,
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: {spec.label} must be {_WHAT[kind]}, got {raw!r} "
                          f"/ 配置项 {spec.label} 类型错误")
    if kind == "path":
        return base / Path(raw).expanduser()
    if kind == "float":
        return float(raw)
    return raw


def _from_env(spec: _Spec, raw: str) -> Any:
    """A value from an environment variable (text)."""
    kind = spec.kind
    text = raw.strip()
    try:
        if kind == "bool":
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return text.lower() in _TRUE
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind in ("port", "port?"):
            port = int(text)
            if not 0 <= port <= 65535:
                raise ValueError(raw)
            return port
        if kind == "path":
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise ConfigError(f"${spec.env} must be {_WHAT[kind]}, got {raw!r} "
                          f"/ 环境变量 {spec.env} 类型错误") from None


def _read_secret(spec: _Spec, path: Path, where: str, via: str) -> str:
    try:
        text = path.read_text("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: {via}: cannot read {path}: {exc.strerror} "
                          f"/ 无法读取密钥文件") from exc
    if not text:
        raise ConfigError(f"{where}: {via}: {path} is empty / 密钥文件为空")
    return text


def _hint(name: str) -> str:
    flat = {s.field.removeprefix("events."): s for s in _SPECS}
    spec = flat.get(name)
    return f" (did you mean {spec.label}?)" if spec is not None else ""


def _read_file(p: Path) -> dict[str, Any]:
    """{Settings field: value} from a settings file."""
    where = str(p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"settings file not found: {p} / 找不到配置文件") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {p}: {exc.strerror} "
                          "/ 无法读取配置文件") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc} / 配置文件格式错误") from exc
    base = p.parent
    values: dict[str, Any] = {}
    secrets_seen: dict[str, str] = {}
    for section, table in data.items():
        if section == "asterisk":
            values["asterisk"] = _read_servers(table, where, base)
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{where}: unknown setting {section!r}{_hint(section)}; the tables are "
                f"{', '.join(f'[{s}]' for s in SECTIONS)} / 未知配置项 {section}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [{section}] must be a table / 配置项 {section} 必须是表")
        for key, raw in table.items():
            spec = _SPECS_BY_KEY.get((section, key))
            if spec is not None:
                value = _from_file(spec, raw, where, base)
            elif (section, key) in _SECRET_FILES:
                spec = _SECRET_FILES[section, key]
                if not isinstance(raw, str):
                    raise ConfigError(f"{where}: [{section}] {key} must be a path (string), "
                                      f"got {raw!r} / 配置项类型错误")
                value = _read_secret(spec, base / Path(raw).expanduser(), where,
                                     f"[{section}] {key}")
            else:
                raise ConfigError(f"{where}: unknown setting [{section}] {key} "
                                  f"/ 未知配置项 [{section}] {key}")
            if spec.secret:
                if spec.field in secrets_seen:
                    raise ConfigError(f"{where}: [{section}] give {spec.key} or "
                                      f"{spec.key}_file, not both / 只能设置其一")
                secrets_seen[spec.field] = key
            values[spec.field] = value
    return values


def _read_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in _SPECS:
        raw = env.get(spec.env)
        if spec.secret and not raw and env.get(spec.env + "_FILE"):
            name = spec.env + "_FILE"
            values[spec.field] = _read_secret(spec, Path(env[name]).expanduser(),
                                              f"${name}", spec.label)
        elif raw:  # empty = unset
            values[spec.field] = _from_env(spec, raw)
    return values


def load_settings(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from ``path`` (else ``$IVR_CONFIG``, else none), then the environment."""
    env = os.environ if env is None else env
    if env.get("IVR_EVENTS_CONFIG"):
        raise ConfigError(
            "IVR_EVENTS_CONFIG is no longer read: put the event settings in the [tickets] and "
            "[events] tables of the settings file (--config / IVR_CONFIG), see "
            "docs/configuration.md / 事件配置已并入统一配置文件")
    path = path or env.get("IVR_CONFIG") or None
    values: dict[str, Any] = {}
    source = Path(path) if path else None
    if source is not None:
        values.update(_read_file(source))
    values.update(_read_env(env))
    if env.get("IVR_ASTERISK"):
        raise ConfigError("IVR_ASTERISK is not read: list several Asterisk servers as "
                          "[[asterisk]] tables of the settings file / 多台服务器请在配置文件中配置")
    top = {k: v for k, v in values.items() if not k.startswith("events.")}
    events = {k.removeprefix("events."): v for k, v in values.items() if k.startswith("events.")}
    return Settings(**top, events=EventsConfig(**events), source=source)
