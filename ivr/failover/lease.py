"""The owner lease of one Asterisk server's call events, fenced (Redis Lua scripts).

``{prefix}:owner:{server}:lease`` = ``consumer/token`` (PX ``lease_ms``): who owns the
server's call events; ``…:fence``: the fencing token, incremented by every acquisition
(never reset while Redis keeps its data).  The owner's outbox writes only while the fence
still holds its token (:meth:`ivr.events.outbox.Outbox.guard`), so a paused owner that
lost its lease writes nothing once another bridge took over.  ``…:pos`` is the hash of
how far the owner's stored events go (written by the outbox with the events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ivr.events.keys import Keys

# KEYS: lease, fence, pos; ARGV: consumer, lease ms.  Free lease (or expired): take it
# with a new token; returns {token, pos fields...} or {0}.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. t, 'PX', ARGV[2])
local out = {t}
local pos = redis.call('HGETALL', KEYS[3])
for i = 1, #pos do out[#out + 1] = pos[i] end
return out
"""

# KEYS: lease, fence; ARGV: consumer, token, lease ms.  Renewed only while the token is
# the fence's (a lease that merely lapsed with nobody taking it is kept).
_RENEW = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
local mine = ARGV[1] .. '/' .. ARGV[2]
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= mine then
  return 0
end
redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
return 1
"""

# KEYS: lease; ARGV: consumer/token.  Give the lease up (clean stop): a standby takes it
# at once.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Acquired:
    token: int
    positions: dict[str, str]  # the pos hash when it was taken


class OwnerLease:
    def __init__(self, redis: aioredis.Redis, keys: Keys, server: str, consumer: str,
                 lease_ms: int) -> None:
        self.redis = redis
        self.server = server
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.lease_key = keys.owner(server, "lease")
        self.fence_key = keys.owner(server, "fence")
        self.pos_key = keys.owner(server, "pos")
        self.token = 0
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> Acquired | None:
        res: Any = await self._acquire(keys=[self.lease_key, self.fence_key, self.pos_key],
                                       args=[self.consumer, self.lease_ms])
        token = int(res[0])
        if not token:
            return None
        self.token = token
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in res[1:]]
        return Acquired(token, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def renew(self) -> bool:
        if not self.token:
            return False
        ok = int(await self._renew(keys=[self.lease_key, self.fence_key],
                                   args=[self.consumer, self.token, self.lease_ms]))
        if not ok:
            self.token = 0
        return bool(ok)

    async def release(self) -> None:
        if self.token:
            await self._release(keys=[self.lease_key], args=[f"{self.consumer}/{self.token}"])
            self.token = 0

    async def owner(self) -> str | None:
        raw = await self.redis.get(self.lease_key)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text.rsplit("/", 1)[0]

    async def positions(self) -> dict[str, str]:
        raw: Any = await self.redis.hgetall(self.pos_key)
        return {(k.decode() if isinstance(k, bytes) else str(k)):
                (v.decode() if isinstance(v, bytes) else str(v)) for k, v in raw.items()}
