"""One way to open a Redis connection from a ``[redis] url``: a single server, a
Sentinel-managed primary, or a Redis Cluster.

* ``redis://[[user]:password@]host:port/db``, ``rediss://…``, ``unix:///path?db=0`` — one
  server (``redis.asyncio.from_url``).
* ``redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>[/<db>]`` — the
  primary that the Sentinels at those addresses name for ``<service>``; after a failover
  the next command that reconnects asks them again (redis-py's ``SentinelConnectionPool``),
  so a write that failed during the failover is retried by its owner (the outbox keeps
  events in memory and retries) against the new primary.  The password is the primary's
  (and the replicas'); a Sentinel's own password goes in ``?sentinel_password=…``.
* ``redis+cluster://[[user]:password@]host:port[,host:port…]`` — a Redis Cluster, from
  any of its nodes.  The keys one Lua script touches must share a hash slot: every key
  prefix used on a cluster must carry a hash tag (``{ivr:events}``; see
  :func:`require_hash_tag`), which also decides the primary that keeps it — one outbox per
  Asterisk server, each with its own tag, spreads them over the primaries.  At start
  :func:`check_cluster` refuses a cluster that is not serving all 16,384 slots.

Nothing here runs a command at import or construction: a connection is made by the first
command, as with ``from_url``.
"""

from __future__ import annotations

import re
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from ivr.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
ALL_SLOTS = 16384
_HASH_TAG = re.compile(r"\{[^{}]+\}")


def kind_of(url: str) -> str:
    """``"server"``, ``"sentinel"`` or ``"cluster"``."""
    scheme = urlsplit(url).scheme
    return {SENTINEL_SCHEME: "sentinel", CLUSTER_SCHEME: "cluster"}.get(scheme, "server")


def _bad(url: str, what: str) -> ConfigError:
    return ConfigError(f"[redis] url {_safe(url)!r}: {what} / Redis 地址无效：{what}")


def _safe(url: str) -> str:
    """The URL with any password replaced (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _hosts(url: str, netloc_hosts: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for item in netloc_hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(url, f"{item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if len(set(out)) != len(out):
        raise _bad(url, "an address is listed twice")
    return out


def _split(url: str) -> tuple[str | None, str | None, list[tuple[str, int]], str, dict[str, str]]:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user: str | None = None
    password: str | None = None
    if userinfo:
        u, sep, p = userinfo.partition(":")
        user = unquote(u) or None
        password = unquote(p) if sep else None
    if not hosts:
        raise _bad(url, "no host:port")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return user, password, _hosts(url, hosts), parts.path, query


class _SentinelPrimary(aioredis.Redis):
    """The primary's client; closing it closes the clients of the Sentinels it asks."""

    sentinel_clients: list[aioredis.Redis] = []

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinel_clients:
            await client.aclose()


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """A client for ``url`` (see the module's docstring); ``kwargs`` go to the client
    (timeouts, ``decode_responses`` …).  Raises ConfigError for a malformed URL."""
    kind = kind_of(url)
    if kind == "server":
        return aioredis.from_url(url, **kwargs)
    user, password, hosts, path, query = _split(url)
    if kind == "sentinel":
        segments = [s for s in path.split("/") if s]
        if not segments or len(segments) > 2:
            raise _bad(url, "give the service name after the addresses: "
                            "redis+sentinel://host:port,host:port/<service>[/<db>]")
        service = unquote(segments[0])
        db = 0
        if len(segments) == 2:
            if not segments[1].isdigit():
                raise _bad(url, f"database {segments[1]!r} is not a number")
            db = int(segments[1])
        sentinel_kwargs: dict[str, Any] = {}
        if "sentinel_password" in query:
            sentinel_kwargs["password"] = query["sentinel_password"]
        for key in ("socket_timeout", "socket_connect_timeout"):
            if key in kwargs:
                sentinel_kwargs[key] = kwargs[key]
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs or None)
        primary = sentinel.master_for(service, redis_class=_SentinelPrimary, db=db,
                                      username=user, password=password, **kwargs)
        primary.sentinel_clients = list(sentinel.sentinels)
        return cast(aioredis.Redis, primary)
    if path not in ("", "/"):
        raise _bad(url, "a Redis Cluster has only database 0: no /<db> after the addresses")
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts],
                           username=user, password=password, **kwargs)
    # RedisCluster speaks the commands this project uses (single-slot scripts, streams,
    # hashes) with the same method names; it is not a subclass of Redis, hence the cast.
    return cast(aioredis.Redis, cluster)


def require_hash_tag(url: str, prefix: str, setting: str) -> None:
    """On a cluster, a key prefix whose keys one script uses together needs a hash tag."""
    if kind_of(url) == "cluster" and not _HASH_TAG.search(prefix):
        raise ConfigError(
            f"{setting} = {prefix!r}: on a Redis Cluster the prefix needs a hash tag so the "
            f"keys one script touches share a slot, e.g. '{{{prefix}}}' / 在 Redis 集群上，"
            f"{setting} 需要带哈希标签（如 '{{{prefix}}}'），使同一脚本的键位于同一槽位")


async def cluster_problems(client: aioredis.Redis) -> list[str]:
    """Each node's complaint about the cluster (empty: every node sees every slot served)."""
    infos = await cast(RedisCluster, client).cluster_info(target_nodes=RedisCluster.ALL_NODES)
    problems: list[str] = []
    for node, info in sorted(cast(dict[str, dict[str, Any]], infos).items()):
        state = info.get("cluster_state")
        assigned = int(info.get("cluster_slots_assigned", 0))
        ok = int(info.get("cluster_slots_ok", 0))
        if state != "ok" or assigned != ALL_SLOTS or ok != ALL_SLOTS:
            problems.append(f"{node}: state {state}, {assigned} of {ALL_SLOTS} slots "
                            f"assigned, {ok} ok")
    return problems


async def check_cluster(client: aioredis.Redis, url: str) -> None:
    """Refuse to start on a cluster that does not serve every slot, as any of its nodes
    sees it (a split brain or an unfinished set-up would lose writes to missing slots)."""
    if kind_of(url) != "cluster":
        return
    problems = await cluster_problems(client)
    if problems:
        raise ConfigError(
            f"[redis] url {_safe(url)!r}: the Redis Cluster is not serving every slot "
            f"({'; '.join(problems)}): fix it (redis-cli --cluster check/fix) before "
            f"starting / Redis 集群未覆盖全部 {ALL_SLOTS} 个槽位，请先修复集群")
