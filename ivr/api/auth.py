"""Who may do what.

Tokens: ``ivr_<id>_<secret>`` (the secret 32 random bytes, url-safe base64).  Redis keeps
only its SHA-256 (a random 256-bit secret needs no slow hash) with the role, the agent
interface (role ``agent``) and a name, in the hash ``{prefix}:tokens`` (field: the id).
A revoked token is deleted: it fails like an unknown one.  Tokens travel only in the
``Authorization: Bearer`` header, never in a URL.

Roles and permissions: each route declares one permission (:mod:`ivr.api.http`); a role
holds a set of them (:data:`ROLE_PERMISSIONS`).  An agent acts only on its own member
and calls (checked by the handlers with :meth:`Principal.may_act_for`).

Repeated failed authentication from one address is slowed down: after
:data:`FAILURES_ALLOWED` failures within :data:`FAILURE_WINDOW_S` the address gets 429
(with ``Retry-After``) until the window has passed, whatever it sends; at most
:data:`MAX_ADDRESSES` addresses are remembered (the oldest forgotten first).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

ROLES = ("agent", "supervisor", "admin")

READ = frozenset({"health.read", "queues.read", "agents.read", "stats.read", "calls.read",
                  "supervision.read", "quality.self"})
# supervisors on the line and quality review (ivr/supervision, ivr/quality): supervisors
# and admins; the staff policy says which queues each one supervises or reviews
STAFF = frozenset({"supervision.act", "quality.review"})
# missed-call callbacks (ivr/callbacks): list them, cancel one — supervisors and admins
CALLBACKS = frozenset({"callbacks.read", "callbacks.act"})
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "agent": READ | {"agents.act_self", "calls.hangup", "calls.transfer", "calls.threeway",
                     "calls.record"},
    "supervisor": READ | STAFF | CALLBACKS | {"agents.act_self", "agents.act_any",
                                              "dialplans.read", "events.read", "audit.read",
                                              "calls.hangup", "calls.transfer",
                                              "calls.threeway", "calls.record"},
    "admin": READ | STAFF | CALLBACKS | {"agents.act_self", "agents.act_any", "dialplans.read",
                     "dialplans.publish", "events.read", "events.replay", "audit.read",
                     "calls.hangup", "calls.transfer", "calls.threeway", "calls.record",
                     "prompts.read", "prompts.import"},
}
PERMISSIONS = frozenset().union(*ROLE_PERMISSIONS.values())

TOKEN_RE = re.compile(r"ivr_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 60.0
MAX_ADDRESSES = 10_000


class TokenInputError(ValueError):
    """A bad role, agent interface or name for a new token."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    token_id: str
    role: str
    name: str
    agent: str | None = None  # the agent's interface (role agent)

    def can(self, permission: str) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def may_act_for(self, interface: str) -> bool:
        """An agent acts only on its own member; supervisors and admins on anyone."""
        if self.can("agents.act_any"):
            return True
        return self.can("agents.act_self") and self.agent == interface


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    role: str
    name: str
    agent: str | None
    created: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """API tokens in Redis (only their hashes)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "ivr:api",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.key = f"{prefix}:tokens"
        self.clock = clock

    async def create(self, role: str, *, name: str = "", agent: str | None = None
                     ) -> tuple[str, TokenInfo]:
        """A new token: ``(token, info)``; the token is returned once and not kept."""
        from ivr.agents.errors import InvalidAgent
        from ivr.agents.service import check_interface

        if role not in ROLES:
            raise TokenInputError(f"unknown role {role!r}: one of {', '.join(ROLES)} / "
                                  f"角色 {role!r} 无效")
        if role == "agent":
            if not agent:
                raise TokenInputError("an agent token needs --agent INTERFACE (e.g. "
                                      "PJSIP/1001) / 坐席令牌需要指定 --agent 接口")
            try:
                check_interface(agent, "agent interface")
            except InvalidAgent as exc:
                raise TokenInputError(str(exc)) from exc
        elif agent:
            raise TokenInputError("--agent is only for role agent / 仅坐席角色可指定 --agent")
        if len(name) > 64 or any(ord(c) < 32 for c in name):
            raise TokenInputError("name: at most 64 characters, no control characters / "
                                  "名称至多 64 个字符")
        token_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        info = TokenInfo(token_id, role, name, agent or None, round(self.clock(), 3))
        record = {**info.to_json(), "hash": _digest(secret)}
        await self.redis.hset(self.key, token_id, json.dumps(record, ensure_ascii=False))
        return f"ivr_{token_id}_{secret}", info

    async def revoke(self, token_id: str) -> bool:
        return bool(await self.redis.hdel(self.key, token_id))

    async def list(self) -> list[TokenInfo]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.key)
        out = [_info(json.loads(v)) for v in raw.values()]
        return sorted(out, key=lambda t: (t.created, t.id))

    async def check(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; None otherwise."""
        m = TOKEN_RE.fullmatch(token)
        if m is None:
            return None
        raw = await self.redis.hget(self.key, m.group(1))
        if raw is None:
            return None
        rec = json.loads(raw)
        if not hmac.compare_digest(str(rec.get("hash", "")), _digest(m.group(2))):
            return None
        info = _info(rec)
        return Principal(info.id, info.role, info.name, info.agent)

    async def principal_of(self, token_id: str) -> Principal | None:
        """The principal of a stored token by its id (a browser session's token), None
        once it is revoked."""
        raw = await self.redis.hget(self.key, token_id) if token_id else None
        if raw is None:
            return None
        info = _info(json.loads(raw))
        return Principal(info.id, info.role, info.name, info.agent)


def _info(rec: dict[str, Any]) -> TokenInfo:
    return TokenInfo(str(rec["id"]), str(rec["role"]), str(rec.get("name", "")),
                     rec.get("agent") or None, float(rec.get("created", 0)))


class FailureLimiter:
    """Failed authentications per address in a sliding window; bounded memory."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window_s: float = FAILURE_WINDOW_S,
                 max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _recent(self, address: str) -> list[float]:
        now = self.clock()
        times = [t for t in self._seen.get(address, ()) if now - t < self.window_s]
        if times:
            self._seen[address] = times
        else:
            self._seen.pop(address, None)
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        times = self._recent(address)
        if len(times) < self.allowed:
            return 0.0
        return max(0.0, times[-self.allowed] + self.window_s - self.clock())

    def failed(self, address: str) -> None:
        times = self._recent(address)
        times.append(self.clock())
        self._seen[address] = times[-self.allowed:]
        self._seen.move_to_end(address)
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
