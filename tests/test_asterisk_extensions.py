"""ivr.asterisk.extensions: the recorded dialplan, priorities/labels, pattern order, errors."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.asterisk.conf import load_conf, parse_conf, render_conf
from ivr.asterisk.errors import AsteriskConfError, ConfRenderError, ConfSyntaxError
from ivr.asterisk.extensions import (
    Dialplan,
    Priority,
    dialplan_to_categories,
    ext_cmp,
    extension_matches,
    parse_extensions,
)


def _dp(text: str) -> Dialplan:
    return parse_extensions(parse_conf(text, "extensions.conf"))


@pytest.fixture(scope="module")
def recorded(traces: Path) -> Dialplan:
    return parse_extensions(load_conf(traces / "asterisk-etc" / "extensions.conf"))


def test_recorded_contexts_and_globals(recorded: Dialplan) -> None:
    assert list(recorded.contexts) == ["from-pstn", "agent-local", "conf", "agents", "park", "perf"]
    assert recorded.globals == {"FASTAGI": "agi://127.0.0.1:4573"}
    assert recorded.general == {"static": "yes", "writeprotect": "no"}


def test_recorded_hotline_entry(recorded: Dialplan) -> None:
    ext = recorded.match("from-pstn", "12345")
    assert ext is not None and ext.name == "12345" and not ext.is_pattern
    apps = [(p.number, p.label, p.app, p.data) for p in ext.ordered()]
    assert apps == [
        (1, None, "NoOp", "12345 hotline call from ${CALLERID(num)}"),
        (2, None, "Answer", ""),
        (3, None, "Set", "CHANNEL(language)=zh"),
        (4, None, "AGI", "${FASTAGI}/ivr?entry=main"),
        (5, None, "GotoIf", '$["${IVR_NEXT}" = "queue"]?queue'),
        (6, None, "Hangup", ""),
        (7, "queue", "Queue", "${IVR_QUEUE},t,,,300"),
        (8, None, "Hangup", ""),
    ]
    queue = recorded.find("from-pstn", "12345", "queue")
    assert queue is not None and queue.number == 7 and queue.line == 13
    assert recorded.find("from-pstn", "12345", 7) == queue
    assert recorded.find("from-pstn", "12345", 9) is None
    assert recorded.find("from-pstn", "99999", 1) is None
    assert recorded.match("nope", "12345") is None


def test_recorded_patterns(recorded: Dialplan) -> None:
    conf = recorded.match("conf", "8001")
    assert conf is not None and conf.name == "_X." and conf.context == "conf"
    assert [p.app for p in conf.ordered()] == ["NoOp", "ConfBridge", "Hangup"]
    assert recorded.match("conf", "8") is None  # '.' needs at least one more digit
    assert recorded.match("conf", "a80") is None
    assert recorded.match("conf", "80a") is conf  # "." matches any characters
    dial = recorded.find("agents", "1001", 1)
    assert dial is not None and (dial.app, dial.data) == ("Dial", "Local/${EXTEN}@agent-local")
    park = recorded.find("park", "s", 1)
    assert park is not None and (park.app, park.data) == ("Wait", "300")
    perf = recorded.find("perf", "7000", 3)
    assert perf is not None and perf.data == 'CHANNEL(language)=${IF($["${CHOICE}" = "1"]?en:zh)}'


def test_exact_before_pattern_and_asterisk_order() -> None:
    names = [
        "_X.",
        "_!",
        "_X!",
        "_NXX",
        "_ZXX",
        "_[1-5]XX",
        "_1XX",
        "_1.",
        "_12X",
        "123",
        "_[12]XX",
        "_[0-9]XX",
        "100",
        "_1[0-1]X",
    ]
    assert sorted(names, key=functools.cmp_to_key(ext_cmp)) == [
        "100",
        "123",
        "_12X",
        "_1[0-1]X",
        "_1XX",
        "_1.",
        "_[12]XX",
        "_[1-5]XX",
        "_NXX",
        "_ZXX",
        "_[0-9]XX",
        "_X.",
        "_X!",
        "_!",
    ]
    text = "[c]\n" + "".join(f"exten => {n},1,NoOp({n})\n" for n in reversed(names))
    dp = _dp(text)
    cases = {
        "123": "123",
        "124": "_12X",
        "100": "100",
        "101": "_1[0-1]X",
        "199": "_1XX",
        "1999": "_1.",
        "299": "_[12]XX",
        "599": "_[1-5]XX",
        "699": "_NXX",
        "099": "_[0-9]XX",
        "0999": "_X.",
        "": "_!",
        "*": "_!",
    }
    for dialled, want in cases.items():
        got = dp.match("c", dialled)
        assert got is not None and got.name == want, (dialled, got)


def test_pattern_semantics() -> None:
    assert extension_matches("_X.", "12")
    assert not extension_matches("_X.", "1")
    assert extension_matches("_X!", "1")
    assert extension_matches("_N", "2") and not extension_matches("_N", "1")
    assert extension_matches("_Z", "1") and not extension_matches("_Z", "0")
    assert extension_matches("_x", "7")  # classes are case-insensitive
    assert extension_matches("_[1-35]", "5") and not extension_matches("_[1-35]", "4")
    assert extension_matches("_1-2", "12") and extension_matches("12", "1-2")
    assert extension_matches("_1-", "1") and extension_matches("_1X", "1-2-")
    assert not extension_matches("_1 ", "1")  # only '-' is fluff, not ' '
    assert extension_matches("_[a-c]x", "b0") and not extension_matches("_a", "A")
    assert extension_matches("_[]1", "1")
    assert not extension_matches("_1X", "1")
    assert extension_matches("s", "s") and not extension_matches("s", "S")


def test_includes_are_searched_after_own_extensions_once() -> None:
    dp = _dp(
        "[a]\ninclude => b\ninclude => c\nexten => _X.,1,NoOp(a)\n"
        "[b]\nexten => 100,1,NoOp(b)\ninclude => a\n"
        "[c]\nexten => 100,1,NoOp(c)\nexten => 200,1,NoOp(c)\nexten => 200,2,NoOp(c2)\n"
    )
    assert dp.find("a", "100", 1).data == "a"  # type: ignore[union-attr]
    assert dp.find("b", "100", 1).data == "b"  # type: ignore[union-attr]
    # priority 2 only exists via the include: Asterisk keeps searching
    assert dp.find("a", "200", 2).data == "c2"  # type: ignore[union-attr]
    assert dp.find("a", "*", 1) is None
    assert dp.contexts["a"].includes[0].context == "b"


def test_priorities_labels_hints_cid() -> None:
    dp = _dp(
        "[t](!)\n"
        "exten => 300,1,NoOp(from template)\n"
        "[c](t)\n"
        "exten => 100,hint,SIP/100&SIP/101\n"
        "exten => 100,1(start),Answer\n"
        "exten => 100,n,Set(A=1)\n"
        "exten => 100,n(again),Goto(start)\n"
        "exten => 100,start+10,NoOp(eleven)\n"
        "exten => 100,20,NoOp\n"
        "same => s+1,NoOp(21)\n"
        "exten => 200/5551234,1,NoOp(vip)\n"
        "exten => 200,1,NoOp(anyone)\n"
    )
    ext = dp.match("c", "100")
    assert ext is not None and ext.hint == "SIP/100&SIP/101"
    assert sorted(ext.priorities) == [1, 2, 3, 11, 20, 21]
    assert ext.priority("again").number == 3  # type: ignore[union-attr]
    assert dp.hint("c", "100") == "SIP/100&SIP/101"
    assert dp.find("c", "200", 1, caller_id="5551234").data == "vip"  # type: ignore[union-attr]
    assert dp.find("c", "200", 1, caller_id="5550000").data == "anyone"  # type: ignore[union-attr]
    assert dp.find("c", "200", 1).data == "anyone"  # type: ignore[union-attr]
    assert "t" not in dp.contexts  # templates are not contexts
    assert dp.find("c", "300", 1).data == "from template"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("[c]\nsame => n,NoOp\n", 2, 9, "no previous 'exten =>'"),
        ("[c]\nexten => 1,n,NoOp\n", 2, 12, "needs a numbered priority"),
        ("[c]\nexten => 1,1(x,NoOp\n", 2, 13, "missing its ')'"),
        ("[c]\nexten => 1,1,NoOp\nexten => 1,1,Hangup\n", 3, 12, "already defined at"),
        ("[c]\nexten => 1,1,NoOp(a\n", 2, 14, "no closing ')'"),
        ("[c]\nexten => 1,1,NoOp(a) b\n", 2, 14, "after NoOp(...)"),
        ("[c]\nexten => 1,1,\n", 2, 14, "missing application"),
        ("[c]\nexten => 1,bogus,NoOp\n", 2, 12, "unknown label"),
        ("[c]\nexten => _[12,1,NoOp\n", 2, 10, "'[' without ']'"),
        ("[c]\n  extn => 1,1,NoOp\n", 2, 3, "unknown dialplan keyword 'extn'"),
        ("[c]\nexten => 1\n", 2, 10, "expected 'exten => ext,priority"),
        ("[c]\nexten => 1,0,NoOp\n", 2, 12, "1 or more"),
        ("[c]\nexten => 1,1(a),NoOp\nsame => n(a),NoOp\n", 3, 9, "label 'a' already used"),
    ],
)
def test_dialplan_errors(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as ei:
        _dp(text)
    err = ei.value
    assert (err.file, err.line, err.col) == ("extensions.conf", line, col), str(err)
    assert message in err.message


_pat = st.text(alphabet=st.sampled_from(list("_XZN[]-.!0129a ")), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pat, max_size=6), st.text(alphabet="0123456789-*#as", max_size=6))
def test_arbitrary_patterns_load_or_raise(pats: list[str], dialled: str) -> None:
    text = "[c]\n" + "".join(f"exten => {p},1,NoOp()\n" for p in pats)
    try:
        dp = _dp(text)
    except AsteriskConfError:
        return
    got = dp.match("c", dialled)
    assert got is None or extension_matches(got.name, dialled)


def test_repeated_context_merges_but_numbering_restarts() -> None:
    dp = _dp("[c]\nexten => 1,1,NoOp(a)\n[GLOBALS]\nX = 1\n[c]\nexten => 2,1,NoOp(b)\n")
    assert [e.name for e in dp.contexts["c"].extensions] == ["1", "2"]
    assert dp.globals == {"X": "1"}
    with pytest.raises(ConfSyntaxError, match="no previous 'exten =>'"):
        _dp("[c]\nexten => 1,1,NoOp(a)\n[c]\nsame => n,NoOp(b)\n")


def _dp_shape(dp: Dialplan) -> object:
    return (
        dp.general,
        dp.globals,
        {
            name: (
                [(i.context, i.timing) for i in ctx.includes],
                ctx.ignorepats,
                sorted(
                    (
                        e.name,
                        e.cidmatch or "",
                        e.hint or "",
                        [(p.number, p.label, p.app, p.data) for p in e.ordered()],
                    )
                    for e in ctx.extensions
                ),
            )
            for name, ctx in dp.contexts.items()
        },
    )


def test_dialplan_written_back_reads_the_same(recorded: Dialplan) -> None:
    text = render_conf(dialplan_to_categories(recorded), header_comment="regenerated")
    assert " same => n(queue),Queue(${IVR_QUEUE},t,,,300)" not in text  # no indentation
    assert "same => n(queue),Queue(${IVR_QUEUE},t,,,300)" in text
    assert _dp_shape(parse_extensions(parse_conf(text))) == _dp_shape(recorded)
    dp = _dp(
        "[c]\ninclude => d,08:00-18:00,mon-fri,*,*\nignorepat => 9\n"
        "exten => 100/555,hint,SIP/100\nexten => 100/555,1(a),NoOp(x\\;y)\n"
        "same => 5,Set(A=${IF($[1]?a:b)})\n[d]\n"
    )
    again = parse_extensions(parse_conf(render_conf(dialplan_to_categories(dp))))
    assert _dp_shape(again) == _dp_shape(dp)
    dp.contexts["c"].extensions[0].priorities[1] = Priority(1, None, "Bad,App", "")
    with pytest.raises(ConfRenderError):
        dialplan_to_categories(dp)
