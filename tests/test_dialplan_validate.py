"""`ivr dialplan validate`: the shipped dialplans are clean; each kind of mistake gives
the exact `path:line:col: error: message` line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.cli import main
from ivr.dialplan import DialplanError, load_definition
from ivr.dialplan import model as m
from ivr.dialplan.validate import default_path
from tests.test_dialplan_support import (
    MINIMAL,
    SHIPPED,
    make_prompts,
    prompts_for,
    write_definition,
)

# The date checks (past years, the holiday calendar of the year ahead) depend on the
# clock: these tests pin it to a day whose year has official holiday data and whose next
# year is more than 60 days away, unless a test gives its own --today.
PINNED_TODAY = "2026-06-01"


def validate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    pinned = () if "--today" in argv else ("--today", PINNED_TODAY)
    code = main(["dialplan", "validate", *argv, *pinned])
    out = capsys.readouterr().out
    return code, out.splitlines()


def test_shipped_dialplans_validate_clean_with_their_prompts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = prompts_for(SHIPPED, tmp_path / "prompts")
    code, lines = validate(capsys, str(SHIPPED), "--prompts", str(prompts))
    assert (code, lines) == (0, [])


def test_shipped_dialplans_against_the_repository_prompts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo_prompts = SHIPPED.parent / "prompts"
    if not (repo_prompts / "zh").is_dir():
        pytest.skip("prompts/ not generated in this checkout")
    code, lines = validate(capsys, str(SHIPPED), "--prompts", str(repo_prompts))
    assert code == 0, lines
    assert not [x for x in lines if ": error: " in x]


def test_shipped_model_is_what_the_hotline_needs() -> None:
    d = load_definition(SHIPPED)
    assert set(d.entries) >= {"12345", "12315", "12333", "8890"}
    main = d.entries["12345"]
    assert main.zero_navigation and main.language == "zh"
    assert main.barge_in == {"9": "en", "8": "yue"}
    assert main.operator.digit == "0"
    path = default_path(d, main.steps, main.start)
    assert isinstance(path[-1], m.QueueStep) and path[-1].queue == "hotline"
    assert not any(isinstance(s, m.MenuStep | m.LanguageStep) for s in path)
    assert path[-1].queue_for("en") == "english"
    numbers = {
        s.number
        for f in d.flows.values()
        for s in f.steps.values()
        if isinstance(s, m.TransferStep) and s.to == "emergency"
    }
    assert numbers == {"110", "119", "120", "122"}
    assert {"zh", "yue", "en"} <= set(d.enabled_languages())
    assert d.language_chain("ja") == ("ja", "en", "zh")
    elderly = d.priority_for("13800138000")
    assert elderly is not None and elderly.priority == 10
    repeat = d.priority_for("13900000000", has_open_ticket=True)
    assert repeat is not None and repeat.name == "repeat-open-ticket"
    assert d.priority_for("13900000000") is None


def _edit(old: str, new: str, count: int = 1) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, count)


MENU = '        options: {"1": queue, "2": dept}'
CASES: list[tuple[str, str, str]] = [
    (
        "yaml-syntax",
        _edit("prompts: [welcome]", "prompts: [welcome"),
        "hotline.yaml:28:13: error: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence)",
    ),
    (
        "yaml-tab-indent",
        _edit("        next: queue\n      queue:", "        next: queue\n\t  queue:"),
        "hotline.yaml:29:1: error: YAML syntax error: found character '\\t' that cannot "
        "start any token (while scanning for the next token)",
    ),
    (
        "bad-time-zone",
        _edit("  general_queue: hotline\n", "  general_queue: hotline\n  timezone: Asia/Beijing\n"),
        "hotline.yaml:5:13: error: 'timezone' of settings: unknown time zone 'Asia/Beijing' "
        "(e.g. Asia/Shanghai)",
    ),
    (
        "queue-member-with-newline",
        _edit('["Local/1001@agent-local/n"]', '["Local/1001@agent-local/n\\nmember => x"]'),
        "hotline.yaml:9:23: error: 'members' of queue 'hotline' item "
        "'Local/1001@agent-local/n\\nmember => x' is not a queue member interface "
        "(Tech/resource such as PJSIP/1001 or Local/1001@agents/n; no commas, spaces or ';') "
        "/ 队列成员接口格式无效",
    ),
    (
        "unknown-key",
        _edit(MENU, MENU + "\n        tmeout: 5"),
        "hotline.yaml:42:9: error: unknown key 'tmeout' in menu step 'menu' (expected one of: "
        "type, prompt, options, timeout, retries, invalid_prompt, timeout_prompt, "
        "repeat_digit, on_fail)",
    ),
    (
        "wrong-type",
        _edit(MENU, MENU + "\n        retries: many"),
        "hotline.yaml:42:18: error: 'retries' of menu step 'menu' must be an integer, "
        "got string 'many'",
    ),
    (
        "unreachable",
        _edit("      dept:\n", "      orphan:\n        type: hangup\n      dept:\n"),
        "hotline.yaml:45:7: error: step 'orphan' of entry 8890 is unreachable from start "
        "'menu'",
    ),
    (
        "dangling",
        _edit('"2": dept}', '"2": dept, "3": nowhere}'),
        "hotline.yaml:38:7: error: option '3' of menu step 'menu' in entry 8890 goes to "
        "unknown step 'nowhere'",
    ),
    (
        "loop-without-exit",
        _edit('"2": dept}', '"2": dept, "3": a}').replace(
            "      dept:\n",
            "      a:\n        type: play\n        prompts: [welcome]\n        next: b\n"
            "      b:\n        type: play\n        prompts: [goodbye]\n        next: a\n"
            "      dept:\n",
        ),
        "hotline.yaml:45:7: error: loop with no way out in entry 8890: a -> b -> a "
        "(no queue, transfer, hangup or special target reachable)",
    ),
    (
        "undefined-queue",
        _edit("        queue: hotline\n        by_language", "        queue: hotlnie\n"
              "        by_language"),
        "hotline.yaml:29:7: error: undefined queue 'hotlnie' in 'queue' of queue step 'queue' "
        "(defined: english, hotline)",
    ),
    (
        "undefined-department",
        _edit("department: market", "department: markets"),
        "hotline.yaml:45:7: error: undefined department 'markets' in transfer step 'dept' "
        "(defined: market)",
    ),
    (
        "digit-vs-press-0",
        _edit('"1": queue, "2": dept', '"0": queue, "2": dept'),
        "hotline.yaml:38:7: error: digit '0' of menu step 'menu' in entry 8890 collides with "
        "the press-0 operator digit",
    ),
    (
        "digit-vs-barge-in",
        _edit('    barge_in: {"9": en}\n',
              '    barge_in: {"9": en}\n    shortcuts: {"9": queue}\n'),
        "hotline.yaml:18:3: error: entry 12345: shortcut digit '9' collides with barge-in "
        "digit (language offer)",
    ),
    (
        "invalid-time",
        _edit('to: "17:30"', 'to: "25:00"'),
        "hotline.yaml:16:44: error: invalid time '25:00' for 'to' of weekly window 1 of hours "
        "'office' (expected HH:MM, 00:00-24:00)",
    ),
    (
        "invalid-days",
        _edit("days: mon-fri", "days: mon-fry"),
        "hotline.yaml:16:16: error: invalid days 'mon-fry' for 'days' of weekly window 1 of "
        "hours 'office' (expected mon..sun, 1..7, a range like mon-fri, or daily)",
    ),
    (
        "time-range-backwards",
        _edit('from: "09:00", to: "17:30"', 'from: "18:00", to: "17:30"'),
        "hotline.yaml:16:44: error: invalid time range for weekly window 1 of hours 'office': "
        "'to' 17:30 is not after 'from' 18:00",
    ),
    (
        "zero-navigation-with-a-menu",
        _edit("    start: greeting\n", "    start: m\n").replace(
            "      greeting:\n",
            '      m:\n        type: menu\n        prompt: main-menu\n'
            '        options: {"1": greeting}\n      greeting:\n', 1),
        "hotline.yaml:25:7: error: entry 12345 is zero_navigation but a caller who presses "
        "nothing meets menu step 'm' before a queue",
    ),
    (
        "emergency-number",
        _edit("        to: department\n        department: market",
              "        to: emergency\n        number: \"999\""),
        "hotline.yaml:48:17: error: transfer step 'dept': emergency number must be one of "
        "110, 119, 120, 122, got '999'",
    ),
    (
        "unsupported-version",
        _edit("version: 1", "version: 2"),
        "hotline.yaml:1:10: error: unsupported version 2 (this server reads version 1)",
    ),
    (
        "disabled-language-in-barge-in",
        _edit("  en: {name: English, fallback: [zh]}",
              "  en: {name: English, fallback: [zh], enabled: false}"),
        "hotline.yaml:18:3: error: entry 12345: barge-in digit '9' offers language 'en', "
        "which is not enabled",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_gives_its_exact_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    folder = write_definition(tmp_path / "dp", text)
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert f"{folder}/{expected}" in lines, "\n".join(lines)
    # and the loader refuses it the same way
    with pytest.raises(DialplanError) as info:
        load_definition(folder)
    assert f"{folder}/{expected}" in [str(p) for p in info.value.problems]


def test_prompt_missing_in_an_enabled_language(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    prompts = prompts_for(folder, tmp_path / "prompts")
    (prompts / "zh" / "main-menu.wav").unlink()
    (prompts / "en" / "main-menu.wav").unlink()
    (prompts / "en" / "welcome.wav").unlink()  # en falls back to zh: a warning only
    code, lines = validate(capsys, str(folder), "--prompts", str(prompts))
    assert code == 1
    assert lines == [
        f"{folder}/hotline.yaml:25:7: warning: prompt 'welcome' is missing in language 'en', "
        "falls back to 'zh'",
        f"{folder}/hotline.yaml:38:7: error: prompt 'main-menu' is missing in language 'en' "
        "(looked in en -> zh)",
        f"{folder}/hotline.yaml:38:7: error: prompt 'main-menu' is missing in language 'zh' "
        "(looked in zh)",
    ]


def test_a_prompt_asterisk_cannot_play(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    prompts = prompts_for(folder, tmp_path / "prompts")
    (prompts / "zh" / "welcome.wav").write_bytes(b"ID3 an mp3 renamed to .wav")
    code, lines = validate(capsys, str(folder), "--prompts", str(prompts))
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"{folder}/hotline.yaml:25:7: error: prompt 'welcome' in "
                               "language 'zh' cannot be played by Asterisk: ")


def test_missing_prompts_directory_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_definition(tmp_path / "dp")
    code, lines = validate(capsys, str(folder), "--prompts", str(tmp_path / "nope"))
    assert code == 1
    assert lines == [f"{folder}:1:1: error: prompts directory '{tmp_path / 'nope'}' not found: "
                     "cannot check prompts (give --prompts DIR, or --no-prompts to skip)"]


def test_a_key_defined_in_two_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = write_definition(tmp_path / "dp")
    (folder / "more.yaml").write_text(
        "version: 1\nqueues:\n  english: {strategy: ringall}\n", encoding="utf-8"
    )
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert lines == [f"{folder}/more.yaml:3:3: error: queue 'english' is already defined at "
                     f"{folder}/hotline.yaml:10:3"]


def test_unquoted_sexagesimal_time_is_read_as_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # YAML 1.1 reads 9:00 as the integer 540; the loader takes the source text
    folder = write_definition(tmp_path / "dp", _edit('from: "09:00"', "from: 9:00"))
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert f"{folder}/hotline.yaml:16:31: error: invalid time '9:00' for 'from' of weekly " \
        "window 1 of hours 'office' (expected HH:MM, 00:00-24:00)" in lines
    folder2 = write_definition(tmp_path / "dp2", _edit('to: "17:30"', "to: 17:30"))
    assert validate(capsys, str(folder2), "--no-prompts") == (0, [])
    spec = load_definition(folder2).hours["office"]
    assert spec.weekly[0].end.hour == 17 and spec.weekly[0].end.minute == 30


def test_empty_and_non_mapping_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "dp"
    folder.mkdir()
    (folder / "a.yaml").write_text("", encoding="utf-8")
    (folder / "b.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert lines == [
        f"{folder}/a.yaml:1:1: error: file is empty (expected version: 1)",
        f"{folder}/b.yaml:1:1: error: the top level must be a mapping, got a list",
    ]


def test_no_definition_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, lines = validate(capsys, str(tmp_path), "--no-prompts")
    assert (code, lines) == (1, [f"{tmp_path}:1:1: error: no dialplan files (*.yaml) in this "
                                 "directory"])


def test_step_loop_that_never_waits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = _edit('"2": dept}', '"2": dept, "3": a}').replace(
        "      dept:\n",
        "      a:\n        type: set\n        name: x\n        value: \"1\"\n        next: b\n"
        "      b:\n        type: time\n        hours: office\n        open: a\n"
        "        closed: \"@hangup\"\n"
        "      dept:\n",
    )
    folder = write_definition(tmp_path / "dp", text)
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert lines == [f"{folder}/hotline.yaml:45:7: error: loop that never waits in entry 8890: "
                     "a -> b -> a (only set/time/subflow steps)"]


def test_make_prompts_helper_creates_files(tmp_path: Path) -> None:
    folder = make_prompts(tmp_path, ["welcome"], ["zh", "en"])
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.wav")) == [
        "en/welcome.wav", "zh/welcome.wav"]


def test_reserved_context_and_repeat_digit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = _edit("    operator: {queue: hotline}\n    start: menu",
                 "    operator: {queue: hotline, digit: \"*\"}\n    context: ivr-route\n"
                 "    start: menu")
    folder = write_definition(tmp_path / "dp", text)
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert code == 1
    assert lines == [
        f"{folder}/hotline.yaml:33:3: error: entry 8890: context 'ivr-route' is reserved "
        "(used by the generated dialplan)",
        f"{folder}/hotline.yaml:39:7: error: repeat digit '*' of menu step 'menu' in entry "
        "8890 collides with the press-0 operator digit",
    ]


def test_unused_flow_is_a_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = MINIMAL + "flows:\n  spare:\n    start: bye\n    steps:\n      bye: {type: hangup}\n"
    folder = write_definition(tmp_path / "dp", text)
    code, lines = validate(capsys, str(folder), "--no-prompts")
    assert (code, lines) == (0, [f"{folder}/hotline.yaml:50:3: warning: flow 'spare' is not "
                                 "used by any entry"])
