"""Hostile admin input for the dialplan toolchain (issue 14, items 2-5): deep nesting,
values with a trailing newline, values Asterisk would read differently, oversized files,
alias bombs, floods of errors.  Each gives one clear ``path:line:col: error`` line, exit 1,
a refused publish with its audit line, and the running bridge keeps watching."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ivr.agi.codec import AGIEnvironment
from ivr.cli import main
from ivr.dialplan.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_TOTAL_BYTES
from ivr.dialplan.render import render_extensions, render_queues
from ivr.dialplan.validate import check_definition
from ivr.flow.runtime import DefinitionStore, Snapshot
from tests.test_dialplan_support import MINIMAL, write_definition
from tests.test_dialplan_validate import PINNED_TODAY


def _edit(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, 1)


def _pos(text: str, needle: str) -> str:
    """``line:col`` (1-based) of the first ``needle`` in ``text``."""
    before = text[:text.index(needle)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    if argv[0] == "validate":
        argv = (*argv, "--today", PINNED_TODAY)
    code = main(["dialplan", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _publish_refused(capsys: pytest.CaptureFixture[str], folder: Path, out: Path
                     ) -> tuple[list[str], dict[str, object]]:
    """Publish (no reload): refused with exit 1 and an audit line; (printed lines, audit)."""
    code, lines, err = _cli(capsys, "publish", str(folder), "--out", str(out), "--no-reload",
                            "--no-prompts", "--who", "li.admin", "--today", PINNED_TODAY)
    assert code == 1, (lines, err)
    assert "publish refused" in err and "拒绝发布" in err and "Traceback" not in err
    assert not (out / "extensions.conf").exists()
    records = [json.loads(x) for x in (out / "versions" / "audit.jsonl").read_text()
               .splitlines()]
    assert [(r["status"], r["who"]) for r in records] == [("refused", "li.admin")]
    return lines, records[-1]


# ------------------------------------------------ item 2: deep nesting never ends in a traceback


def test_deep_nesting_is_a_clear_error_in_validate_render_and_publish(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    (folder / "deep.yaml").write_text("[" * 10_000 + "\n", encoding="utf-8")
    expected = (f"{folder}/deep.yaml:1:{MAX_DEPTH + 1}: error: YAML too large: nested more "
                f"than {MAX_DEPTH} levels deep / 嵌套超过 {MAX_DEPTH} 层")
    code, lines, err = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert (code, lines) == (1, [expected]), err
    code, lines, err = _cli(capsys, "render", str(folder), "--no-prompts", "--out",
                            str(tmp_path / "conf"))
    assert (code, lines) == (1, [expected]) and "nothing written" in err
    lines, record = _publish_refused(capsys, folder, tmp_path / "pub")
    assert lines == [expected] and "nested more than" in str(record["message"])


def _store(folder: Path) -> DefinitionStore:
    store = DefinitionStore(folder)
    store.load()
    return store


async def _watching(store: DefinitionStore) -> asyncio.Task[None]:
    return asyncio.create_task(store.watch(interval=0.01))


async def _stop(task: asyncio.Task[None]) -> None:
    assert not task.done(), "the watch task ended"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_watch_survives_a_deeply_nested_file_then_picks_up_a_good_one(
    tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    store = _store(folder)
    first = store.current.version
    watcher = await _watching(store)
    try:
        refused = store.next_reload()
        (folder / "deep.yaml").write_text("[" * 10_000, encoding="utf-8")
        bad = await asyncio.wait_for(refused, 10)
        assert not bad.ok and bad.version == first and "nested more than" in bad.error
        assert store.current.version == first
        taken = store.next_reload()
        (folder / "deep.yaml").unlink()
        write_definition(folder, MINIMAL.replace("english: {}", "english: {max_wait: 60}"))
        good = await asyncio.wait_for(taken, 10)
        assert good.ok and good.changed and good.version != first
        assert store.current.definition.queues["english"].max_wait == 60
    finally:
        await _stop(watcher)


class _BuggyStore(DefinitionStore):
    """A store whose first build fails in a way nobody foresaw (a bug, not bad YAML)."""

    failures = 1

    def _build(self) -> Snapshot:
        if self._current is not None and self.failures:
            self.failures -= 1
            raise ZeroDivisionError("a bug in the loader")
        return super()._build()


async def test_watch_survives_an_unexpected_error_and_keeps_the_running_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_definition(tmp_path / "dp")
    store = _BuggyStore(folder)
    store.load()
    first = store.current.version
    watcher = await _watching(store)
    try:
        refused = store.next_reload()
        write_definition(folder, MINIMAL.replace("english: {}", "english: {max_wait: 61}"))
        bad = await asyncio.wait_for(refused, 10)
        assert not bad.ok and bad.error == "ZeroDivisionError: a bug in the loader"
        assert store.current.version == first
        logged = [r for r in caplog.records if r.getMessage() == "ivr.definition.reload_refused"]
        assert logged and getattr(logged[-1], "fields", {})["keeping"] == first
        taken = store.next_reload()
        write_definition(folder, MINIMAL.replace("english: {}", "english: {max_wait: 62}"))
        good = await asyncio.wait_for(taken, 10)
        assert good.ok and store.current.definition.queues["english"].max_wait == 62
    finally:
        await _stop(watcher)


# ------------------------------------------------ items 3 and 4: whole values, Asterisk's reading

HOST_KIND = ("is not a host name, an IPv4 address or an IPv6 address in brackets ([::1]) / "
             "主机名或地址无效")
MEMBER_KIND = ("is not a queue member interface (Tech/resource such as PJSIP/1001 or "
               "Local/1001@agents/n; no commas, spaces or ';') / 队列成员接口格式无效")
URL_KIND = ("is not an http:// or https:// URL with a host (e.g. http://127.0.0.1:8080/api) "
            "/ 须为 http:// 或 https:// 地址")
SETTINGS = "  general_queue: hotline\n"

BAD_VALUES: list[tuple[str, str, str, str]] = [
    # (case, edited definition, where the error points, message)
    ("entry-number-newline", _edit('  "12345":', '  "12345\\n":'), '"12345\\n"',
     "entry number '12345\\n' is not a phone number (digits, * # +)"),
    ("queue-member-newline",
     _edit('["Local/1001@agent-local/n"]', '["Local/1001@agent-local/n\\n"]'), '"Local',
     f"'members' of queue 'hotline' item 'Local/1001@agent-local/n\\n' {MEMBER_KIND}"),
    ("agi-host-newline", _edit(SETTINGS, SETTINGS + '  agi_host: "127.0.0.1\\n"\n'),
     '"127.0.0.1', f"'agi_host' of settings '127.0.0.1\\n' {HOST_KIND}"),
    ("include-file-newline",
     _edit(SETTINGS, SETTINGS + '  include_files: ["extensions_site.conf\\n"]\n'),
     '"extensions_site', "'include_files' of settings item 'extensions_site.conf\\n' is not "
     "a valid name (letters, digits, _ . -)"),
    ("department-number-newline", _edit('number: "2001"', 'number: "2001\\n"'), '"2001',
     "'number' of department 'market' '2001\\n' is not a dialable number (digits, * or #, "
     "an optional leading +, 2-20 characters, no spaces or dashes: 02012345678) / 号码不可拨打"
     "（只能包含数字、* 或 #，可带前缀 +，不能有空格或横线）"),
    ("queue-member-with-fields",
     _edit('["Local/1001@agent-local/n"]', '["Local/1001@agent-local/n,5,Agent Li"]'),
     '"Local', f"'members' of queue 'hotline' item 'Local/1001@agent-local/n,5,Agent Li' "
     f"{MEMBER_KIND}"),
    ("queue-member-without-technology",
     _edit('["Local/1001@agent-local/n"]', '["1001"]'), '"1001',
     f"'members' of queue 'hotline' item '1001' {MEMBER_KIND}"),
    ("agi-host-bare-ipv6", _edit(SETTINGS, SETTINGS + '  agi_host: "::1"\n'), '"::1',
     f"'agi_host' of settings '::1' {HOST_KIND}"),
    ("agi-backup-host-bare-ipv6", _edit(SETTINGS, SETTINGS + '  agi_backup_host: "::2"\n'),
     '"::2', f"'agi_backup_host' of settings '::2' {HOST_KIND}"),
    ("agi-backup-same-server", _edit(SETTINGS, SETTINGS + '  agi_backup_host: 127.0.0.1\n'),
     "127.0.0.1", "'agi_backup_host' of settings names the same FastAGI server as agi_host "
     "(127.0.0.1:4573): a backup must be another server / 备用 FastAGI 服务器与主服务器相同"),
    ("agi-backup-port-without-host", _edit(SETTINGS, SETTINGS + "  agi_backup_port: 4574\n"),
     "4574", "'agi_backup_port' of settings needs 'agi_backup_host' / 设置了备用 FastAGI "
     "端口但没有备用主机"),
    ("ticket-api-file-url",
     _edit(SETTINGS, SETTINGS + '  ticket_api: {url: "file:///etc/passwd"}\n'), '"file',
     f"'url' of settings.ticket_api 'file:///etc/passwd' {URL_KIND}"),
    ("ticket-api-url-without-host",
     _edit(SETTINGS, SETTINGS + '  ticket_api: {url: "http:///tickets"}\n'), '"http',
     f"'url' of settings.ticket_api 'http:///tickets' {URL_KIND}"),
    ("ticket-api-url-bad-port",
     _edit(SETTINGS, SETTINGS + '  ticket_api: {url: "https://api:port/x"}\n'), '"https',
     f"'url' of settings.ticket_api 'https://api:port/x' {URL_KIND}"),
    ("queue-named-general", _edit("  english: {}\n", "  english: {}\n  general: {}\n"),
     "general: {}", "queue name 'general' is reserved (queues.conf's [general] section holds "
     "app_queue's settings) / 队列名称为保留字"),
]


@pytest.mark.parametrize(("text", "needle", "message"), [c[1:] for c in BAD_VALUES],
                         ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_is_one_clear_error_and_publish_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, needle: str, message: str
) -> None:
    folder = write_definition(tmp_path / "dp", text)
    expected = f"{folder}/hotline.yaml:{_pos(text, needle)}: error: {message}"
    code, lines, err = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert (code, lines) == (1, [expected]), err
    lines, record = _publish_refused(capsys, folder, tmp_path / "conf")
    assert lines == [expected]
    assert record["message"] == f"1 problem(s); first: {expected}"


def test_values_asterisk_reads_as_written_are_accepted_and_rendered(tmp_path: Path) -> None:
    text = (_edit(SETTINGS, SETTINGS + '  agi_host: "[::1]"\n'
                  '  ticket_api: {url: "https://tickets.example.cn:8443/api/v1"}\n')
            .replace('["Local/1001@agent-local/n"]',
                     '["PJSIP/1001", "Local/1002@agent-local/n", "SIP/trunk-a.b:5060"]')
            .replace('  "12345":', '  "+8612345":'))
    folder = write_definition(tmp_path / "dp", text)
    from ivr.dialplan.loader import parse_definition

    d, problems = parse_definition(folder)
    assert d is not None, problems
    assert [p for p in check_definition(d) if p.severity == "error"] == []
    assert d.settings.ticket_api is not None
    extensions = render_extensions(d, "v1")
    assert "IVR_AGI_HOST = [::1]" in extensions
    # a backup on another port of the same host is another server
    text2 = text.replace('  agi_host: "[::1]"\n', '  agi_host: "[::1]"\n'
                         '  agi_backup_host: "[::1]"\n  agi_backup_port: 4574\n')
    folder2 = write_definition(tmp_path / "dp2", text2)
    d2, problems2 = parse_definition(folder2)
    assert d2 is not None, problems2
    assert "IVR_AGI_BACKUP_HOST = [::1]\nIVR_AGI_BACKUP_PORT = 4574\n" in render_extensions(
        d2, "v1")
    queues = render_queues(d, "v1")
    assert ("member => PJSIP/1001\nmember => Local/1002@agent-local/n\n"
            "member => SIP/trunk-a.b:5060\n") in queues
    # the entry number reaches the IVR as written: '+' would be a space in a query string
    agi = next(line for line in extensions.splitlines() if "entry=%2B8612345" in line)
    url = agi[agi.index("AGI(") + 4:agi.rindex(")")]
    script = urlsplit(url).path.lstrip("/") + "?" + urlsplit(url).query
    env = AGIEnvironment({"agi_network_script": script})
    assert env.query["entry"] == "+8612345" and "+8612345" in d.entries


# ------------------------------------------------ item 5: limits on admin input


def test_a_file_over_the_size_limit_is_refused_unread(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    with (folder / "big.yaml").open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: its size is all that is looked at
    code, lines, _ = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert (code, lines) == (1, [
        f"{folder}/big.yaml:1:1: error: file is {MAX_FILE_BYTES + 1:,} bytes, more than the "
        "1.0 MiB limit: not read (split it into several files) / 文件超过 1.0 MiB 上限，未读取"])


def test_a_directory_over_the_total_limit_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    for i in range(MAX_TOTAL_BYTES // MAX_FILE_BYTES):
        with (folder / f"part{i}.yaml").open("wb") as fh:
            fh.truncate(MAX_FILE_BYTES)  # each one within the per-file limit
    code, lines, _ = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"{folder}:1:1: error: the definition files are 8.0 MiB")
    assert "more than the 8.0 MiB limit: not read / 定义文件总大小超过 8.0 MiB 上限" in lines[0]


async def test_live_reload_of_a_50_mb_file_is_refused_without_stalling_the_loop(
    tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    store = _store(folder)
    first = store.current.version
    with (folder / "huge.yaml").open("wb") as fh:
        fh.truncate(50 << 20)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:  # measures how long the event loop is held
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    watcher = await _watching(store)
    try:
        refused = store.next_reload()
        bad = await asyncio.wait_for(refused, 10)
    finally:
        done.set()
        await tick
        await _stop(watcher)
    assert not bad.ok and bad.version == first
    assert "huge.yaml:1:1: error: file is 52,428,800 bytes, more than the 1.0 MiB" in bad.error
    assert max(gaps) < 0.5, max(gaps)


def _alias_bomb() -> str:
    """Ten levels of ten aliases each: 29 kB of text, 10^10 nodes once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "version: 1\nflows:\n" + "".join(f"  {x}\n" for x in lines) + "  bomb: *a9\n"


