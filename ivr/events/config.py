"""Configuration of the event pipeline: a YAML/JSON file and/or the environment.

Environment variables override the file.  Secrets come from the file (``secret`` or
``secret_file``) or ``IVR_TICKET_SECRET`` / ``IVR_TICKET_SECRET_FILE``, never from code.
A missing required setting raises :class:`ivr.errors.ConfigError` naming it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ivr.errors import ConfigError

ENV_PREFIX = "IVR_"
ENV_NAMES: dict[str, str] = {
    "redis_url": "IVR_REDIS_URL",
    "ticket_url": "IVR_TICKET_URL",
    "secret": "IVR_TICKET_SECRET",
    "secret_file": "IVR_TICKET_SECRET_FILE",
    "stream_prefix": "IVR_EVENTS_PREFIX",
    "partitions": "IVR_EVENTS_PARTITIONS",
    "consumer": "IVR_EVENTS_CONSUMER",
    "batch_size": "IVR_EVENTS_BATCH",
    "batch_max": "IVR_EVENTS_BATCH_MAX",
    "per_call_in_flight": "IVR_EVENTS_PER_CALL",
    "concurrency": "IVR_EVENTS_CONCURRENCY",
    "max_attempts": "IVR_EVENTS_MAX_ATTEMPTS",
    "backoff_base": "IVR_EVENTS_BACKOFF_BASE",
    "backoff_max": "IVR_EVENTS_BACKOFF_MAX",
    "request_timeout": "IVR_EVENTS_TIMEOUT",
    "lease_ms": "IVR_EVENTS_LEASE_MS",
}


@dataclass(frozen=True, slots=True)
class EventsConfig:
    redis_url: str = ""
    ticket_url: str = ""  # e.g. http://127.0.0.1:8088/v1/events
    secret: str = field(default="", repr=False)
    secret_file: str = ""
    stream_prefix: str = "ivr:events"
    partitions: int = 4
    consumer: str = ""
    batch_size: int = 100  # entries read from a partition at once
    batch_max: int = 100  # events per POST (1 = one event per POST to ticket_url)
    per_call_in_flight: int = 1  # events of one call per batch request (1 = strict)
    concurrency: int = 64  # calls delivered at once per partition
    max_attempts: int = 10
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    request_timeout: float = 5.0
    lease_ms: int = 5000

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode("utf-8")

    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    def require(self, *names: str) -> EventsConfig:
        """Check that each named setting is set; raise ConfigError naming the first one."""
        for name in names:
            if not getattr(self, name):
                env = ENV_NAMES.get(name, "")
                raise ConfigError(
                    f"event pipeline setting {name!r} is not set (config file key {name!r} "
                    f"or environment {env}) / 未配置事件推送参数 {name}（配置文件或环境变量 {env}）"
                )
        if not 1 <= self.partitions <= 1024:
            raise ConfigError(f"event pipeline setting 'partitions' must be 1..1024, "
                              f"got {self.partitions}")
        if self.per_call_in_flight < 1:
            raise ConfigError("event pipeline setting 'per_call_in_flight' must be >= 1")
        if self.max_attempts < 1:
            raise ConfigError(f"event pipeline setting 'max_attempts' must be >= 1, "
                              f"got {self.max_attempts}")
        return self

    def with_(self, **changes: Any) -> EventsConfig:
        return replace(self, **changes)


def _coerce(name: str, raw: Any) -> Any:
    kinds = {f.name: f.type for f in fields(EventsConfig)}
    kind = kinds[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"event pipeline setting {name!r}: bad value {raw!r}") from None


def load_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> EventsConfig:
    """Settings from ``path`` (YAML or JSON; an ``events:`` section is used if present),
    then the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = path or env.get("IVR_EVENTS_CONFIG") or None
    if path:
        p = Path(path)
        try:
            text = p.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read event config {p}: {exc.strerror}") from exc
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"event config {p} is not valid: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("events"), dict):
            data = data["events"]
        if not isinstance(data, dict):
            raise ConfigError(f"event config {p} must be a mapping")
        known = {f.name for f in fields(EventsConfig)}
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"event config {p}: unknown setting {key!r}")
            values[key] = _coerce(key, raw)
    for name, var in ENV_NAMES.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
    cfg = EventsConfig(**values)
    if not cfg.secret and cfg.secret_file:
        try:
            secret = Path(cfg.secret_file).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret_file {cfg.secret_file}: {exc.strerror}") from exc
        cfg = cfg.with_(secret=secret)
    return cfg
