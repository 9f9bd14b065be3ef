"""AMIClient against a peer on 127.0.0.1 that answers with real Asterisk 20 bytes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ivr.ami.backoff import Backoff
from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.errors import (
    AMIActionFailed,
    AMIActionNotRetried,
    AMIActionTimeout,
    AMIAuthError,
    AMIConnectionError,
    AMIEncodeError,
)
from ivr.ami.messages import Action, Event, EventList, Response
from ivr.errors import ConfigError
from ivr.metrics import METRICS

from .ami_peer import AMIPeer, load_library, split_server_raw
from .conftest import TRACES

FAST = AMISettings(
    ping_interval=0,
    action_timeout=5,
    backoff=Backoff(initial=0.01, factor=2, cap=0.05, jitter=0.5),
)


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """``ivr.cli.main`` calls ``setup_logging``, which replaces the root handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def settings(**kw: object) -> AMISettings:
    base = {k: getattr(FAST, k) for k in FAST.__dataclass_fields__}
    base.update(kw)
    return AMISettings(**base)  # type: ignore[arg-type]


def make(peer: AMIPeer, *, secret: str = "ivrsecret", **kw: object) -> AMIClient:
    return AMIClient("127.0.0.1", peer.port, username="ivr", secret=secret, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def peer() -> AsyncIterator[AMIPeer]:
    async with AMIPeer() as p:
        yield p


async def next_action(peer: AMIPeer, name: str) -> tuple[int, Action]:
    while True:
        idx, action = await peer.received.get()
        if action.name == name:
            return idx, action


# -- login ------------------------------------------------------------------------------


async def test_plain_login_and_ping(peer: AMIPeer) -> None:
    async with make(peer, settings=settings(auth="plain")) as ami:
        assert ami.connected
        assert ami.banner is not None and ami.banner.version == "9.0.0"
        reply = await ami.send_action("Ping")
        assert isinstance(reply, Response) and reply.success
        assert reply["Ping"] == "Pong"
    login = peer.conns[0].actions[0]
    assert login.name == "Login" and login["Secret"] == "ivrsecret"
    assert peer.conns[0].actions[-1].name == "Logoff"  # close() logs off


async def test_md5_challenge_login(peer: AMIPeer) -> None:
    async with make(peer, settings=settings(auth="md5")) as ami:
        assert ami.connected
    challenge, login = peer.conns[0].actions[:2]
    assert challenge.name == "Challenge" and challenge["AuthType"] == "md5"
    assert login.name == "Login" and login["AuthType"] == "md5"
    assert "Secret" not in login and len(login["Key"]) == 32


@pytest.mark.parametrize("auth", ["plain", "md5"])
async def test_wrong_secret_raises_auth_error(peer: AMIPeer, auth: str) -> None:
    ami = make(peer, secret="wrong", settings=settings(auth=auth))
    with pytest.raises(AMIAuthError, match="Authentication failed"):
        await ami.start()
    assert not ami.connected
    assert len(peer.conns) == 1  # a refused first login is not retried
    with pytest.raises(AMIConnectionError):
        await ami.send_action("Ping")


# -- actions ----------------------------------------------------------------------------


async def test_concurrent_actions_are_matched_by_action_id(peer: AMIPeer) -> None:
    async with make(peer, settings=FAST) as ami:
        results = await asyncio.gather(
            ami.send_action("CoreSettings"),
            ami.send_action("CoreStatus"),
            ami.send_action("Command", {"Command": "core show version"}),
            ami.send_action("QueueStatus", {"Queue": "hotline"}),
            ami.send_action("Getvar", {"Variable": "GLOBAL(FASTAGI)"}),
        )
    settings_r, status, version, queue, var = results
    assert isinstance(settings_r, Response) and settings_r["AsteriskVersion"] == "20.20.1"
    assert isinstance(status, Response) and "CoreCurrentCalls" in status
    assert isinstance(version, Response)
    assert version.getall("Output")[0].startswith("Asterisk 20.20.1")
    assert isinstance(queue, EventList) and queue.complete is not None
    assert int(queue.complete["ListItems"]) == len(queue.events) == 2
    assert {e.name for e in queue.events} == {"QueueParams", "QueueMember"}
    assert isinstance(var, Response) and var["Value"] == "agi://127.0.0.1:4573"
    sent = [a.action_id for a in peer.conns[0].actions]
    assert len(sent) == len(set(sent))
    got = [r.action_id for r in results]
    mine = {a.action_id: a.name for a in peer.conns[0].actions}
    assert [mine[g] for g in got if g] == [
        "CoreSettings", "CoreStatus", "Command", "QueueStatus", "Getvar"]


async def test_many_concurrent_actions_each_get_their_own_reply(peer: AMIPeer) -> None:
    async with make(peer, settings=FAST) as ami:
        calls = []
        for i in range(300):
            if i % 3 == 0:
                calls.append(ami.send_action("QueueStatus", {"Queue": "hotline"}))
            elif i % 3 == 1:
                calls.append(ami.send_action("Getvar", {"Variable": "GLOBAL(FASTAGI)"}))
            else:
                calls.append(ami.send_action("Ping"))
        results = await asyncio.gather(*calls)
    sent = {a.action_id: a.name for a in peer.conns[0].actions}
    for i, r in enumerate(results):
        assert r.action_id is not None
        assert sent[r.action_id] == ("QueueStatus", "Getvar", "Ping")[i % 3]
        if i % 3 == 0:
            assert isinstance(r, EventList) and len(r.events) == 2
            assert all(e.action_id == r.action_id for e in r.events)
    assert len({r.action_id for r in results}) == 300


async def test_error_response_returned_or_raised(peer: AMIPeer) -> None:
    async with make(peer, settings=FAST) as ami:
        reply = await ami.send_action("NoSuchAction")
        assert isinstance(reply, Response) and not reply.success
        assert reply.message.startswith("Invalid/unknown command: NoSuchAction")
        with pytest.raises(AMIActionFailed, match="Invalid/unknown command") as info:
            await ami.send_action("NoSuchAction", check=True)
        assert info.value.response.status == "Error"
        with pytest.raises(AMIEncodeError):
            await ami.send_action("Setvar", {"Variable": "X", "Value": "a\r\nAction: Hangup"})


async def test_action_timeout_keeps_connection(peer: AMIPeer) -> None:
    peer.policy = lambda _i, a: "ignore" if a.name == "Getvar" else "reply"
    before = METRICS.get("ami.action.timeout")
    async with make(peer, settings=FAST) as ami:
        with pytest.raises(AMIActionTimeout, match="Getvar"):
            await ami.send_action("Getvar", {"Variable": "GLOBAL(FASTAGI)"}, timeout=0.1)
        assert ami.connected
        assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
    assert METRICS.get("ami.action.timeout") == before + 1
    assert len(peer.conns) == 1


# -- keep-alive, reconnect, on_connect ----------------------------------------------------


async def test_keepalive_detects_silent_peer_and_reconnects(peer: AMIPeer) -> None:
    # First connection: TCP stays open but Asterisk never answers Ping (half-open).
    peer.policy = lambda i, a: "ignore" if (i == 0 and a.name == "Ping") else "reply"
    connects: asyncio.Queue[int] = asyncio.Queue()
    reasons: list[BaseException] = []

    async def on_connect(client: AMIClient) -> None:
        await connects.put(client.connects)

    before = METRICS.get("ami.keepalive.dead")
    ami = make(peer, settings=settings(ping_interval=0.05, ping_timeout=0.1),
               on_connect=on_connect, on_disconnect=lambda _c, r: reasons.append(r))
    async with ami:
        assert await connects.get() == 1
        assert await connects.get() == 2  # declared dead, reconnected
        assert ami.connected
    assert METRICS.get("ami.keepalive.dead") >= before + 1
    assert "declared dead" in str(reasons[0])
    assert any(a.name == "Ping" for a in peer.conns[0].actions)


async def test_reconnect_runs_on_connect_hook_again(peer: AMIPeer) -> None:
    snapshots: asyncio.Queue[EventList] = asyncio.Queue()

    async def rebuild(client: AMIClient) -> None:
        result = await client.send_action("QueueStatus", {"Queue": "hotline"})
        assert isinstance(result, EventList)
        await snapshots.put(result)

    async with make(peer, settings=FAST, on_connect=rebuild) as ami:
        first = await snapshots.get()
        peer.drop()
        second = await snapshots.get()
        assert ami.connects == 2
        assert len(first.events) == len(second.events) == 2
        await ami.wait_connected()
        assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
    assert len(peer.conns) == 2


async def test_connection_lost_during_on_connect_reruns_hook(peer: AMIPeer) -> None:
    # The first hook's QueueStatus makes the peer drop the connection: the hook is
    # cancelled (not left waiting for its own reconnect) and runs again afterwards.
    peer.policy = lambda i, a: "drop" if (i == 0 and a.name == "QueueStatus") else "reply"
    started: list[int] = []
    finished: asyncio.Queue[int] = asyncio.Queue()

    async def rebuild(client: AMIClient) -> None:
        started.append(client.connects)
        await client.send_action("QueueStatus", {"Queue": "hotline"})
        await finished.put(client.connects)

    async with make(peer, settings=FAST, on_connect=rebuild) as ami:
        # start() returned only once a hook run completed.
        assert await finished.get() == 2
        assert started == [1, 2] and ami.connects == 2
        assert finished.empty()


async def test_plain_eof_like_trace_05_fails_pending_and_reconnects() -> None:
    lib = load_library("05-reload-and-shutdown")
    reasons: asyncio.Queue[BaseException] = asyncio.Queue()
    connects: asyncio.Queue[int] = asyncio.Queue()
    async with AMIPeer(lib) as peer:
        ami = make(peer, settings=FAST, on_connect=lambda c: connects.put_nowait(c.connects),
                   on_disconnect=lambda _c, r: reasons.put_nowait(r))
        async with ami:
            assert await connects.get() == 1
            reply = await ami.send_action("Reload", {"Module": "app_queue.so"})
            assert isinstance(reply, Response) and reply.message == "Module Reloaded"
            # `core stop now`: Asterisk closes the socket, no reply and no Shutdown event.
            with pytest.raises(AMIConnectionError, match="went away"):
                await ami.send_action("Command", {"Command": "core stop now"})
            reason = await reasons.get()
            assert isinstance(reason, AMIConnectionError) and "went away" in str(reason)
            assert await connects.get() == 2  # the reconnect loop started
            check = await ami.send_action("ModuleCheck", {"Module": "app_confbridge"})
            assert isinstance(check, Response) and check.success


async def test_shutdown_event_drops_connection_and_reconnects(peer: AMIPeer) -> None:
    connects: asyncio.Queue[int] = asyncio.Queue()
    shutdowns: list[Event] = []
    ami = make(peer, settings=FAST, on_connect=lambda c: connects.put_nowait(c.connects))
    ami.on_event("Shutdown", shutdowns.append)
    async with ami:
        assert await connects.get() == 1
        await peer.push(b"Event: Shutdown\r\nPrivilege: system,all\r\n"
                        b"Shutdown: Uncleanly\r\nRestart: True\r\n\r\n")
        assert await connects.get() == 2
    assert [e["Restart"] for e in shutdowns] == ["True"]


async def test_in_flight_unsafe_not_resent_safe_resent(peer: AMIPeer) -> None:
    # Connection 0: Originate gets no reply (in flight); QueueStatus makes it drop.
    def policy(i: int, a: Action) -> str:
        if i == 0 and a.name == "Originate":
            return "ignore"
        if i == 0 and a.name == "QueueStatus":
            return "drop"
        return "reply"

    peer.policy = policy
    before = METRICS.get("ami.action.not_retried")
    async with make(peer, settings=FAST) as ami:
        originate = asyncio.ensure_future(ami.send_action(
            "Originate", {"Channel": "Local/12345@from-pstn", "Application": "Wait",
                          "Data": "90", "CallerID": '"张三" <13800138000>', "Async": "true"}))
        _, sent_originate = await next_action(peer, "Originate")
        status = asyncio.ensure_future(ami.send_action("QueueStatus", {"Queue": "hotline"}))
        with pytest.raises(AMIActionNotRetried, match="Originate"):
            await originate
        result = await status
        assert isinstance(result, EventList) and result.finished
        assert len(result.events) == 2
        # While disconnected an unsafe action fails at once; nothing is queued.
        assert sent_originate["CallerID"] == '"张三" <13800138000>'
    assert METRICS.get("ami.action.not_retried") == before + 1
    second = [a.name for a in peer.conns[1].actions]
    assert "Originate" not in second and "QueueStatus" in second
    first_qs = [a for a in peer.conns[0].actions if a.name == "QueueStatus"][0]
    again_qs = [a for a in peer.conns[1].actions if a.name == "QueueStatus"][0]
    assert first_qs.action_id == again_qs.action_id  # same request, sent again


async def test_unsafe_action_while_disconnected_fails_fast(peer: AMIPeer) -> None:
    peer.policy = lambda i, a: "drop" if (i == 1 and a.name == "Login") else "reply"
    reasons: asyncio.Queue[BaseException] = asyncio.Queue()
    ami = make(peer, settings=settings(backoff=Backoff(initial=5, cap=5, jitter=0)),
               on_disconnect=lambda _c, r: reasons.put_nowait(r))
    async with ami:
        peer.drop()
        await reasons.get()
        assert not ami.connected
        with pytest.raises(AMIConnectionError, match="not connected"):
            await ami.send_action("Hangup", {"Channel": "SIP/x-1"})
        with pytest.raises(AMIConnectionError, match="not back within"):
            await ami.send_action("Ping", timeout=0.05)


# -- events ---------------------------------------------------------------------------


async def test_raising_handler_does_not_kill_connection(peer: AMIPeer) -> None:
    lib = load_library("02-ivr-queue-record-threeway")
    frames = lib.events
    seen: list[str] = []
    async_seen: asyncio.Queue[str] = asyncio.Queue()
    done = asyncio.Event()

    def boom(event: Event) -> None:
        raise RuntimeError(f"handler bug on {event.name}")

    async def async_boom(event: Event) -> None:
        await async_seen.put(event.name)
        raise ValueError("async handler bug")

    def collect(event: Event) -> None:
        seen.append(event.name)
        if len(seen) == len(frames):
            done.set()

    before = METRICS.get("ami.handler_error")
    async with make(peer, settings=FAST) as ami:
        ami.on_event("*", boom)
        ami.on_event("AgentConnect", async_boom)
        ami.on_event("*", collect)
        await peer.push(b"".join(frames))  # every event of trace 02 in one write
        await done.wait()
        assert await async_seen.get() == "AgentConnect"
        assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
        assert ami.connects == 1
    assert len(peer.conns) == 1
    assert seen == [f.split(b"\r\n", 1)[0].decode()[len("Event: "):] for f in frames]
    assert METRICS.get("ami.handler_error") >= before + len(frames) + 1


async def test_event_patterns(peer: AMIPeer) -> None:
    lib = load_library("07-queue-abandon")
    got: dict[str, list[str]] = {"Queue*": [], "*Complete": []}
    done = asyncio.Event()
    async with make(peer, settings=FAST) as ami:
        for pattern, bucket in got.items():
            ami.on_event(pattern, bucket.append)  # type: ignore[arg-type]

        @ami.on_event("QueueCallerLeave")
        async def last(_e: Event) -> None:
            done.set()

        await peer.push(b"".join(lib.events))
        await done.wait()
    names = [e.name for e in got["Queue*"]]  # type: ignore[attr-defined]
    assert "QueueCallerAbandon" in names and "QueueCallerLeave" in names
    assert all(n.startswith("Queue") for n in names)


async def test_utf8_split_across_tcp_writes(peer: AMIPeer) -> None:
    lib = load_library("02-ivr-queue-record-threeway")
    frame = next(f for f in lib.events if f.startswith(b"Event: AgentConnect"))
    cut = frame.index("张".encode()) + 1  # inside the 3-byte character
    events: asyncio.Queue[Event] = asyncio.Queue()
    async with make(peer, settings=FAST) as ami:
        ami.on_event("AgentConnect", events.put_nowait)
        before = METRICS.get("ami.bytes_received")
        await peer.push(frame[:cut])
        # Bounded polling (nothing to await on a half frame): the client has read the
        # first half on its own before the second half is written.
        for _ in range(1000):
            if METRICS.get("ami.bytes_received") >= before + cut:
                break
            await asyncio.sleep(0.005)
        assert METRICS.get("ami.bytes_received") == before + cut
        assert events.empty()
        await peer.push(frame[cut:])
        event = await events.get()
    assert event["CallerIDName"] == "张三"
    assert event["DestCallerIDName"] == "张三"


async def test_bad_banner_is_retried_with_backoff() -> None:
    before = METRICS.get("ami.protocol_error")
    async with AMIPeer(banners=[b"SSH-2.0-OpenSSH_9.6\r\n"]) as peer:
        async with make(peer, settings=FAST) as ami:
            assert ami.connected and ami.connects == 1
        assert len(peer.conns) == 2
        assert peer.conns[0].actions == []  # nothing sent to a non-Asterisk peer
    assert METRICS.get("ami.protocol_error") == before + 1


async def test_protocol_issue_logged_and_counted(
    peer: AMIPeer, caplog: pytest.LogCaptureFixture
) -> None:
    before = METRICS.get("ami.protocol_issue")
    async with make(peer, settings=FAST) as ami:
        with caplog.at_level(logging.WARNING, logger="ivr.ami.client"):
            await peer.push(b"Hello there 13800138000\r\n\r\n")
            assert (await ami.send_action("Ping")).success  # type: ignore[union-attr]
    assert METRICS.get("ami.protocol_issue") == before + 1
    rec = next(r for r in caplog.records if r.getMessage() == "ami.protocol_issue")
    fields = rec.fields  # type: ignore[attr-defined]
    assert fields["reason"] == "frame with no headers"
    assert "13800138000" not in fields["raw"] and "138****8000" in fields["raw"]


async def test_phone_numbers_masked_in_action_log(
    peer: AMIPeer, caplog: pytest.LogCaptureFixture
) -> None:
    async with make(peer, settings=FAST) as ami:
        with caplog.at_level(logging.DEBUG, logger="ivr.ami.client"):
            await ami.send_action("Originate", {"Channel": "Local/12345@from-pstn",
                                                "CallerID": '"张三" <13800138000>',
                                                "Exten": "13912345678"})
    rec = next(r for r in caplog.records
               if r.getMessage() == "ami.action.sent"
               and r.fields["action"] == "Originate")  # type: ignore[attr-defined]
    fields = rec.fields["fields"]  # type: ignore[attr-defined]
    assert fields["CallerID"] == '"张三" <138****8000>'
    assert fields["Exten"] == "139****5678"
    assert "13800138000" not in repr(rec.__dict__)


async def test_close_is_clean_and_idempotent(peer: AMIPeer) -> None:
    peer.policy = lambda _i, a: "ignore" if a.name == "Getvar" else "reply"
    ami = make(peer, settings=FAST)
    await ami.start()
    pending = asyncio.ensure_future(ami.send_action("Getvar", {"Variable": "X"}))
    await next_action(peer, "Getvar")
    await ami.close()
    with pytest.raises(AMIConnectionError, match="closed"):
        await pending
    await ami.close()
    assert not ami.connected
    with pytest.raises(AMIConnectionError):
        await ami.send_action("Ping")
    assert await peer.closed.get() == 0


async def test_start_waits_through_refused_connections() -> None:
    # Nothing listens on the port at first; the client retries until the peer appears.
    async with AMIPeer() as probe:
        port = probe.port
    ami = AMIClient("127.0.0.1", port, username="ivr", secret="ivrsecret", settings=FAST)
    attempts = METRICS.get("ami.reconnect_wait")
    starter = asyncio.ensure_future(ami.start())
    peer = AMIPeer()
    for _ in range(1000):  # bounded polling: no hook fires on a refused connect
        if METRICS.get("ami.reconnect_wait") >= attempts + 2:
            break
        await asyncio.sleep(0.01)
    assert not starter.done()
    server = await asyncio.start_server(peer._serve, "127.0.0.1", port)
    try:
        await asyncio.wait_for(starter, 10)
        assert ami.connected
    finally:
        await ami.close()
        server.close()
        await server.wait_closed()


def test_split_helper_matches_trace() -> None:
    banner, frames = split_server_raw(
        (TRACES / "01-login-and-basics" / "ami.server.raw").read_bytes())
    assert banner == b"Asterisk Call Manager/9.0.0\r\n"
    assert all(f.endswith(b"\r\n\r\n") for f in frames)



def test_backoff_grows_caps_and_jitters() -> None:
    b = Backoff(initial=0.5, factor=2, cap=30, jitter=0)
    assert [b.delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(10_000) == 30
    j = Backoff(initial=1, factor=2, cap=3, jitter=0.5)
    rng = random.Random(7)
    delays = [j.delay(n, rng) for n in range(200)]
    assert all(0 <= d <= 3 for d in delays)
    assert len({round(d, 6) for d in delays[:2]}) == 2  # spread, not lock step
    with pytest.raises(ConfigError):
        Backoff(factor=0.5)
    with pytest.raises(ConfigError):
        AMISettings(auth="sha1")  # type: ignore[arg-type]


async def _run_cli(*args: str, secret: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_AMI_SECRET")}
    if secret is not None:
        env["IVR_AMI_SECRET"] = secret
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "ami", "send", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_send_prints_reply_as_json_lines(peer: AMIPeer) -> None:
    code, out, err = await _run_cli("--port", str(peer.port), "QueueStatus", "Queue=hotline",
                                    secret="ivrsecret")
    assert code == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs[0]["EventList"] == "start"
    assert objs[-1]["Event"] == "QueueStatusComplete" and len(objs) == 4
    assert peer.conns[0].actions[1]["Events"] == "off"
    code, out, err = await _run_cli("--port", str(peer.port), "Ping", secret="wrong")
    assert code == 1 and "Authentication failed" in err and out == ""


async def test_cli_send_takes_the_secret_from_a_file_never_the_command_line(
    peer: AMIPeer, tmp_path: Path
) -> None:
    secret_file = tmp_path / "ami.secret"
    secret_file.write_text("ivrsecret\n")
    code, out, err = await _run_cli("--port", str(peer.port), "--secret-file",
                                    str(secret_file), "Ping")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["Response"] == "Success"
    code, out, err = await _run_cli("--port", str(peer.port), "--secret", "ivrsecret", "Ping",
                                    secret="ivrsecret")
    assert code == 2 and "--secret is refused" in err and "IVR_AMI_SECRET" in err
    assert len(peer.conns) == 1  # the refused command never connected
    code, out, err = await _run_cli("--port", str(peer.port), "--secret-file",
                                    str(tmp_path / "missing"), "Ping")
    assert code == 2 and "cannot read the secret file" in err


def test_cli_send_checks_arguments(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from ivr.cli import main as ivr_main

    monkeypatch.delenv("IVR_AMI_SECRET", raising=False)
    assert ivr_main(["ami", "send", "--port", "1", "Ping"]) == 2
    assert "IVR_AMI_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("IVR_AMI_SECRET", "x")
    assert ivr_main(["ami", "send", "--port", "1", "Getvar", "oops"]) == 2
    assert "Name=value" in capsys.readouterr().err
