"""Every mutating API action, recorded in the Redis stream ``{prefix}:audit`` (who, what,
on what, when, from where, result), capped at about :data:`MAX_ENTRIES` entries.  A
stream, not the dialplan publisher's file log: the API may run in several bridge
processes (issue 13) and all of them append to one record; a dialplan publish is also
in the publisher's own audit log as before."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from ivr.api.auth import Principal

MAX_ENTRIES = 100_000


class AuditLog:
    def __init__(self, redis: aioredis.Redis, prefix: str = "ivr:api",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.key = f"{prefix}:audit"
        self.clock = clock

    async def record(self, who: Principal, action: str, target: str, result: str,
                     address: str = "", detail: str = "") -> None:
        fields = {"at": f"{self.clock():.3f}", "token_id": who.token_id, "role": who.role,
                  "name": who.name, "action": action, "target": target, "result": result,
                  "address": address, "detail": detail[:500]}
        await self.redis.xadd(self.key, fields,  # type: ignore[arg-type]
                              maxlen=MAX_ENTRIES, approximate=True)

    async def recent(self, count: int = 100) -> list[dict[str, Any]]:
        rows: Any = await self.redis.xrevrange(self.key, count=count)
        out = []
        for entry_id, raw in rows:
            rec = {(k.decode() if isinstance(k, bytes) else k):
                   (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items()}
            rec["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            rec["at"] = float(rec.get("at", 0))
            out.append(rec)
        return out
