"""The call-event delivery settings (``[tickets]`` and ``[events]`` of the settings file).

They are read, with every other setting, by :func:`ivr.config.load_settings` (one TOML
file and ``IVR_*`` variables); :data:`KEYS` says where each one lives there.  Secrets
come from the file (``secret`` or ``secret_file``) or ``IVR_TICKET_SECRET`` /
``IVR_TICKET_SECRET_FILE``, never from code; the repr never shows one.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from typing import Any

from ivr.errors import ConfigError

# attribute -> (settings-file section, key, environment variable).  ``redis_url`` is the
# bridge's ``[redis] url`` (one Redis for the outbox and everything else).
KEYS: dict[str, tuple[str, str, str]] = {
    "redis_url": ("redis", "url", "IVR_REDIS_URL"),
    "ticket_url": ("tickets", "url", "IVR_TICKET_URL"),
    "secret": ("tickets", "secret", "IVR_TICKET_SECRET"),
    "stream_prefix": ("events", "stream_prefix", "IVR_EVENTS_PREFIX"),
    "partitions": ("events", "partitions", "IVR_EVENTS_PARTITIONS"),
    "consumer": ("events", "consumer", "IVR_EVENTS_CONSUMER"),
    "batch_size": ("events", "batch_size", "IVR_EVENTS_BATCH"),
    "batch_max": ("events", "batch_max", "IVR_EVENTS_BATCH_MAX"),
    "per_call_in_flight": ("events", "per_call_in_flight", "IVR_EVENTS_PER_CALL"),
    "concurrency": ("events", "concurrency", "IVR_EVENTS_CONCURRENCY"),
    "retry_budget": ("events", "retry_budget", "IVR_EVENTS_RETRY_BUDGET"),
    "out_of_order_window": ("events", "out_of_order_window", "IVR_EVENTS_OUT_OF_ORDER_WINDOW"),
    "outage_after": ("events", "outage_after", "IVR_EVENTS_OUTAGE_AFTER"),
    "backoff_base": ("events", "backoff_base", "IVR_EVENTS_BACKOFF_BASE"),
    "backoff_max": ("events", "backoff_max", "IVR_EVENTS_BACKOFF_MAX"),
    "request_timeout": ("events", "request_timeout", "IVR_EVENTS_TIMEOUT"),
    "lease_ms": ("events", "lease_ms", "IVR_EVENTS_LEASE_MS"),
    "wait_replicas": ("redis", "wait_replicas", "IVR_REDIS_WAIT_REPLICAS"),
    "wait_timeout_ms": ("redis", "wait_timeout_ms", "IVR_REDIS_WAIT_TIMEOUT_MS"),
    "failover": ("events", "failover", "IVR_EVENTS_FAILOVER"),
    "owner_lease_ms": ("events", "owner_lease_ms", "IVR_EVENTS_OWNER_LEASE_MS"),
}


@dataclass(frozen=True, slots=True)
class EventsConfig:
    redis_url: str = ""
    ticket_url: str = ""  # e.g. http://127.0.0.1:8088/v1/events
    secret: str = field(default="", repr=False)  # HMAC-SHA256 key of the ticket backend
    stream_prefix: str = "ivr:events"
    partitions: int = 4
    consumer: str = ""
    batch_size: int = 100  # entries read from a partition at once
    batch_max: int = 100  # events per POST (1 = one event per POST to ticket_url)
    per_call_in_flight: int = 1  # events of one call per batch request (1 = strict)
    concurrency: int = 64  # calls delivered at once per partition
    # An event the backend cannot take *now* (5xx, 408, 429, 401/403, timeout, refused,
    # out_of_order) is retried until it has failed for this long (s), then dead-lettered;
    # one the backend rejects as wrong (other 4xx, invalid, conflict) is dead-lettered
    # at once.
    retry_budget: float = 86400.0
    # An event the backend answers 409 out_of_order (it lacks an earlier event of the
    # call) is retried for this long (s) — a real race settles sooner — with its call
    # set aside so the partition's other calls flow; then it is dead-lettered, and the
    # call's later events follow it (blocked).
    out_of_order_window: float = 60.0
    # Requests failing with no success for this long (s) = a backend outage: logged at
    # error level, gauge events.pusher.outage, shown by `ivr events status`.
    outage_after: float = 10.0
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    request_timeout: float = 5.0
    lease_ms: int = 5000
    # A batch of call events counts as stored (its futures resolve) only once this many
    # replicas have it (Redis WAIT on the writing connection): 0 = the primary's word
    # (with appendfsync always: on its disk).  1+ with Sentinel: an acknowledged event
    # survives the primary's loss (docs/scale.md "Redis").
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    # Several bridges serve one Asterisk (ivr/failover, docs/scale.md): one owns its call
    # events under a fenced lease of owner_lease_ms, the others are hot standbys.
    failover: bool = False
    owner_lease_ms: int = 3000

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode("utf-8")

    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    def require(self, *names: str) -> EventsConfig:
        """Check that each named setting is set; raise ConfigError naming the first one."""
        for name in names:
            if not getattr(self, name):
                section, key, env = KEYS[name]
                raise ConfigError(
                    f"event pipeline setting [{section}] {key} is not set (settings file or "
                    f"environment {env}) / 未配置事件推送参数 [{section}] {key}"
                    f"（配置文件或环境变量 {env}）"
                )
        if not 1 <= self.partitions <= 1024:
            raise ConfigError(f"event pipeline setting [events] partitions must be 1..1024, "
                              f"got {self.partitions}")
        if self.per_call_in_flight < 1:
            raise ConfigError("event pipeline setting [events] per_call_in_flight must be >= 1")
        if not self.retry_budget > 0:
            raise ConfigError(f"event pipeline setting [events] retry_budget must be > 0 "
                              f"seconds, got {self.retry_budget} / 重试时限必须大于 0 秒")
        if not self.out_of_order_window > 0:
            raise ConfigError(f"event pipeline setting [events] out_of_order_window must be "
                              f"> 0 seconds, got {self.out_of_order_window} "
                              f"/ 乱序重试时限必须大于 0 秒")
        if not self.outage_after >= 0:
            raise ConfigError(f"event pipeline setting [events] outage_after must be >= 0 "
                              f"seconds, got {self.outage_after} / 故障判定时间不能为负")
        if not 300 <= self.owner_lease_ms <= 600_000:
            raise ConfigError(f"event pipeline setting [events] owner_lease_ms must be "
                              f"300..600000, got {self.owner_lease_ms} / 接管租期设置无效")
        if not 0 < self.backoff_base <= self.backoff_max:
            raise ConfigError(
                f"event pipeline settings [events] backoff_base/backoff_max must be "
                f"0 < backoff_base <= backoff_max, got {self.backoff_base}/{self.backoff_max}"
                " / 退避时间设置无效")
        return self

    def with_(self, **changes: Any) -> EventsConfig:
        return replace(self, **changes)
