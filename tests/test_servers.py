"""Several Asterisk servers in one application ([[asterisk]]): one bridge each, call ids
qualified by the server's system name (their Linkedids collide), tickets, events and
service-level records that say which server and add up; bad settings stop at start."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ivr.agents.levels_store import read_window
from ivr.ami.client import AMISettings
from ivr.app import BRIDGE, PIPELINE, SERVERS, AppOptions, build_app, running
from ivr.config import AsteriskServer, Settings, check_servers, load_settings
from ivr.demo import SIM_AMI_SECRET, SIM_AMI_USER
from ivr.errors import ConfigError
from ivr.events.builder import qualify
from ivr.events.levels import LevelRecord
from ivr.events.outbox import keys_for, read_status
from ivr.redisproc import free_port
from ivr.sim.callers import CallerScript
from ivr.sim.emulator import Emulator, EmulatorConfig
from ivr.ticketsink.server import TicketSink

FAST = AMISettings(ping_interval=0)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ivr.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_asterisk_tables_are_read(tmp_path: Path) -> None:
    (tmp_path / "east.secret").write_text("s2\n")
    settings = load_settings(_write(tmp_path, """
[[asterisk]]
name = "west"
host = "10.0.0.1"
secret = "s1"
agi_port = 4601

[[asterisk]]
name = "east"
host = "10.0.0.2"
port = 5039
secret_file = "east.secret"
agi_port = 4602
"""), env={})
    assert [(s.name, s.host, s.port, s.secret, s.agi_port) for s in settings.servers] == [
        ("west", "10.0.0.1", 5038, "s1", 4601), ("east", "10.0.0.2", 5039, "s2", 4602)]
    one = settings.for_server(settings.servers[1])
    assert (one.ami_host, one.ami_port, one.ami_secret, one.agi_port) == (
        "10.0.0.2", 5039, "s2", 4602)
    assert "s1" not in repr(settings) and "s2" not in repr(settings)
    # without [[asterisk]], [ami] is the one server, unnamed (call id = Linkedid)
    plain = load_settings(env={"IVR_AMI_HOST": "10.9.9.9"})
    assert [(s.name, s.host) for s in plain.servers] == [("", "10.9.9.9")]
    assert qualify("", "17.1") == "17.1" and qualify("west", "17.1") == "west-17.1"
    assert qualify("west", "west-17.1") == "west-17.1"  # asterisk.conf systemname already


@pytest.mark.parametrize(("text", "message"), [
    ('[[asterisk]]\nname="a"\nhost="h"\nsecret="x"\nagi_port=1\n'
     '[[asterisk]]\nname="b"\nhost="H"\nsecret="x"\nagi_port=2\n', "named twice"),
    ('[[asterisk]]\nname="a"\nhost="h1"\nsecret="x"\nagi_port=1\n'
     '[[asterisk]]\nname="a"\nhost="h2"\nsecret="x"\nagi_port=2\n', "the system name 'a'"),
    ('[[asterisk]]\nname="a"\nhost="h1"\nsecret="x"\nagi_port=1\n'
     '[[asterisk]]\nname="b"\nhost="h2"\nsecret="x"\nagi_port=1\n', "share the FastAGI port"),
    ('[[asterisk]]\nhost="h1"\nsecret="x"\n', "system name"),
    ('[[asterisk]]\nname="a b"\nsecret="x"\n', "system name"),
    ('[[asterisk]]\nname="a"\nsecret="x"\nsecret_file="f"\n', "not both"),
    ('[[asterisk]]\nname="a"\nport="5038"\n', "port"),
    ('[[asterisk]]\nname="a"\nhots="h"\n', "unknown setting 'hots'"),
    ('asterisk = 3\n', "array of tables"),
])
def test_bad_server_lists_stop_at_start(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), env={})


def test_server_without_secret_stops_the_application(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, '[[asterisk]]\nname="a"\nagi_port=1\n'
                                              '[[asterisk]]\nname="b"\nhost="h"\n'
                                              'secret="x"\n'), env={})
    with pytest.raises(ConfigError, match="'a': missing secret"):
        build_app(replace(settings, redis_url="redis://127.0.0.1:9/0"),
                  AppOptions(pusher=False))
    with pytest.raises(ConfigError, match="share the FastAGI port|named twice"):
        check_servers([AsteriskServer("a", agi_port=7), AsteriskServer("b", agi_port=7)])


async def test_two_asterisks_one_application(tmp_path: Path, redis_url: str) -> None:
    async with Emulator(EmulatorConfig()) as west, Emulator(EmulatorConfig()) as east, \
            TicketSink(b"s3cret") as sink:
        east.pbx.ids.epoch = west.pbx.ids.epoch  # same Linkedids on both servers
        servers = tuple(AsteriskServer(name, "127.0.0.1", emu.ami_port, SIM_AMI_USER,
                                       SIM_AMI_SECRET, free_port())
                        for name, emu in (("west", west), ("east", east)))
        prefix = f"test:servers:{uuid.uuid4().hex[:8]}"
        settings = replace(load_settings(env={}), asterisk=servers, redis_url=redis_url,
                           agi_host="127.0.0.1")
        settings = replace(settings, events=settings.events.with_(
            ticket_url=sink.events_url, secret="s3cret", stream_prefix=prefix))
        app = build_app(settings, AppOptions(watch_s=None, ami=FAST, drain_s=10))
        assert [f.__name__ for f in app.cleanup_ctx][-4:-1] == ["_bridge", "_more_servers",
                                                              "_agents"]
        async with running(app):
            assert app[BRIDGE].settings.ami_port == west.ami_port
            east_parts = app[SERVERS]["east"]
            assert east_parts.bridge.ami.connected and east_parts.pipeline.server == "east"
            assert east_parts.bridge.agi_port == servers[1].agi_port
            handles = []
            for emu, n in ((west, 3), (east, 2)):
                for i in range(n):
                    h = await emu.place_call(CallerScript(number=f"1390000{i:04d}",
                                                          exten="6001", talk_time=None,
                                                          patience=None))
                    handles.append((emu, h))
            assert handles[0][1].channel.linkedid == handles[3][1].channel.linkedid
            for emu, h in handles:
                emu.pbx.request_hangup(h.channel, 16)
                await h.wait()
            async with asyncio.timeout(30):
                await sink.wait_for(lambda store: len(store.tickets) == 5 and all(
                    t.status == "closed" for t in store.tickets.values()))
            assert app[PIPELINE].server == "west"
        tickets = sink.store.tickets
        expected = {qualify("west" if emu is west else "east", h.channel.linkedid)
                    for emu, h in handles}
        assert set(tickets) == expected  # 5 tickets, though two Linkedids are equal
        for cid, t in tickets.items():
            assert t.server == cid.split("-", 1)[0]
            assert [e["seq"] for e in t.events] == list(range(1, len(t.events) + 1))
        assert sorted(t.server or "" for t in tickets.values()).count("west") == 3
        r = aioredis.from_url(redis_url)
        try:
            st = await read_status(r, keys_for(settings.events))
            assert st.events_lost == 0 and st.written == sink.store.applied
            # the service-level records say which server; the figures add up
            rows = await r.xrange(keys_for(settings.events).levels)
            records = [LevelRecord.loads(f[b"l"]) for _, f in rows]
            assert sorted(rec.server for rec in records if rec.type == "call.ended") == [
                "east", "east", "west", "west", "west"]
            now = datetime.now().timestamp()
            agg = await read_window(r, keys_for(settings.events), now - 600, now + 60)
            assert agg.folded == 5 and agg.duplicates == 0  # all five calls, none merged
        finally:
            await r.aclose()


def test_one_server_settings_keep_plain_call_ids() -> None:
    settings = Settings(ami_secret="x")
    assert settings.for_server(settings.servers[0]).ami_secret == "x"


def test_service_levels_add_up_across_servers() -> None:
    """Two servers' calls with the same Linkedid: counted apart, summed per queue."""
    from ivr.agents.levels import LevelsAggregator

    agg = LevelsAggregator()
    ts = datetime(2026, 12, 7, 10, 0).timestamp()
    for server, waits in (("west", (3.0, 20.0)), ("east", (5.0,))):
        for i, wait in enumerate(waits):
            cid = qualify(server, f"1796000000.{i + 1}")
            agg.fold(LevelRecord(cid, 1, "queue.joined", ts, "hotline", 0.0, server))
            agg.fold(LevelRecord(cid, 2, "agent.connected", ts + wait, "hotline", wait,
                                 server))
            agg.fold(LevelRecord(cid, 3, "call.ended", ts + 60, "", 0.0, server))
    assert agg.offered_by_server == {"west": 2, "east": 1} and agg.duplicates == 0
    (bucket,) = agg.buckets.values()
    assert bucket.offered == 3 and bucket.answered == 3
    # a record written by a single-server bridge (6 elements) still reads
    rec = LevelRecord.loads('["c1",1,"queue.joined",1.0,"hotline",0]')
    assert rec.server == "" and LevelRecord.loads(
        LevelRecord("c", 1, "call.ended", 1.0, "", 0.0, "west").dumps()).server == "west"
