"""The directory (issue 11): departments at four levels, emergency services for one-key
transfer, interpreter desks per language, partner hotlines — loaded and validated like
the rest of dialplans/ (exact path:line:col lines), and resolved by ``ivr.directory``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.dialplan import DialplanError, load_definition
from ivr.dialplan import model as m
from ivr.directory import (
    DirectoryError,
    NotDialable,
    NotOneKey,
    UnknownTarget,
    fallback_for,
    interpreter_for,
    one_key_services,
    resolve,
    resolve_one_key,
)
from tests.test_dialplan_support import MINIMAL, SHIPPED, write_definition

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# Monday 2026-06-01 (no holiday), 10:00 and 20:00 in Shanghai
OPEN = dt.datetime(2026, 6, 1, 10, 0, tzinfo=SHANGHAI)
CLOSED = dt.datetime(2026, 6, 1, 20, 0, tzinfo=SHANGHAI)

DIRECTORY = """\
version: 1
departments:
  district:
    label: District office
    number: "2101"
    level: district
    hours: office
    fallback: {entry: city}
  city: {label: City bureau, number: "2100", level: city, hours: office,
         fallback: {queue: hotline}}
  street: {label: Street office, number: "2111", level: street, parent: district,
           fallback: {entry: district}}
emergency:
  police: {label: Police, number: "110"}
  fire: {number: "119", one_key: false}
interpreters:
  interp-en: {label: English desk, number: "2201", language: en, announce: welcome}
partners:
  other-12345: {label: Other city, number: "+8675512345"}
