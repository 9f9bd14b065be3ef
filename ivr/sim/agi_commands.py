"""AGI command handling as Asterisk's res_agi answers it (no socket here): each
handler gets the parsed argv and returns the reply line(s)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.sim.media import GETDATA_TIMEOUT, getdata, getdata_full, offer_menu_input, stream
from ivr.sim.model import Channel, ChannelHungUp, State

if TYPE_CHECKING:
    from ivr.sim.pbx import Pbx

STREAM_FILE_USAGE = (
    "520-Invalid command syntax.  Proper usage follows:\n"
    "Send the given file, allowing playback to be interrupted by the given digits, if any. "
    "Returns <literal>0</literal> if playback completes without a digit being pressed, or the "
    "ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error "
    "or if the channel was disconnected. If musiconhold is playing before calling stream file "
    "it will be automatically stopped and will not be restarted after completion.\n"
    "It sets the following channel variables upon completion:\n"
    "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n"
    "    <value>SUCCESS</value>\n"
    "    <value>FAILED</value>\n"
    "520 End of proper usage.\n"
)
log = logging.getLogger("ivr.sim.agi")

INVALID = "510 Invalid or unknown command\n"
DEAD = "511 Command Not Permitted on a dead channel or intercept routine\n"


def usage(text: str) -> str:
    return f"520-Invalid command syntax.  Proper usage follows:\n{text}\n520 End of proper usage.\n"


Handler = Callable[["Pbx", Channel, list[str]], Awaitable[str]]


def _digit_result(d: str | None) -> int:
    return ord(d) if d else 0


async def _answer(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if ch.state != State.UP:
        pbx.answer(ch)
    return "200 result=0\n"


async def _stream_file(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) < 3 or len(a) > 5:
        return STREAM_FILE_USAGE
    # res_agi handle_streamfile: ast_openstream/ast_playstream (no CEL STREAM_BEGIN),
    # ast_stopstream (STREAM_END), the reply, then PLAYBACKSTATUS (FAILED unless res 0).
    try:
        played = await stream(pbx, ch, a[2], a[3] if len(a) > 3 else "", cel_begin=False)
    except ChannelHungUp:
        pbx.set_var(ch, "PLAYBACKSTATUS", "FAILED")
        return f"200 result=-1 endpos={ch.variables.get('__SIM_ENDPOS', '0')}\n"
    if not played.found:
        return "200 result=-1 endpos=0\n"
    pbx.set_var(ch, "PLAYBACKSTATUS", "FAILED" if played.digit else "SUCCESS")
    return f"200 result={_digit_result(played.digit)} endpos={played.endpos}\n"


def atoi(text: str) -> int:
    """C ``atoi()``: leading blanks, an optional sign, then digits; 0 if none."""
    m = _ATOI.match(text)
    return int(m.group(1)) if m else 0


_ATOI = re.compile(r"\s*([-+]?\d+)")


async def _get_data(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    """res_agi ``handle_getdata``: ``ast_app_getdata_full()`` plays ``a[2]`` as ONE file.
    With ``PbxOptions.getdata_split_prompts`` (not the default) an ``a&b&c`` list is played
    one after another (``ast_app_getdata`` semantics, as Read does) instead of failing:
    a deliberate, logged deviation (see docs/emulator.md)."""
    if len(a) < 3:
        return usage("Stream the given file, and receive DTMF data.")
    timeout = atoi(a[3]) if len(a) > 3 else 0
    maxd = atoi(a[4]) if len(a) > 4 else 1024
    try:
        if "&" in a[2] and pbx.options.getdata_split_prompts:
            METRICS.inc("sim.agi_getdata_ampersand")
            log_event(log, logging.WARNING, "sim.agi_getdata_ampersand", channel=ch.name,
                      prompt=a[2][:200],
                      detail="real Asterisk 20 opens this as ONE file and answers "
                             "200 result=-1 (res_agi handle_getdata uses "
                             "ast_app_getdata_full, which does not split on '&')")
            digits, res = await getdata(pbx, ch, a[2], maxd, timeout)
        else:
            digits, res = await getdata_full(pbx, ch, a[2], maxd, timeout)
    except ChannelHungUp:
        return "200 result=-1\n"
    if res == GETDATA_TIMEOUT:
        return f"200 result={digits} (timeout)\n"
    if res < 0:
        return "200 result=-1\n"
    return f"200 result={digits}\n"


async def _wait_for_digit(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 4:
        return usage("Waits up to <replaceable>timeout</replaceable> milliseconds for channel "
                     "to receive a DTMF digit.")
    ms = int(a[3]) if a[3].lstrip("-").isdigit() else -1
    offer_menu_input(pbx, ch)
    try:
        d = await ch.next_dtmf(None if ms < 0 else ms / 1000.0)
    except ChannelHungUp:
        return "200 result=-1\n"
    return f"200 result={_digit_result(d)}\n"


async def _get_variable(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 3:
        return usage("Gets a channel variable.")
    name = a[2]
    known = ("(" in name) or name in ch.variables or name in pbx.globals or name in (
        "EXTEN", "CONTEXT", "PRIORITY", "CHANNEL", "UNIQUEID", "LANGUAGE")
    value = pbx.get_var(ch, name)
    if not known and not value:
        return "200 result=0\n"
    return f"200 result=1 ({value})\n"


async def _get_full_variable(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) not in (4, 5):
        return usage("Evaluates a channel expression")
    target = pbx.find(a[4]) if len(a) == 5 else ch
    if target is None:
        return "200 result=0\n"
    return f"200 result=1 ({pbx.substitute(target, a[3])})\n"


async def _set_variable(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 4:
        return usage("Sets a channel variable.")
    pbx.set_var(ch, a[2], a[3])
    return "200 result=1\n"


async def _exec(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) < 2:
        return usage("Executes a given Application")
    app = pbx.apps.get(a[1].lower())
    if app is None:
        return "200 result=-2\n"
    data = a[2] if len(a) > 2 else ""  # handle_exec passes argv[2] only
    saved = (ch.app, ch.appdata)
    ch.app, ch.appdata = a[1], data
    try:
        await app(pbx, ch, data)
    except ChannelHungUp:
        return "200 result=-1\n"
    finally:
        ch.app, ch.appdata = saved
    return "200 result=0\n"


async def _say(pbx: Pbx, ch: Channel, items: list[str], escape: str) -> str:
    for item in items:
        try:
            played = await stream(pbx, ch, f"digits/{item}", escape)
        except ChannelHungUp:
            return "200 result=-1\n"
        if played.digit is not None:
            return f"200 result={ord(played.digit)}\n"
    return "200 result=0\n"


async def _say_digits(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 4:
        return usage("Say a given digit string, returning early if any of the given DTMF "
                     "digits are received on the channel.")
    return await _say(pbx, ch, [c for c in a[2] if c.isalnum()], a[3])


async def _say_number(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) < 4 or len(a) > 5 or not a[2].lstrip("-").isdigit():
        return usage("Say a given number, returning early if any of the given DTMF digits "
                     "are received on the channel.")
    return await _say(pbx, ch, list(a[2].lstrip("-")), a[3])


async def _channel_status(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) == 3:
        other = pbx.find(a[2])
        if other is None:
            return "200 result=-1\n"
        return f"200 result={int(other.state)}\n"
    return f"200 result={int(ch.state)}\n"


async def _hangup(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    target = pbx.find(a[1]) if len(a) == 2 else ch
    if target is None:
        return "200 result=-1\n"
    pbx.request_hangup(target, 16)
    return "200 result=1\n"


async def _ok0(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    return "200 result=0\n"


async def _ok1(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    return "200 result=1\n"


async def _set_context(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 3:
        return usage("Sets channel context.")
    ch.set_location(a[2], ch.exten, ch.priority)
    return "200 result=0\n"


async def _set_extension(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 3:
        return usage("Changes channel extension.")
    ch.set_location(ch.context, a[2], ch.priority)
    return "200 result=0\n"


async def _set_priority(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 3 or not a[2].isdigit():
        return usage("Set channel dialplan priority.")
    ch.set_location(ch.context, ch.exten, int(a[2]))
    return "200 result=0\n"


async def _set_callerid(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) != 3:
        return usage("Sets callerid for the current channel.")
    pbx.set_var(ch, "CALLERID(num)", a[2])
    return "200 result=1\n"


async def _set_music(pbx: Pbx, ch: Channel, a: list[str]) -> str:
    if len(a) < 3 or a[2].lower() not in ("on", "off"):
        return usage("Enable/Disable Music on hold generator")
    if a[2].lower() == "on":
        pbx.bus.chan("MusicOnHoldStart", "call", ch,
                     f"Class: {a[3] if len(a) > 3 else 'default'}\r\n")
    else:
        pbx.bus.chan("MusicOnHoldStop", "call", ch)
    return "200 result=0\n"


# (words, handler, allowed on a dead channel)
COMMANDS: list[tuple[tuple[str, ...], Handler, bool]] = [
    (("ANSWER",), _answer, False),
    (("STREAM", "FILE"), _stream_file, False),
    (("CONTROL", "STREAM", "FILE"), _stream_file, False),
    (("GET", "DATA"), _get_data, False),
    (("GET", "VARIABLE"), _get_variable, True),
    (("GET", "FULL", "VARIABLE"), _get_full_variable, True),
    (("SET", "VARIABLE"), _set_variable, True),
    (("EXEC",), _exec, False),
    (("SAY", "DIGITS"), _say_digits, False),
    (("SAY", "NUMBER"), _say_number, False),
    (("CHANNEL", "STATUS"), _channel_status, False),
    (("HANGUP",), _hangup, False),
    (("WAIT", "FOR", "DIGIT"), _wait_for_digit, False),
    (("SET", "MUSIC"), _set_music, False),
    (("SET", "CONTEXT"), _set_context, False),
    (("SET", "EXTENSION"), _set_extension, False),
    (("SET", "PRIORITY"), _set_priority, False),
    (("SET", "CALLERID"), _set_callerid, False),
    (("VERBOSE",), _ok1, True),
    (("NOOP",), _ok0, True),
    (("SET", "AUTOHANGUP"), _ok0, False),
]


def find_command(argv: list[str]) -> tuple[Handler, bool, list[str]] | None:
    upper = [w.upper() for w in argv]
    best: tuple[Handler, bool, list[str]] | None = None
    best_len = 0
    for words, handler, dead_ok in COMMANDS:
        n = len(words)
        if n > best_len and tuple(upper[:n]) == words:
            # EXEC's args after the app name keep their case; arguments stay as sent.
            best, best_len = (handler, dead_ok, argv), n
    return best


# Handlers that return RESULT_FAILURE when their result is negative (res_agi.c:
# ``return (res >= 0) ? RESULT_SUCCESS : RESULT_FAILURE``).  The others (GET DATA,
# EXEC, CHANNEL STATUS, HANGUP…) answer ``result=-1`` with RESULT_SUCCESS.
_FAILING = frozenset({("ANSWER",), ("WAIT", "FOR", "DIGIT"), ("STREAM", "FILE"),
                      ("CONTROL", "STREAM", "FILE"), ("SAY", "NUMBER"), ("SAY", "DIGITS")})


def is_failure(argv: list[str], reply: str) -> bool:
    """Whether res_agi counts this reply as RESULT_FAILURE (AGIExecEnd ``-1 Failure``;
    AGISTATUS=FAILURE when the channel is still up)."""
    if not reply.startswith("200 result=-1"):
        return False
    upper = tuple(w.upper() for w in argv[:3])
    return any(upper[:len(words)] == words for words in _FAILING)


def result_fields(reply: str, failure: bool = False, argv: list[str] | None = None
                  ) -> tuple[str, str]:
    """AGIExecEnd ``ResultCode``/``Result`` for a reply."""
    code = reply[:3]
    if code == "200":
        if failure:
            return "-1", "Failure"
        if argv and argv[0].upper() == "EXEC" and not reply.startswith("200 result=0"):
            return "200", "Unknown Result"  # handle_exec returns the app's result
        return "200", "Success"
    return {"520": ("520", "Usage"), "510": ("510", "Invalid or unknown command"),
            "511": ("511", "Command Not Permitted on a dead channel or intercept routine")
            }.get(code, (code, "Failure"))


__all__ = ["DEAD", "INVALID", "STREAM_FILE_USAGE", "find_command", "is_failure", "result_fields",
           "usage"]
