"""ivr.sim.expr: $[...] (ast_expr2 semantics), ${...} substitution; ivr.asterisk.appargs:
app arguments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.asterisk.appargs import parse_app, split_app_args
from ivr.asterisk.errors import AsteriskConfError, ExprError
from ivr.sim.expr import (
    DictScope,
    builtin_function,
    checkcondition,
    evaluate,
    substitute,
)


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        # quoted strings keep their quotes and compare as strings
        ('"queue" = "queue"', "1"),
        ('"zh" = "queue"', "0"),
        ('"1" = 1', "0"),
        ('"" = ""', "1"),
        # digits are numbers: numeric comparison when neither side is a string
        ("10 < 9", "0"),
        ("1 = 1.0", "1"),
        ("010 = 10", "1"),
        ("10 < 9a", "1"),  # '9a' is a string: "10" < "9a" as text
        ("abc < abd", "1"),
        ("2 >= 2", "1"),
        ("2 != 3", "1"),
        ("3 <= 2", "0"),
        # arithmetic, precedence, unary
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2+3*4", "14"),
        ("7 / 2", "3.5"),
        ("1 / 3", "0.333333333333333333"),
        ("6 / 2", "3"),
        ("1 / 0", "2147483647"),
        ("7 % 3", "1"),
        ("-7 % 3", "-1"),
        ("3 - -2", "5"),
        ("-3", "-3"),
        ("x + 2", "2"),
        ("x * 2", "0"),
        ("!0", "1"),
        ("!1", "0"),
        ("!abc", "1"),
        ("!", None),
        # logic: | returns the first non-empty/non-zero operand
        ("0 | fallback", "fallback"),
        ("yes | no", "yes"),
        ("1 & 0", "0"),
        ("a & b", "a"),
        ("1 = 1 & 2 = 2", "1"),
        ("1 = 2 | 3 = 3", "1"),
        # ternary
        ("1 ? yes :: no", "yes"),
        ("0 ? yes :: no", "no"),
        ('"" ? yes :: no', "no"),
        ("1 = 2 ? a :: b", "b"),
        # regex: ':' anchored, '=~' not; group returns the capture, else match length
        ("abc : ab", "2"),
        ("abc : bc", "0"),
        ("abc =~ bc", "2"),
        ('12345 : "(123)"', "123"),
        ('abc : "(x)"', ""),
        ("ab ~~ cd", "abcd"),
        ("", ""),
        ('"quoted"', '"quoted"'),
        ("中文 = 中文", "1"),
    ],
)
def test_evaluate(expr: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(ExprError):
            evaluate(expr)
    else:
        assert evaluate(expr) == want


@pytest.mark.parametrize("expr", ["1 +", "(1", "1 )", '"open', "1 ? 2", "COS(1)", "{", "a b"])
def test_evaluate_syntax_errors(expr: str) -> None:
    with pytest.raises(ExprError, match=r"\$\[|column"):
        evaluate(expr)


def test_substitute_dialplan_examples() -> None:
    scope = DictScope({"IVR_NEXT": "queue", "CHOICE": "1", "X": "abcdef", "N": "X"})
    assert substitute('$["${IVR_NEXT}" = "queue"]', scope) == "1"
    assert substitute('${IF($["${CHOICE}" = "1"]?en:zh)}', scope) == "en"
    scope.variables["CHOICE"] = "2"
    assert substitute('${IF($["${CHOICE}" = "1"]?en:zh)}', scope) == "zh"
    assert substitute("a${MISSING}b", scope) == "ab"
    assert substitute("${${N}}", scope) == "abcdef"
    assert substitute("${X:1:2}|${X:-2}|${X:2}|${X:1:-1}|${X:-3:2}|${X:10}", scope) == (
        "bc|ef|cdef|bcde|de|"
    )
    assert substitute("${LEN(${X})}-${ISNULL(${X})}-${EXISTS(${NOPE})}", scope) == "6-0-0"
    assert substitute("$[${LEN(${X})} + 1]", scope) == "7"
    assert substitute("cost: $5 and $[1+1]", scope) == "cost: $5 and 2"
    assert substitute("${IF($[1]?:empty)}", scope) == ""


def test_substitute_uses_scope_functions_first() -> None:
    calls: list[str] = []

    def callerid(args: str) -> str:
        calls.append(args)
        return "12345678901" if args == "num" else "张三"

    scope = DictScope({}, {"CALLERID": callerid})
    assert substitute("from ${CALLERID(num)} ${CALLERID(name)}", scope) == "from 12345678901 张三"
    assert substitute("${CALLERID(num):0:3}", scope) == "123"
    assert calls == ["num", "name", "num"]
    with pytest.raises(ExprError, match="unknown dialplan function NOPE"):
        substitute("${NOPE(1)}", scope)
    with pytest.raises(ExprError, match="missing '}'"):
        substitute("${UNCLOSED", scope)
    with pytest.raises(ExprError, match=r"missing '\]'"):
        substitute("$[1 + 2", scope)


def test_builtin_if_errors() -> None:
    assert builtin_function("if", "0?a:b") == "b"
    assert builtin_function("IF", " x ? a : b ") == "a"
    assert builtin_function("UNKNOWN", "") is None
    assert builtin_function("IF", "1?yes") == "yes"
    assert builtin_function("IF", "0?yes") == ""
    assert builtin_function("IF", '"0"?a:b') == "b"  # quotes removed by argument splitting
    for bad in ("no question mark", "1?", "?a:b"):
        with pytest.raises(ExprError, match="IF"):
            builtin_function("IF", bad)


def test_split_app_args() -> None:
    assert split_app_args("${IVR_QUEUE},t,,,300") == ["${IVR_QUEUE}", "t", "", "", "300"]
    assert split_app_args("hotline,tT,,,300") == ["hotline", "tT", "", "", "300"]
    assert split_app_args("") == []
    assert split_app_args("a,") == ["a", ""]
    assert split_app_args(",") == ["", ""]
    assert split_app_args('"a,b",c\\,d,(e,f),[g,h]') == ["a,b", "c,d", "(e,f)", "[g,h]"]
    assert split_app_args("CHANNEL(language)=zh") == ["CHANNEL(language)=zh"]
    assert split_app_args("a?b:c", "?", max_args=2) == ["a", "b:c"]
    with pytest.raises(ExprError):
        split_app_args("a", ",,")


def test_split_app_args_max_args_leaves_the_raw_remainder() -> None:
    # AST_DECLARE_APP_ARGS with N args: the Nth is the rest of the string, unparsed
    assert split_app_args('a,"b,c",d', max_args=2) == ["a", '"b,c",d']
    assert split_app_args("a,b", max_args=2) == ["a", "b"]
    assert split_app_args("a,", max_args=2) == ["a", ""]
    # MSet(a=1,b=2): pairs on ",", then each on its first "="
    assert split_app_args("x=1=2", "=", max_args=2) == ["x", "1=2"]


def test_split_app_args_raw_keeps_quotes_and_backslashes() -> None:
    # AST_NONSTANDARD_RAW_ARGS (ExecIf's '?' and ':'): remove_chars 0
    assert split_app_args('Set(A="x:y"):NoOp(\\:)', ":", raw=True) == [
        'Set(A="x:y")',
        "NoOp(\\:)",
    ]
    assert split_app_args('"a:b":c', ":", raw=True) == ['"a:b"', "c"]
    assert split_app_args('"a:b":c', ":") == ["a:b", "c"]
    assert split_app_args("a\\:b:c", ":", raw=True) == ["a\\:b", "c"]
    assert split_app_args("a\\:b:c", ":") == ["a:b", "c"]


@pytest.mark.parametrize(
    ("cond", "want"),
    [
        ("", False),
        ("0", False),
        ("1", True),
        ("00", False),
        (" 0", False),  # sscanf skips leading blanks
        ("-0", False),
        ("2abc", True),  # the leading integer decides
        ("0abc", False),
        ("abc", True),  # other strings are true
        (" ", True),
        ('"0"', True),  # quotes are not removed here
    ],
)
def test_checkcondition_is_pbx_checkcondition(cond: str, want: bool) -> None:
    assert checkcondition(cond) is want


def test_parse_app() -> None:
    assert parse_app("Queue(${IVR_QUEUE},t,,,300)") == ("Queue", "${IVR_QUEUE},t,,,300")
    assert parse_app(" Answer() ") == ("Answer", "")
    assert parse_app("Hangup") == ("Hangup", "")
    assert parse_app("NoOp(a(b)c)") == ("NoOp", "a(b)c")
    assert parse_app("DAHDI/g1/${GLOBAL(x)}") == ("DAHDI/g1/${GLOBAL(x)}", "")
    for bad in ("", "(x)", "NoOp(x", "NoOp(x) y"):
        with pytest.raises(ExprError):
            parse_app(bad)


_expr_text = st.text(
    alphabet=st.sampled_from(list('0123456789 ab"()|&=!<>+-*/%?:~.$[]{}\\中')), max_size=30
)


@settings(max_examples=500, deadline=None)
@given(_expr_text)
def test_evaluate_arbitrary_text_returns_str_or_expr_error(text: str) -> None:
    try:
        assert isinstance(evaluate(text), str)
    except ExprError:
        pass


@settings(max_examples=500, deadline=None)
@given(_expr_text)
def test_substitute_arbitrary_text_returns_str_or_conf_error(text: str) -> None:
    scope = DictScope({"a": "1", "b": "x"})
    try:
        assert isinstance(substitute(text, scope), str)
    except AsteriskConfError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab,()[]"\\ ')), max_size=20))
def test_split_and_parse_app_arbitrary(text: str) -> None:
    assert all(isinstance(a, str) for a in split_app_args(text))
    try:
        app, data = parse_app(text)
    except ExprError:
        return
    assert app and isinstance(data, str)
