"""ivr.asterisk.conf: the recorded config, comments, templates, includes, errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.asterisk.conf import (
    Category,
    Item,
    browse,
    find_category,
    load_conf,
    parse_conf,
    render_conf,
    resolve_items,
)
from ivr.asterisk.errors import AsteriskConfError, ConfRenderError, ConfSyntaxError
from ivr.errors import IvrError


def _shape(cats: list[Category]) -> list[tuple[str, list[str], bool, list[tuple[str, str, str]]]]:
    return [
        (c.name, c.templates, c.is_template, [(i.key, i.op, i.value) for i in c.items])
        for c in cats
    ]


def _etc(traces: Path) -> list[Path]:
    files = sorted((traces / "asterisk-etc").glob("*.conf"))
    assert files
    return files


def test_every_recorded_config_parses_and_round_trips(traces: Path) -> None:
    for path in _etc(traces):
        cats = load_conf(path)
        assert cats, path
        for c in cats:
            assert c.file == str(path)
            for item in c.items:
                assert item.file == str(path)
                raw_line = path.read_text().split("\n")[item.line - 1]
                assert raw_line[item.key_col - 1 :].startswith(item.key)
                assert raw_line[item.col - 1 :].startswith(item.value)
        again = parse_conf(render_conf(cats, header_comment=f"generated from {path.name}"))
        assert _shape(again) == _shape(cats)


def test_manager_conf_values(traces: Path) -> None:
    cats = load_conf(traces / "asterisk-etc" / "manager.conf")
    assert [c.name for c in cats] == ["general", "ivr"]
    ivr = cats[1]
    assert ivr.get("secret") == "ivrsecret"
    assert ivr.get("permit") == "127.0.0.1/255.255.255.255"
    assert ivr.line == 6


def test_sip_conf_repeated_keys_keep_order(traces: Path) -> None:
    general = load_conf(traces / "asterisk-etc" / "sip.conf")[0]
    assert [i.value for i in general.items if i.key == "allow"] == ["ulaw", "alaw"]


def test_extensions_conf_object_operator_and_lines(traces: Path) -> None:
    cats = load_conf(traces / "asterisk-etc" / "extensions.conf")
    assert [c.name for c in cats] == [
        "general",
        "globals",
        "from-pstn",
        "agent-local",
        "conf",
        "agents",
        "park",
        "perf",
    ]
    first = cats[2].items[0]
    assert (first.key, first.op, first.line) == ("exten", "=>", 7)
    assert first.value == "12345,1,NoOp(12345 hotline call from ${CALLERID(num)})"
    assert cats[2].items[1] == Item("same", "=>", "n,Answer()", first.file, 8, 10, 2)


def test_comments_escapes_and_whitespace() -> None:
    text = (
        "; leading comment\n"
        "[a]   ; trailing\n"
        "  x   =   1 2   ; c\n"
        "y=a\\;b\n"
        "z = \\\\;\n"
        "w=>v;--block\n"
        "still comment --; q = 2\n"
        "r = 1 ;-- inline --; + more\n"
        ";---not a block\n"
        "s = ;-- ;-- nested --; x --; t\n"
    )
    (cat,) = parse_conf(text)
    assert [(i.key, i.op, i.value) for i in cat.items] == [
        ("x", "=", "1 2"),
        ("y", "=", "a;b"),
        ("z", "=", "\\;"),
        ("w", "=>", "v"),
        ("q", "=", "2"),
        ("r", "=", "1  + more"),
        ("s", "=", "t"),
    ]


def test_templates_inheritance_and_append() -> None:
    text = (
        "[base](!)\nstrategy = ringall\ntimeout = 15\n"
        "[extra](!)\nretry = 3\n"
        "[q](base,extra)\ntimeout = 20\n"
        "[q](+)\nweight = 2\n"
        "[x]\nk = a\nk += b\n"
    )
    cats = parse_conf(text)
    assert [c.name for c in cats] == ["base", "extra", "q", "x"]
    base, _, q, x = cats
    assert base.is_template and not q.is_template
    assert q.templates == ["base", "extra"]
    assert [(i.key, i.value) for i in q.items] == [("timeout", "20"), ("weight", "2")]
    assert [(i.key, i.value) for i in resolve_items(cats, q)] == [
        ("strategy", "ringall"),
        ("timeout", "15"),
        ("retry", "3"),
        ("timeout", "20"),
        ("weight", "2"),
    ]
    assert x.get("k") == "a b"  # Asterisk appends the raw text after "+="
    assert find_category(cats, "nope") is None
    # what a module browsing the file sees: no templates, inherited items first
    seen = [(c.name, [(i.key, i.value) for i in items]) for c, items in browse(cats)]
    assert seen == [
        ("q", [("strategy", "ringall"), ("timeout", "15"), ("retry", "3"),
               ("timeout", "20"), ("weight", "2")]),
        ("x", [("k", "a b")]),
    ]


def test_include_relative_to_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.conf").write_text('[a]\nx = 1\n#include "sub/part.conf"\ny = 2\n')
    (tmp_path / "sub" / "part.conf").write_text("z = 3\n#include <more.conf>\n[b]\nk = v\n")
    (tmp_path / "sub" / "more.conf").write_text("m = 4\n")
    (tmp_path / "sub" / "opt1.conf").write_text("[o1]\n")
    (tmp_path / "sub" / "opt2.conf").write_text("[o2]\n")
    cats = load_conf(tmp_path / "main.conf")
    assert _shape(cats) == [
        ("a", [], False, [("x", "=", "1"), ("z", "=", "3"), ("m", "=", "4")]),
        ("b", [], False, [("k", "=", "v"), ("y", "=", "2")]),
    ]
    assert cats[0].items[1].file == str(tmp_path / "sub" / "part.conf")
    assert cats[0].items[2].line == 1
    # tryinclude of a missing file is fine; globs are sorted
    cats = parse_conf("#tryinclude missing.conf\n#include sub/opt*.conf\n", str(tmp_path / "x"))
    assert [c.name for c in cats] == ["o1", "o2"]


def test_include_errors(tmp_path: Path) -> None:
    (tmp_path / "loop.conf").write_text("[a]\n#include loop.conf\n")
    with pytest.raises(ConfSyntaxError, match="cycle") as ei:
        load_conf(tmp_path / "loop.conf")
    assert (ei.value.line, ei.value.col) == (2, 1)
    with pytest.raises(ConfSyntaxError) as ei:
        parse_conf("[a]\n  #include nothere.conf\n", str(tmp_path / "m.conf"))
    assert str(ei.value) == (
        f"{tmp_path / 'm.conf'}:2:3: error: #include file 'nothere.conf' does not exist"
    )
    with pytest.raises(ConfSyntaxError, match="#exec is not supported"):
        parse_conf("#exec /bin/true\n")
    with pytest.raises(ConfSyntaxError, match="no directory"):
        parse_conf("#include x.conf\n")


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("[a\nx=1\n", 1, 1, "no closing ']'"),
        ("[a]\n  novalue here\n", 2, 3, "no '='"),
        ("x = 1\n", 1, 1, "no category"),
        ("[a]\n   = 1\n", 2, 4, "no variable name"),
        ("[a](b)\n", 1, 5, "inherits from [b]"),
        ("[a](!\n", 1, 4, "no closing ')'"),
        ("[a] junk\n", 1, 4, "unexpected text"),
        ("[a]\nx=1\n;-- open\n\n", 3, 1, "unterminated block comment"),
        ("[a]\nx = 1 --;\n", 2, 7, "none is open"),
        ("[b](+)\n", 1, 1, "does not exist"),
        ("#frob x\n", 1, 1, "unknown directive '#frob'"),
        ("[]\n", 1, 1, "empty category name"),
    ],
)
def test_syntax_errors_have_exact_positions(text: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as ei:
        parse_conf(text, "t.conf", include_dir=".")
    err = ei.value
    assert (err.file, err.line, err.col) == ("t.conf", line, col), str(err)
    assert message in err.message
    assert str(err).startswith(f"t.conf:{line}:{col}: error: ")
    assert isinstance(err, AsteriskConfError) and isinstance(err, IvrError)


def test_render_escapes_and_refuses_unrepresentable() -> None:
    cats = [
        Category("t", is_template=True, items=[Item("a", "=", "x;y")]),
        Category("c", templates=["t"], items=[Item("#key", "=>", "v;--w--;"), Item("e", "=", "")]),
    ]
    text = render_conf(cats, header_comment="line one\nline two")
    assert text.startswith("; line one\n; line two\n")
    assert "a = x\\;y" in text and "[c](t)" in text and "[t](!)" in text
    assert _shape(parse_conf(text)) == _shape(cats)
    for bad in (
        [Category("a\nb")],
        [Category("c", items=[Item("k", "=", " padded")])],
        [Category("c", items=[Item("k=", "=", "v")])],
        [Category("c", items=[Item("k", "=", "two\nlines")])],
        [Category("c", items=[Item("k", ":", "v")])],
        [Category("c]")],
        [Category("c", templates=["later"]), Category("later", is_template=True)],
    ):
        with pytest.raises(ConfRenderError):
            render_conf(bad)


_line = st.text(alphabet=st.sampled_from(list('[]()!+,;-=>#\\ \tabcXZ.1_"<')), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=12))
def test_arbitrary_text_parses_or_raises_conf_error(lines: list[str]) -> None:
    try:
        cats = parse_conf("\n".join(lines), "<fuzz>")
    except AsteriskConfError:
        return
    try:
        text = render_conf(cats)
    except ConfRenderError:
        return
    assert _shape(parse_conf(text)) == _shape(cats)


_word = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _word, st.lists(st.tuples(_word, st.sampled_from(["=", "=>"]), _word), max_size=5)
        ),
        max_size=5,
    )
)
def test_render_then_parse_round_trips(spec: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
    cats = [Category(n, items=[Item(k, op, v) for k, op, v in items]) for n, items in spec]
    try:
        text = render_conf(cats)
    except ConfRenderError:
        return
    assert _shape(parse_conf(text)) == _shape(cats)


def test_only_ascii_whitespace_is_stripped_and_cr_is_not_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "zh.conf"
    path.write_bytes("[队列]\r\n名称 = \u3000热线\u3000 \r\nx = a\rb\n".encode())
    (cat,) = load_conf(path)
    assert cat.name == "队列"
    assert [(i.key, i.value) for i in cat.items] == [("名称", "\u3000热线\u3000"), ("x", "a\rb")]


def test_cli_check(traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ivr.asterisk import cli

    def main(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="ivr")
        cli.register(parser.add_subparsers())
        args = parser.parse_args(argv)
        return int(args.func(args))

    assert main(["asterisk", "check", str(traces / "asterisk-etc")]) == 0
    out = capsys.readouterr().out
    assert "extensions.conf: ok, 6 contexts" in out and "queues.conf: ok, 3 queues" in out
    bad = tmp_path / "extensions.conf"
    bad.write_text("[c]\nexten => 1,n,NoOp\n")
    assert main(["asterisk", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:12: error: priority 'n' needs a numbered priority" in err