def test_an_alias_bomb_is_stopped_while_composing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    text = _alias_bomb()
    (folder / "bomb.yaml").write_text(text, encoding="utf-8")
    started = time.monotonic()
    code, lines, _ = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert time.monotonic() - started < 10
    # a0..a4 fit (about 123,000 nodes expanded); a5's first alias (*a4, 111,111 more)
    # crosses the limit: the error points at it, before anything walks the tree
    assert code == 1 and len(lines) == 1, lines[:5]
    assert lines[0].startswith(f"{folder}/bomb.yaml:8:12: error:")
    assert lines[0].endswith(f"error: YAML too large: more than {MAX_NODES:,} YAML nodes with "
                             "aliases expanded (an alias bomb?): simplify the file / YAML "
                             f"节点（含别名展开）超过 {MAX_NODES:,} 个上限")


def test_an_alias_inside_its_own_anchor_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    (folder / "loop.yaml").write_text("version: 1\nflows: &f {x: *f}\n", encoding="utf-8")
    code, lines, _ = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert (code, lines) == (1, [
        f"{folder}/loop.yaml:2:15: error: YAML too large: alias *f is used inside its own "
        "anchor (a recursive structure) / 别名递归引用自身"])


def test_anchors_and_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    text = MINIMAL.replace("  hotline: {members:", "  hotline: &q {members:").replace(
        "  english: {}", "  english: *q")
    folder = write_definition(tmp_path / "dp", text)
    from ivr.dialplan.loader import parse_definition

    d, problems = parse_definition(folder)
    assert d is not None, problems
    assert d.queues["english"].members == ("Local/1001@agent-local/n",)


def test_the_errors_printed_are_capped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    bad = "".join(f"  x{i}: {{}}\n" for i in range(1000))  # 1,000 invalid entry numbers
    (folder / "many.yaml").write_text(f"version: 1\nentries:\n{bad}", encoding="utf-8")
    code, lines, err = _cli(capsys, "validate", str(folder), "--no-prompts")
    assert code == 1
    assert len(lines) == 201 and all(": error: entry number 'x" in x for x in lines[:200])
    assert lines[200] == ("… and 800 more problem(s) not shown (800 error(s)); fix these "
                          "first / 另有 800 个问题未显示（其中 800 个错误），请先修正以上问题")
    assert "1000 error(s)" in err



def test_diff_does_not_read_an_oversized_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    with (folder / "huge.yaml").open("wb") as fh:
        fh.truncate(50 << 20)
    code, lines, err = _cli(capsys, "diff", str(folder), "--out", str(tmp_path / "conf"))
    assert code == 2 and "file is 52,428,800 bytes" in err
    assert ("+<52,428,800 bytes: over the 1,048,576-byte limit, not read / "
            "文件超过大小上限，未读取>") in lines
