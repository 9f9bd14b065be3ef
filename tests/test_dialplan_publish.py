"""`ivr dialplan publish`: atomic write, reload over AMI, verification, rollback, audit.

Asterisk is played by a small AMI peer on a real socket (framing by ivr.ami.codec) that
behaves like Asterisk for what publish uses: Login, ``Command: dialplan reload`` (it
re-reads extensions.conf from the config directory with ivr.asterisk), ``Command:
dialplan show <exten>@<context>`` (answered from what it loaded), ``Reload`` of a module.
Faults are injected per test: a module reload error, a reload that is ignored (stale
dialplan), no answer at all.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ivr.ami.client import AMIClient, AMISettings
from ivr.ami.codec import AMIParser, encode_frame
from ivr.ami.messages import Action
from ivr.asterisk.conf import load_conf
from ivr.asterisk.errors import AsteriskConfError
from ivr.asterisk.extensions import Dialplan, parse_extensions
from ivr.cli import main
from ivr.dialplan.ami_control import ClientControl
from ivr.dialplan.errors import PublishError
from ivr.dialplan.publish import Publisher, Store, prepare
from ivr.dialplan.render import source_version, version_marker
from ivr.dialplan.validate import file_prompt_lookup
from tests.test_dialplan_support import SHIPPED, prompts_for

SECRET = "s3cret"


class AsteriskPeer:
    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.dialplan: Dialplan | None = None
        self.faults: set[str] = set()
        self.actions: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    def load(self) -> None:
        try:
            self.dialplan = parse_extensions(load_conf(self.conf_dir / "extensions.conf"))
        except AsteriskConfError:
            pass  # like Asterisk: a file it cannot read leaves the old dialplan running

    def show(self, spec: str) -> list[str]:
        exten, _, context = spec.partition("@")
        ext = self.dialplan.match(context, exten) if self.dialplan else None
        if ext is None:
            return [f"There is no existence of '{exten}' extension in '{context}' context"]
        lines = [f"[ Context '{context}' created by 'pbx_config' ]"]
        for i, p in enumerate(ext.ordered()):
            head = f"  '{exten}' =>" if i == 0 else ""
            lines.append(f"{head:<20}{p.number}. {p.app}({p.data})  [extensions.conf:{p.line}]")
        lines += ["", "-= 1 extension in 1 context. =-"]
        return lines

    async def start(self) -> None:
        if (self.conf_dir / "extensions.conf").exists():
            self.load()
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def answer(self, msg: Action) -> list[tuple[str, str]] | None:
        name = msg.name
        aid = msg.get("ActionID") or ""
        self.actions.append(name if name != "Command" else f"Command: {msg.get('Command')}")
        ok = [("Response", "Success"), ("ActionID", aid)]
        if "silent" in self.faults and name != "Login":
            return None
        if name == "Login":
            if msg.get("Secret") != SECRET:
                return [("Response", "Error"), ("ActionID", aid),
                        ("Message", "Authentication failed")]
            return [*ok, ("Message", "Authentication accepted")]
        if name == "Command":
            cmd = msg.get("Command") or ""
            out = ["No such command"]
            if cmd == "dialplan reload":
                if "stale" not in self.faults:
                    self.load()
                out = ["Dialplan reloaded."]
            elif cmd.startswith("dialplan show "):
                out = self.show(cmd[len("dialplan show "):])
            return [*ok, ("Message", "Command output follows"), *(("Output", x) for x in out)]
        if name == "Reload":
            if "reload-error" in self.faults:
                return [("Response", "Error"), ("ActionID", aid), ("Message", "No such module")]
            return [*ok, ("Message", "Module Reloaded")]
        if name == "Logoff":
            return [("Response", "Goodbye"), ("ActionID", aid),
                    ("Message", "Thanks for all the fish.")]
        return ok

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        parser = AMIParser(expect_banner=False, group_lists=False)
        try:
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    if isinstance(msg, Action):
                        reply = self.answer(msg)
                        if reply is not None:
                            writer.write(encode_frame(reply))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[AsteriskPeer]:
    out = tmp_path / "asterisk-conf"
    out.mkdir()
    # the site-owned contexts the generated extensions.conf #includes
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", out)
    p = AsteriskPeer(out)
    await p.start()
    yield p
    await p.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "dialplans"
    shutil.copytree(SHIPPED, src)
    prompts_for(src, tmp_path / "prompts")
    return src


async def publish_with(peer: AsteriskPeer, source: Path, who: str = "tester",
                       limit: float = 5.0) -> tuple[Publisher, object]:
    store = Store.at(peer.conf_dir)
    publisher = Publisher(store, who=who, verify_timeout=limit)
    plan = prepare(source, file_prompt_lookup(source.parent / "prompts"))
    client = AMIClient("127.0.0.1", peer.port, username="ivr", secret=SECRET,
                       settings=AMISettings(auth="plain", ping_interval=0, action_timeout=5,
                                            close_timeout=0.5))
    await client.start()
    try:
        result = await publisher.publish(plan, ClientControl(client, timeout=limit))
    finally:
        await client.close()
    return publisher, result


def audit(out: Path) -> list[dict[str, object]]:
    path = out / "versions" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def change_max_wait(source: Path) -> None:
    text = (source / "hotline.yaml").read_text()
    (source / "hotline.yaml").write_text(text.replace("max_wait: 300", "max_wait: 240", 1))


async def test_first_publish_goes_live_with_versions_and_audit(
    peer: AsteriskPeer, source: Path
) -> None:
    _, result = await publish_with(peer, source)
    version = source_version(source)
    out = peer.conf_dir
    assert version_marker(version) in (out / "extensions.conf").read_text()
    assert (out / "queues.conf").exists()
    # Asterisk was reloaded, and the new dialplan checked for every entry
    # res_musiconhold (the queues' offer classes), then app_queue
    assert peer.actions[:4] == ["Login", "Command: dialplan reload", "Reload", "Reload"]
    assert sorted(a for a in peer.actions if a.startswith("Command: dialplan show")) == [
        "Command: dialplan show 12315@from-pstn", "Command: dialplan show 12333@from-pstn",
        "Command: dialplan show 12345@from-pstn", "Command: dialplan show 8890@from-pstn"]
    assert any(version_marker(version) in x for x in peer.show("12345@from-pstn"))
    current = json.loads((out / "versions" / "current.json").read_text())
    assert current["version"] == version
    folder = out / "versions" / current["id"]
    assert sorted(p.name for p in (folder / "dialplans").iterdir()) == [
        "calendar.yaml", "directory.yaml", "entries.yaml", "hotline.yaml", "recordings.yaml"]
    assert (folder / "conf" / "extensions.conf").read_text() == \
        (out / "extensions.conf").read_text()
    record = json.loads((folder / "audit.json").read_text())
    assert record["status"] == "published" and record["who"] == "tester"
    assert record["version"] == version and record["previous"] is None
    assert record["files_changed"] == ["extensions.conf", "queues.conf", "musiconhold.conf"]
    assert [r["status"] for r in audit(out)] == ["published"]
    assert Store.at(out).current_definition_dir() == folder / "dialplans"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


async def test_second_publish_records_what_changed(peer: AsteriskPeer, source: Path) -> None:
    await publish_with(peer, source)
    first = source_version(source)
    change_max_wait(source)
    _, result = await publish_with(peer, source, who="wang.admin")
    second = source_version(source)
    assert first != second
    records = audit(peer.conf_dir)
    assert [(r["status"], r["who"], r["previous"]) for r in records] == [
        ("published", "tester", None), ("published", "wang.admin", first)]
    assert records[1]["files_changed"] == [  # header stamp
        "extensions.conf", "queues.conf", "musiconhold.conf"]
    folder = peer.conf_dir / "versions" / str(records[1]["id"])
    diff = (folder / "changes.diff").read_text()
    assert "-    max_wait: 300\n" in diff and "+    max_wait: 240\n" in diff
    assert "+same => n,Queue(hotline,ct,,,240)" in diff
    # publishing the same again changes nothing
    await publish_with(peer, source)
    assert audit(peer.conf_dir)[-1]["status"] == "unchanged"
    assert len(list((peer.conf_dir / "versions").glob("*-*"))) == 2


@pytest.mark.parametrize("fault", ["reload-error", "stale"])
async def test_failed_publish_rolls_back_and_the_running_version_stays(
    peer: AsteriskPeer, source: Path, fault: str
) -> None:
    await publish_with(peer, source)
    first = source_version(source)
    before = {n: (peer.conf_dir / n).read_text() for n in ("extensions.conf", "queues.conf")}
    change_max_wait(source)
    peer.faults.add(fault)
    peer.actions.clear()
    with pytest.raises(PublishError) as info:
        await publish_with(peer, source)
    assert info.value.rolled_back
    after = {n: (peer.conf_dir / n).read_text() for n in ("extensions.conf", "queues.conf")}
    assert after == before
    assert any(version_marker(first) in x for x in peer.show("12345@from-pstn"))
    assert json.loads((peer.conf_dir / "versions" / "current.json").read_text())[
        "version"] == first
    # the previous files were reloaded again
    assert peer.actions.count("Command: dialplan reload") == 2
    last = audit(peer.conf_dir)[-1]
    assert last["status"] == "rolled-back" and last["previous"] == first
    expected = ("No such module" if fault == "reload-error"
                else "does not show 'IVR dialplan version")
    assert expected in str(last["message"])


async def test_no_answer_from_asterisk_times_out_and_rolls_back(
    peer: AsteriskPeer, source: Path
) -> None:
    await publish_with(peer, source)
    before = (peer.conf_dir / "extensions.conf").read_text()
    change_max_wait(source)
    peer.faults.add("silent")
    with pytest.raises(PublishError) as info:
        await publish_with(peer, source, limit=0.3)
    # files are back; Asterisk did not confirm the rollback reload either
    assert not info.value.rolled_back
    assert (peer.conf_dir / "extensions.conf").read_text() == before
    assert audit(peer.conf_dir)[-1]["status"] == "rollback-failed"


async def test_cli_publish_success_and_refusal(
    peer: AsteriskPeer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("IVR_AMI_SECRET", SECRET)
    monkeypatch.setenv("USER", "li.admin")
    argv = ["dialplan", "publish", str(source), "--out", str(peer.conf_dir), "--ami-port",
            str(peer.port), "--ami-auth", "plain", "--timeout", "5"]
    assert await asyncio.to_thread(main, argv) == 0
    assert "published" in capsys.readouterr().err
    live = (peer.conf_dir / "extensions.conf").read_text()
    # a broken YAML file: refused with file:line:col, nothing written, nothing reloaded
    (source / "entries.yaml").write_text(
        (source / "entries.yaml").read_text().replace("type: queue\n", "type: queue\n  bad\n", 1))
    peer.actions.clear()
    assert await asyncio.to_thread(main, argv) == 1
    out, err = capsys.readouterr()
    assert f"{source}/entries.yaml:" in out and ": error: YAML syntax error" in out
    assert "publish refused" in err and "拒绝发布" in err
    assert (peer.conf_dir / "extensions.conf").read_text() == live
    assert peer.actions == []
    assert [(r["status"], r["who"]) for r in audit(peer.conf_dir)] == [
        ("published", "li.admin"), ("refused", "li.admin")]


async def test_cli_publish_failure_exit_code_and_unreachable_ami(
    peer: AsteriskPeer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("IVR_AMI_SECRET", SECRET)
    argv = ["dialplan", "publish", str(source), "--out", str(peer.conf_dir), "--ami-port",
            str(peer.port), "--ami-auth", "plain", "--timeout", "5", "--who", "ops"]
    assert await asyncio.to_thread(main, argv) == 0
    change_max_wait(source)
    peer.faults.add("reload-error")
    assert await asyncio.to_thread(main, argv) == 3
    assert "rolled back" in capsys.readouterr().err
    # nothing listens: refused before anything is written
    await peer.close()
    before = (peer.conf_dir / "extensions.conf").read_text()
    argv[argv.index("--timeout") + 1] = "1"
    assert await asyncio.to_thread(main, argv) == 2
    assert "cannot reach Asterisk AMI" in capsys.readouterr().err
    assert (peer.conf_dir / "extensions.conf").read_text() == before


async def test_diff_command(
    peer: AsteriskPeer, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dialplan", "diff", str(source), "--out", str(peer.conf_dir)]
    assert main(argv) == 1  # nothing published yet: everything is new
    assert "+++ new/conf/extensions.conf" in capsys.readouterr().out
    await publish_with(peer, source)
    assert main(argv) == 0
    assert "no changes" in capsys.readouterr().err
    change_max_wait(source)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "--- published/dialplans/hotline.yaml" in out
    assert "-same => n,Queue(hotline,ct,,,300)" in out
    assert "+same => n,Queue(hotline,ct,,,240)" in out


async def test_one_publish_at_a_time(peer: AsteriskPeer, source: Path) -> None:
    import fcntl
    import os

    versions = peer.conf_dir / "versions"
    versions.mkdir()
    fd = os.open(versions / ".publish.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another admin's publish is running
        with pytest.raises(PublishError, match="another publish is in progress"):
            await publish_with(peer, source)
        assert not (peer.conf_dir / "extensions.conf").exists()
    finally:
        os.close(fd)
    await publish_with(peer, source)
    assert (peer.conf_dir / "extensions.conf").exists()


def test_publish_without_reload_writes_and_records(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "conf"
    out.mkdir()
    shutil.copy(SHIPPED.parent / "asterisk-conf" / "extensions_site.conf", out)
    argv = ["dialplan", "publish", str(source), "--out", str(out), "--no-reload",
            "--who", "offline"]
    assert main(argv) == 0
    assert "not reloaded" in capsys.readouterr().err
    assert version_marker(source_version(source)) in (out / "extensions.conf").read_text()
    assert [(r["status"], r["who"]) for r in audit(out)] == [("written", "offline")]
    assert main(["dialplan", "diff", str(source), "--out", str(out)]) == 0
