"""The event outbox on a highly available Redis: a Sentinel-managed primary that is
SIGKILLed in the middle of a run (no acknowledged event lost), and a real three-primary
Redis Cluster (the whole pipeline delivers; a cluster missing slots or a prefix without a
hash tag is refused at start).  Every server is a real ``redis-server`` on a free port."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from ivr.ami.messages import Event
from ivr.errors import ConfigError
from ivr.events.config import EventsConfig
from ivr.events.outbox import keys_for, read_status
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import Pusher
from ivr.redisconn import cluster_problems, connect, kind_of
from ivr.redisproc import RedisServer, free_port
from ivr.ticketsink.server import TicketSink
from tests.test_events_delivery import (
    SECRET,
    actual_tickets,
    config,
    expected_tickets,
    interleaved_ami,
)

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------- URLs


def test_urls_name_their_kind_and_bad_ones_are_refused() -> None:
    assert kind_of("redis://127.0.0.1:6379/0") == "server"
    assert kind_of("unix:///run/redis.sock") == "server"
    assert kind_of("redis+sentinel://a:26379,b:26379/ivr") == "sentinel"
    assert kind_of("redis+cluster://a:7000,b:7001") == "cluster"
    for url, words in [
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/ivr/x", "not a number"),
        ("redis+sentinel://127.0.0.1/ivr", "not host:port"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7000", "listed twice"),
        ("redis+cluster://127.0.0.1:7000/1", "only database 0"),
        ("redis+cluster://:s3cret@", "no host:port"),
    ]:
        with pytest.raises(ConfigError, match=words) as info:
            connect(url)
        assert "s3cret" not in str(info.value)


# ----------------------------------------------------------------------- helpers


async def _ready_replication(port: int, replicas: int) -> None:
    r = connect(f"redis://127.0.0.1:{port}/0")
    try:
        async with asyncio.timeout(20):
            while True:
                info = await r.info("replication")
                up = sum(1 for k, v in info.items() if k.startswith("slave")
                         and isinstance(v, dict) and v.get("state") == "online")
                if up >= replicas:
                    return
                await asyncio.sleep(0.05)
    finally:
        await r.aclose()


async def _feed(pipe: CallEventPipeline, ami: list[Event]) -> None:
    for ev in ami:
        await pipe.on_ami_event(ev)
    await pipe.flush()


async def _deliver(cfg: EventsConfig, sink: TicketSink, total: int) -> None:
    async with Pusher(cfg) as pusher, asyncio.timeout(40):
        await sink.wait_for(lambda st: st.applied >= total)
        await pusher.wait_idle()


# ----------------------------------------------------------------------- Sentinel


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[tuple[RedisServer, list[RedisServer], str]]:
    """A primary with two replicas and three Sentinels (quorum 2) watching it."""
    primary = RedisServer(tmp_path / "primary", persist=True)
    replicas = [RedisServer(tmp_path / f"replica{i}", persist=True,
                            extra_args=("--replicaof", "127.0.0.1", "0")) for i in range(2)]
    sentinels: list[RedisServer] = []
    started: list[RedisServer] = []
    try:
        primary.start()
        started.append(primary)
        for rep in replicas:
            rep.extra_args = ("--replicaof", "127.0.0.1", str(primary.port))
            rep.start()
            started.append(rep)
        for i in range(3):
            folder = tmp_path / f"sentinel{i}"
            folder.mkdir()
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"sentinel monitor ivrha 127.0.0.1 {primary.port} 2\n"
                "sentinel down-after-milliseconds ivrha 400\n"
                "sentinel failover-timeout ivrha 4000\n"
                "sentinel parallel-syncs ivrha 2\n", encoding="utf-8")
            s = RedisServer(folder, config_file=conf, extra_args=("--sentinel",),
                            ready_marker="+monitor master")
            s.start()
            started.append(s)
            sentinels.append(s)
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/ivrha"
        yield primary, replicas, url
    finally:
        for server in reversed(started):
            server.stop(kill=True)


@pytest.mark.timeout(120)
async def test_sentinel_failover_loses_no_acknowledged_event(
        traces: Path, sentinel_set: tuple[RedisServer, list[RedisServer], str]) -> None:
    primary, replicas, url = sentinel_set
    await _ready_replication(primary.port, 2)
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        cfg = config(url, sink, wait_replicas=1, wait_timeout_ms=2000)
        async with CallEventPipeline(config=cfg) as pipe:
            half = len(ami) // 2
            await _feed(pipe, ami[:half])
            acknowledged = pipe.outbox.written
            assert acknowledged > 0
            primary.stop(kill=True)  # SIGKILL: no goodbye to the replicas or Sentinels
            # the rest is written while the Sentinels elect a replica and after it
            await _feed(pipe, ami[half:])
            assert pipe.outbox.write_errors > 0  # the failover really interrupted writes
        # the new primary is one of the replicas, and it has every acknowledged event
        r = connect(url)
        try:
            port = int((await r.connection_pool.get_master_address())[1])  # type: ignore[attr-defined]
            assert port in {rep.port for rep in replicas}
            status = await read_status(r, keys_for(cfg))
        finally:
            await r.aclose()
        assert status.written >= total  # a batch retried after the kill may be written twice
        await _deliver(cfg, sink, total)
        assert actual_tickets(sink) == expected  # every event, each applied once
        assert sink.store.rejected == 0


# ----------------------------------------------------------------------- Cluster


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10,000) is free too."""
    while True:
        port = free_port()
        if port <= 55535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[str]:
    """Three primaries (no replicas) serving all 16,384 slots."""
    nodes = [RedisServer(tmp_path / f"node{i}", port=_cluster_port(), extra_args=(
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000")) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        create = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
            "--cluster-replicas", "0", "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(create.communicate(), 30)
        assert create.returncode == 0, out.decode()
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        r = connect(url)
        try:
            async with asyncio.timeout(20):
                # the nodes' gossip is not observable but by asking: poll until every
                # node agrees that all slots are served
                while await cluster_problems(r):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await r.aclose()
        yield url
    finally:
        for n in nodes:
            n.stop(kill=True)


def _cluster_cfg(url: str, sink: TicketSink, **kw: Any) -> EventsConfig:
    """The delivery tests' settings, with a hash-tagged prefix."""
    tagged: dict[str, Any] = {"stream_prefix": f"{{cl:{uuid.uuid4().hex[:8]}}}"}
    return config(url, sink, **(tagged | kw))


@pytest.mark.timeout(120)
async def test_the_pipeline_delivers_on_a_three_primary_cluster(
        traces: Path, cluster: str) -> None:
    ami = interleaved_ami(traces, 20)
    expected = expected_tickets(ami)
    total = sum(len(t["events"]) for t in expected.values())
    async with TicketSink(SECRET) as sink:
        cfg = _cluster_cfg(cluster, sink)
        async with CallEventPipeline(config=cfg) as pipe:
            await _feed(pipe, ami)
            assert pipe.outbox.written == total
        await _deliver(cfg, sink, total)
        assert actual_tickets(sink) == expected
        r = connect(cluster)
        try:
            assert isinstance(r, RedisCluster)  # the cluster client, not a single server's
            status = await read_status(r, keys_for(cfg))
        finally:
            await r.aclose()
        assert (status.written, status.delivered, status.undelivered) == (total, total, 0)


async def test_a_cluster_refuses_an_untagged_prefix_and_wait(cluster: str) -> None:
    async with TicketSink(SECRET) as sink:
        with pytest.raises(ConfigError, match="hash tag"):
            async with CallEventPipeline(config=_cluster_cfg(cluster, sink,
                                                             stream_prefix="ivr:events")):
                pass
        with pytest.raises(ConfigError, match="wait_replicas"):
            async with CallEventPipeline(config=_cluster_cfg(cluster, sink, wait_replicas=1)):
                pass


async def test_a_cluster_missing_slots_is_refused_at_start(cluster: str) -> None:
    first = cluster.removeprefix("redis+cluster://").split(",")[0]
    node = connect(f"redis://{first}/0")
    try:
        owned = [s for s in await node.execute_command("CLUSTER", "SLOTS")
                 if int(s[2][1]) == int(first.rsplit(":", 1)[1])]
        lo, hi = int(owned[0][0]), int(owned[0][1])
        await node.execute_command("CLUSTER", "DELSLOTSRANGE", lo, hi)
    finally:
        await node.aclose()
    async with TicketSink(SECRET) as sink:
        with pytest.raises(ConfigError, match="not serving every slot"):
            async with CallEventPipeline(config=_cluster_cfg(cluster, sink)):
                pass



async def test_job_queues_tokens_and_audit_work_on_the_cluster(cluster: str) -> None:
    """What else keeps state in Redis: the recordings' and callbacks' leased jobs (keys
    under the tagged ``[events] stream_prefix``: one slot per script), the API's tokens
    and audit trail (one key per command)."""
    from ivr.api.audit import AuditLog
    from ivr.api.auth import TokenStore
    from ivr.jobs import LeasedJobs

    r = connect(cluster)
    try:
        prefix = f"{{cl:{uuid.uuid4().hex[:8]}}}:recordings"
        jobs = LeasedJobs(r, f"{prefix}:jobs", f"{prefix}:due", f"{prefix}:versions")
        version = await jobs.replace("job-1", None, '{"call": "c1"}', due=100.0)
        assert version == 1
        assert await jobs.claim(now=50.0, lease_s=30.0) is None  # not due yet
        claimed = await jobs.claim(now=100.0, lease_s=30.0)
        assert claimed == ("job-1", '{"call": "c1"}', 1)
        assert await jobs.due_at("job-1") == 130.0  # leased: due again after the lease
        assert await jobs.replace("job-1", 0, "{}", due=None) is None  # stale version
        assert await jobs.get("job-1") == ('{"call": "c1"}', 1)
        await jobs.remove("job-1")
        assert await jobs.all() == {}

        tokens = TokenStore(r, "ivr:api")
        token, info = await tokens.create("supervisor", name="班长")
        who = await tokens.check(token)
        assert who is not None and who.role == "supervisor"
        audit = AuditLog(r, "ivr:api")
        await audit.record(who, "agents.pause", "PJSIP/1001", "ok")
        assert [e["action"] for e in await audit.recent()] == ["agents.pause"]
        assert await tokens.revoke(info.id)
    finally:
        await r.aclose()