"""


def _folder(tmp_path: Path, directory: str = DIRECTORY) -> Path:
    folder = write_definition(tmp_path / "dp", MINIMAL)
    (folder / "directory.yaml").write_text(directory, encoding="utf-8")
    return folder


def _validate(capsys: pytest.CaptureFixture[str], folder: Path) -> tuple[int, list[str]]:
    code = main(["dialplan", "validate", str(folder), "--no-prompts", "--today", "2026-06-01"])
    return code, capsys.readouterr().out.splitlines()


def test_shipped_directory_has_every_kind() -> None:
    d = load_definition(SHIPPED)
    levels = {e.level for e in d.departments.values()}
    assert levels == {"city", "district", "street", "community"}
    assert {e.number for e in one_key_services(d)} == {"110", "119", "120", "122"}
    # an interpreter desk for every language of the definition
    assert {e.language for e in d.interpreters.values()} == set(d.languages) - {"zh"}
    assert {"12315", "12345"} & {e.number for e in d.partners.values()} == set()
    assert any(e.number.endswith("12345") for e in d.partners.values())
    assert set(d.directory) == {*d.departments, *d.emergency, *d.interpreters, *d.partners}
    # every chain of fallbacks ends in a queue of the hotline
    for entry in d.directory.values():
        if entry.kind == "emergency":
            continue
        offer = fallback_for(d, resolve(d, entry.name, now=CLOSED), now=CLOSED)
        assert entry.fallback is None or offer is not None, entry.name


def test_a_small_directory_loads(tmp_path: Path) -> None:
    d = load_definition(_folder(tmp_path))
    street = d.directory["street"]
    assert (street.kind, street.level, street.parent, street.fallback) == (
        "department", "street", "district", m.Fallback("entry", "district"))
    assert d.directory["city"].fallback_queue == "hotline"
    assert d.emergency["police"].one_key and not d.emergency["fire"].one_key
    assert d.emergency["police"].label == "Police" and d.emergency["fire"].label == "fire"
    assert d.interpreters["interp-en"].language == "en"
    assert d.interpreters["interp-en"].announce == "welcome"
    assert d.partners["other-12345"].kind == "partner"


def _edit(old: str, new: str) -> str:
    assert old in DIRECTORY, old
    return DIRECTORY.replace(old, new)


CASES = [
    ("unknown-hours", _edit("    hours: office\n    fallback: {entry: city}",
                            "    hours: ofice\n    fallback: {entry: city}"),
     "directory.yaml:3:3: error: department 'district': undefined hours 'ofice' (defined: "
     "office) / 未定义的工作时间"),
    ("unknown-fallback-entry", _edit("{entry: city}", "{entry: cty}"),
     "directory.yaml:3:3: error: department 'district': undefined fallback entry 'cty' "
     "(defined: city, district, fire, interp-en, market, other-12345, police, street) / "
     "兜底目录条目不存在"),
    ("unknown-fallback-queue", _edit("{queue: hotline}", "{queue: nobody}"),
     "directory.yaml:9:3: error: department 'city': undefined fallback queue 'nobody' "
     "(defined: english, hotline) / 兜底队列不存在"),
    ("fallback-two-kinds", _edit("{queue: hotline}", "{queue: hotline, entry: district}"),
     "directory.yaml:10:20: error: 'fallback' of department 'city' needs exactly one of "
     "'queue' or 'entry' / 兜底须且只能指定 queue（队列）或 entry（目录条目）之一"),
    ("fallback-circle", _edit("{queue: hotline}", "{entry: street}"),
     "directory.yaml:3:3: error: department 'district': fallbacks go round in a circle: "
     "district -> city -> street -> district / 兜底循环"),
    ("unknown-language", _edit("language: en,", "language: de,"),
     "directory.yaml:17:3: error: interpreter 'interp-en': undefined language 'de' "
     "(defined: en, zh) / 未定义的语言"),
    ("interpreter-without-language", _edit(", language: en,", ","),
     "directory.yaml:17:14: error: interpreter desk 'interp-en' is missing required key "
     "'language' / 翻译坐席须指定语言"),
    ("duplicate-number", _edit('number: "2201"', 'number: "2100"'),
     "directory.yaml:17:3: error: interpreter 'interp-en': number 2100 is already the "
     "number of department 'city' at "),
    ("number-with-dashes", _edit('"+8675512345"', '"0755-12345"'),
     "directory.yaml:19:44: error: 'number' of partner hotline 'other-12345' '0755-12345' is "
     "not a dialable number"),
    ("number-with-letters", _edit('number: "2111"', 'number: "21a1"'),
     "directory.yaml:11:42: error: 'number' of department 'street' '21a1' is not a dialable "
     "number"),
    ("emergency-not-emergency", _edit('number: "119"', 'number: "999"'),
     "directory.yaml:15:18: error: 'number' of emergency service 'fire' must be one of 110, "
     "119, 120, 122, got '999' / 紧急服务号码只能是 110、119、120、122"),
    ("emergency-number-as-department", _edit('number: "2111"', 'number: "120"'),
     "directory.yaml:11:3: error: department 'street': 120 is an emergency number: list it "
     "under 'emergency:' (one-key transfer) / 紧急号码请写在 emergency 中"),
    ("our-own-entry", _edit('"+8675512345"', '"12345"'),
     "directory.yaml:19:3: error: partner 'other-12345': 12345 is an entry of this hotline "
     "(dialling it would reach this hotline again) / 该号码是本热线的入口"),
    ("parent-not-above", _edit("level: street, parent: district",
                               "level: district, parent: district"),
     "directory.yaml:11:3: error: department 'street': parent 'district' is at level "
     "district, not above district (city > district > street > community) / "
     "上级部门层级须高于本部门"),
    ("parent-unknown", _edit("parent: district", "parent: police"),
     "directory.yaml:11:3: error: department 'street': parent 'police' is not a department "
     "(defined: city, district, market, street) / 上级部门不存在"),
    ("id-in-two-sections", _edit("  other-12345:", "  police:"),
     "directory.yaml:19:3: error: directory id 'police' of partners is already used in "
     "emergency at "),
    ("unknown-key", _edit("one_key: false}", "one_key: false, hours: office}"),
     "directory.yaml:15:41: error: unknown key 'hours' in emergency service 'fire' "
     "(expected one of: label, number, one_key, announce)"),
    ("bad-level", _edit("level: district\n", "level: province\n"),
     "directory.yaml:6:12: error: 'level' of department 'district' must be one of: city, "
     "district, street, community, got 'province'"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_directory_mistake_gives_its_exact_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    folder = _folder(tmp_path, text)
    code, lines = _validate(capsys, folder)
    assert code == 1
    assert any(x.startswith(f"{folder}/{expected}") for x in lines), "\n".join(lines)
    with pytest.raises(DialplanError) as info:
        load_definition(folder)
    assert any(str(p).startswith(f"{folder}/{expected}") for p in info.value.problems)


def test_the_small_directory_is_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path
                                      ) -> None:
    assert _validate(capsys, _folder(tmp_path)) == (0, [])


def test_resolve_an_id_a_number_and_a_number_of_an_entry(tmp_path: Path) -> None:
    d = load_definition(_folder(tmp_path))
    city = resolve(d, "city", now=OPEN)
    assert (city.id, city.kind, city.number, city.dial_string, city.open_now,
            city.hours) == ("city", "department", "2100", "Local/2100@outbound", True,
                            "office")
    assert city.open_state is not None and city.open_state.reason == "weekly"
    # a number typed with separators; the number of an entry is that entry
    by_number = resolve(d, " 2100 ", now=OPEN)
    assert by_number.entry is d.directory["city"]
    free = resolve(d, "020-1234 5678", now=OPEN)
    assert (free.id, free.kind, free.number, free.dial_string, free.open_now,
            free.fallback) == (None, "number", "02012345678", "Local/02012345678@outbound",
                               True, None)
    assert resolve(d, "street", now=CLOSED).open_now  # no hours: always reachable


def test_closed_targets_offer_their_fallback(tmp_path: Path) -> None:
    d = load_definition(_folder(tmp_path))
    district = resolve(d, "district", now=CLOSED)
    assert not district.open_now and district.fallback == m.Fallback("entry", "city")
    # city is closed too: its queue is offered
    offer = fallback_for(d, district, now=CLOSED)
    assert offer is not None and (offer.kind, offer.name) == ("queue", "hotline")
    assert offer.as_data() == {"fallback_kind": "queue", "fallback": "hotline"}
    # during office hours the fallback entry itself is offered, resolved
    offer = fallback_for(d, resolve(d, "district", now=OPEN), now=OPEN)
    assert offer is not None and (offer.kind, offer.name) == ("entry", "city")
    assert offer.target is not None and offer.target.dial_string == "Local/2100@outbound"
    assert fallback_for(d, resolve(d, "police", now=OPEN), now=OPEN) is None


def test_one_key_and_interpreters(tmp_path: Path) -> None:
    d = load_definition(_folder(tmp_path))
    assert resolve_one_key(d, "110").id == "police"
    assert resolve_one_key(d, "police").dial_string == "Local/110@outbound"
    with pytest.raises(NotOneKey) as info:
        resolve_one_key(d, "fire")  # one_key: false
    assert "一键转接" in str(info.value)
    with pytest.raises(NotOneKey):
        resolve_one_key(d, "2100")
    desk = interpreter_for(d, "en")
    assert desk is not None and desk.name == "interp-en"
    assert interpreter_for(d, "zh") is None


@pytest.mark.parametrize(("target", "error", "code"), [
    ("nobody", UnknownTarget, "directory_unknown"),
    ("", UnknownTarget, "directory_unknown"),
    ("21a1", NotDialable, "directory_not_dialable"),
    ("1", NotDialable, "directory_not_dialable"),
    ("2100;Hangup", NotDialable, "directory_not_dialable"),
    ("2100\nAction: Originate", NotDialable, "directory_not_dialable"),
    ("1" * 21, NotDialable, "directory_not_dialable"),
])
def test_bad_targets_raise_a_clear_error(tmp_path: Path, target: str,
                                         error: type[DirectoryError], code: str) -> None:
    d = load_definition(_folder(tmp_path))
    with pytest.raises(error) as info:
        resolve(d, target, now=OPEN)
    assert info.value.code == code and info.value.http_status in (404, 422)
    message = str(info.value)
    assert repr(target) in message and " / " in message  # English / 中文


def test_an_announcement_is_a_prompt_validate_checks(tmp_path: Path) -> None:
    from ivr.dialplan.validate import check_prompts

    d = load_definition(_folder(tmp_path, DIRECTORY.replace("announce: welcome",
                                                            "announce: nosuch")))
    problems = check_prompts(d, lambda name, lang, chain: None if name == "nosuch" else lang)
    missing = [str(p) for p in problems if "'nosuch'" in p.message]
    assert missing and all(":17:3: error: prompt 'nosuch' is missing" in x for x in missing)
