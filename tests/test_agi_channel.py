"""AGIChannel over a real 127.0.0.1 socket, the test playing Asterisk on the other end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from ivr.agi.channel import AGIChannel, DataResult, StreamResult
from ivr.agi.codec import MAX_COMMAND_LINE, AGIEnvironment, HeaderParser, parse_args
from ivr.agi.errors import (
    AGIArgumentError,
    AGICommandError,
    AGIConnectionClosed,
    AGIHangup,
    AGIProtocolError,
    AGITimeout,
)
from tests.agi_peer import header


@dataclass
class Pair:
    channel: AGIChannel
    reader: asyncio.StreamReader  # Asterisk's side
    writer: asyncio.StreamWriter

    async def expect(self, argv: list[str], reply: bytes) -> bytes:
        """Read one command line, check what Asterisk's parse_args makes of it, reply."""
        line = await asyncio.wait_for(self.reader.readline(), 5)
        assert line.endswith(b"\n")
        assert parse_args(line.decode().rstrip("\n")) == argv
        self.writer.write(reply)
        await self.writer.drain()
        return line


def make_env() -> AGIEnvironment:
    env = HeaderParser().feed(header())
    assert env is not None
    return env


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ast_reader, ast_writer = await accepted.get()
    channel = AGIChannel(make_env(), reader, writer, default_timeout=5, hangup_grace=0.5)
    yield Pair(channel, ast_reader, ast_writer)
    writer.close()
    ast_writer.close()
    server.close()
    await server.wait_closed()


HOSTILE = [
    '陈 "老" 师',
    'x" ; EXEC System "rm -rf /',
    "x\\",
    "\\\"",
    'a\\"b',
    "   ",
    "",
    "tab\there",
    "$ {CALLERID(num)} ${SHELL(id)}",
    "EXEC System touch /tmp/pwned",
    "'single' `back`",
    "\\\\\\",
    '"',
    '""',
    "末尾\\",
    "\x01\x7f\u2028\u00a0",
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_arrive_as_one_argument(pair: Pair, value: str) -> None:
    task = asyncio.create_task(pair.channel.set_variable("IVR_NOTE", value))
    await pair.expect(["SET", "VARIABLE", "IVR_NOTE", value], b"200 result=1\n")
    await task
    # and nothing else was sent: the next line is the next command
    task2 = asyncio.create_task(pair.channel.channel_status())
    await pair.expect(["CHANNEL", "STATUS"], b"200 result=6\n")
    assert await task2 == 6


@pytest.mark.parametrize("value", ["a\nHANGUP", "a\rb", "nul\0byte", "\n", "x\r\nEXEC System id"])
async def test_line_breaks_and_nul_are_refused_and_nothing_is_sent(pair: Pair, value: str) -> None:
    with pytest.raises(AGIArgumentError):
        await pair.channel.set_variable("X", value)
    with pytest.raises(AGIArgumentError):
        await pair.channel.raw(f"SET VARIABLE X {value}")
    with pytest.raises(AGIArgumentError):
        await pair.channel.exec("Playback", value)
    assert pair.channel.commands_sent == 0
    task = asyncio.create_task(pair.channel.answer())
    await pair.expect(["ANSWER"], b"200 result=0\n")  # the first thing Asterisk sees
    await task


async def test_overlong_command_is_refused(pair: Pair) -> None:
    """res_agi.c cuts a command at 8191 bytes and runs the rest as a new command."""
    tail = " EXEC System touch /tmp/pwned"
    value = "A" * (MAX_COMMAND_LINE - len("SET VARIABLE X \n") - 1) + tail
    with pytest.raises(AGIArgumentError, match="8191"):
        await pair.channel.set_variable("X", value)
    fits = "A" * (MAX_COMMAND_LINE - len("SET VARIABLE X \n"))
    task = asyncio.create_task(pair.channel.set_variable("X", fits))
    line = await pair.expect(["SET", "VARIABLE", "X", fits], b"200 result=1\n")
    assert len(line) == MAX_COMMAND_LINE
    await task


async def test_trying_is_skipped(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.exec("Wait", "1"))
    await pair.expect(["EXEC", "Wait", "1"], b"100 result=0 Trying...\n200 result=0\n")
    assert await task == 0


async def test_exec_joins_args_and_reports_missing_app(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.exec("Dial", "SIP/1001", "30", "tT"))
    await pair.expect(["EXEC", "Dial", "SIP/1001,30,tT"], b"200 result=0\n")
    assert await task == 0
    task = asyncio.create_task(pair.channel.exec("NoSuchApp"))
    await pair.expect(["EXEC", "NoSuchApp"], b"200 result=-2\n")
    with pytest.raises(AGICommandError, match="not found"):
        await task


async def test_get_data_variants(pair: Pair) -> None:
    ch = pair.channel
    cases = [
        (b"200 result= (timeout)\n", DataResult("", True)),
        (b"200 result=12 (timeout)\n", DataResult("12", True)),
        (b"200 result=123*\n", DataResult("123*", False)),
    ]
    for reply, expected in cases:
        task = asyncio.create_task(ch.get_data("ivr/menu", 3000, 4))
        await pair.expect(["GET", "DATA", "ivr/menu", "3000", "4"], reply)
        assert await task == expected
    task = asyncio.create_task(ch.get_data("ivr/menu"))
    await pair.expect(["GET", "DATA", "ivr/menu", "5000", "1"], b"200 result=-1\nHANGUP\n")
    with pytest.raises(AGIHangup):
        await task
    assert ch.hung_up


async def test_get_data_missing_prompt_on_live_channel_is_a_failed_result(pair: Pair) -> None:
    """res_agi answers ``200 result=-1`` both for a hang-up and for a prompt
    ast_streamfile cannot open (e.g. ``a&b``, which GET DATA takes as ONE file name); only
    the HANGUP line tells them apart."""
    ch = pair.channel
    task = asyncio.create_task(ch.get_data("ivr/welcome&ivr/menu", 3000, 1))
    await pair.expect(["GET", "DATA", "ivr/welcome&ivr/menu", "3000", "1"], b"200 result=-1\n")
    assert await task == DataResult("", False, failed=True)
    assert not ch.hung_up
    # the session is still in step and the channel usable
    task = asyncio.create_task(ch.get_data("ivr/menu", 3000, 1))
    await pair.expect(["GET", "DATA", "ivr/menu", "3000", "1"], b"200 result=4\n")
    assert await task == DataResult("4", False)


async def test_get_data_hangup_line_arriving_late_is_still_a_hangup(pair: Pair) -> None:
    ch = pair.channel
    task = asyncio.create_task(ch.get_data("ivr/menu", 3000, 1))
    await pair.expect(["GET", "DATA", "ivr/menu", "3000", "1"], b"200 result=-1\n")
    pair.writer.write(b"HANGUP\n")  # a separate write, after the reply
    await pair.writer.drain()
    with pytest.raises(AGIHangup):
        await task
    assert ch.hung_up


READ_RESULT = ["GET", "FULL", "VARIABLE", "${READSTATUS},${IVR_DIGITS}"]


async def test_read_digits_plays_a_list_with_read(pair: Pair) -> None:
    ch = pair.channel
    cases = [
        (b"200 result=1 (OK,9)\n", DataResult("9", False)),
        (b"200 result=1 (TIMEOUT,)\n", DataResult("", True)),
        (b"200 result=1 (OK,)\n", DataResult("", False)),  # "#" alone
    ]
    for reply, expected in cases:
        task = asyncio.create_task(ch.read_digits(["zh/welcome", "zh/lang-offer"], 1, 1))
        await pair.expect(["EXEC", "Read", "IVR_DIGITS,zh/welcome&zh/lang-offer,1,,1,0.001"],
                          b"200 result=0\n")
        await pair.expect(READ_RESULT, reply)
        assert await task == expected
    task = asyncio.create_task(ch.read_digits(["a", "b", "c"], 5000, 4, variable="MENU"))
    await pair.expect(["EXEC", "Read", "MENU,a&b&c,4,,1,5"], b"200 result=0\n")
    await pair.expect(["GET", "FULL", "VARIABLE", "${READSTATUS},${MENU}"],
                      b"200 result=1 (TIMEOUT,12)\n")
    assert await task == DataResult("12", True)
    assert not ch.hung_up


async def test_read_digits_hangup_and_missing_last_prompt(pair: Pair) -> None:
    ch = pair.channel
    # the last prompt cannot be played: Read returns at once with READSTATUS=ERROR
    task = asyncio.create_task(ch.read_digits(["zh/invalid", "zh/nope"], 5000))
    await pair.expect(["EXEC", "Read", "IVR_DIGITS,zh/invalid&zh/nope,1,,1,5"],
                      b"200 result=0\n")
    await pair.expect(READ_RESULT, b"200 result=1 (ERROR,)\n")
    assert await task == DataResult("", False, failed=True)
    assert not ch.hung_up
    # a hang-up: Read still answers 0, then the HANGUP line; READSTATUS=HANGUP
    task = asyncio.create_task(ch.read_digits(["zh/a", "zh/b"], 5000))
    await pair.expect(["EXEC", "Read", "IVR_DIGITS,zh/a&zh/b,1,,1,5"],
                      b"200 result=0\nHANGUP\n")
    await pair.expect(READ_RESULT, b"200 result=1 (HANGUP,)\n")
    with pytest.raises(AGIHangup):
        await task
    assert ch.hung_up


async def test_read_digits_minus_one_with_hangup_line(pair: Pair) -> None:
    ch = pair.channel
    task = asyncio.create_task(ch.read_digits(["zh/a", "zh/b"], 5000))
    await pair.expect(["EXEC", "Read", "IVR_DIGITS,zh/a&zh/b,1,,1,5"], b"200 result=-1\n")
    pair.writer.write(b"HANGUP\n")
    await pair.writer.drain()
    with pytest.raises(AGIHangup):
        await task
    assert ch.commands_sent == 1  # no GET FULL VARIABLE after a hang-up


@pytest.mark.parametrize(("prompts", "kwargs"), [
    ([], {}), (["a,b", "c"], {}), (["a", "b&c"], {}), (["a", ""], {}), (['a"', "b"], {}),
    (["a", "${X}"], {}), (["a", "b"], {"variable": "X Y"}), (["a", "b"], {"max_digits": 0}),
])
async def test_read_digits_refuses_what_read_would_misparse(
        pair: Pair, prompts: list[str], kwargs: dict[str, object]) -> None:
    with pytest.raises(AGIArgumentError):
        await pair.channel.read_digits(prompts, 1000, **kwargs)  # type: ignore[arg-type]
    assert pair.channel.commands_sent == 0


async def test_stream_file_digit_and_say(pair: Pair) -> None:
    ch = pair.channel
    task = asyncio.create_task(ch.stream_file("ivr/welcome", "12#"))
    await pair.expect(["STREAM", "FILE", "ivr/welcome", "12#"], b"200 result=50 endpos=8000\n")
    assert await task == StreamResult("2", 8000, False)
    task2 = asyncio.create_task(ch.say_number(12345, "#"))
    await pair.expect(["SAY", "NUMBER", "12345", "#"], b"200 result=35\n")
    assert await task2 == "#"
    task3 = asyncio.create_task(ch.say_digits("110"))
    await pair.expect(["SAY", "DIGITS", "110", ""], b"200 result=-1\n")
    with pytest.raises(AGIHangup):
        await task3


async def test_hangup_line_while_idle_then_reply(pair: Pair) -> None:
    ch = pair.channel
    pair.writer.write(b"HANGUP\n")
    await pair.writer.drain()
    task = asyncio.create_task(ch.get_variable("CHANNEL(language)"))
    await pair.expect(["GET", "VARIABLE", "CHANNEL(language)"], b"200 result=1 (zh)\n")
    assert await task == "zh"
    assert ch.hung_up
    task = asyncio.create_task(ch.hangup())
    await pair.expect(
        ["HANGUP"], b"511 Command Not Permitted on a dead channel or intercept routine\n"
    )
    with pytest.raises(AGIHangup):
        await task


async def test_timeout_then_late_reply_keeps_the_session_in_step(pair: Pair) -> None:
    ch = pair.channel
    with pytest.raises(AGITimeout):
        await ch.command("GET VARIABLE", "SLOW", timeout=0.05)
    line = await pair.reader.readline()
    assert line == b"GET VARIABLE SLOW\n"
    pair.writer.write(b"200 result=1 (late)\n")  # the reply to the timed-out command
    task = asyncio.create_task(ch.get_variable("FAST"))
    await pair.expect(["GET", "VARIABLE", "FAST"], b"200 result=1 (fast)\n")
    assert await task == "fast"
    assert ch.commands_sent == 2


async def test_socket_closed_mid_command(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.answer())
    assert await pair.reader.readline() == b"ANSWER\n"
    pair.writer.close()
    with pytest.raises(AGIConnectionClosed):
        await task
    assert pair.channel.hung_up
    with pytest.raises(AGIHangup):
        await pair.channel.answer()


async def test_garbage_reply_is_a_protocol_error_and_poisons_the_session(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.answer())
    await pair.expect(["ANSWER"], b"hello there\n")
    with pytest.raises(AGIProtocolError):
        await task
    with pytest.raises(AGIProtocolError, match="unusable"):
        await pair.channel.answer()


async def test_concurrent_commands_are_serialised(pair: Pair) -> None:
    ch = pair.channel
    tasks = [asyncio.create_task(ch.get_variable(f"V{i}")) for i in range(5)]
    for i in range(5):
        await pair.expect(["GET", "VARIABLE", f"V{i}"], f"200 result=1 (v{i})\n".encode())
    assert await asyncio.gather(*tasks) == [f"v{i}" for i in range(5)]


async def test_hangup_of_another_channel(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.hangup("SIP/1001-00000001"))
    await pair.expect(["HANGUP", "SIP/1001-00000001"], b"200 result=-1\n")
    with pytest.raises(AGICommandError, match="no such channel"):
        await task


async def test_usage_error_and_unknown_command(pair: Pair) -> None:
    task = asyncio.create_task(pair.channel.command("SAY NUMBER"))
    await pair.expect(
        ["SAY", "NUMBER"],
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b"Usage: SAY NUMBER\n520 End of proper usage.\n",
    )
    with pytest.raises(AGICommandError) as err:
        await task
    assert err.value.code == 520 and "Usage: SAY NUMBER" in err.value.text
    with pytest.raises(AGIArgumentError):
        await pair.channel.command("say number")  # command names are upper-case words


async def test_caller_side_cancellation_keeps_the_session_in_step(pair: Pair) -> None:
    """IVR code wrapping a command in its own asyncio.timeout must not shift replies."""
    ch = pair.channel
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await ch.get_data("ivr/menu", 10000, 4)
    assert await pair.reader.readline() == b"GET DATA ivr/menu 10000 4\n"
    pair.writer.write(b"200 result=1234\n")  # the late reply to the cancelled command
    task = asyncio.create_task(ch.get_variable("LANG"))
    await pair.expect(["GET", "VARIABLE", "LANG"], b"200 result=1 (zh)\n")
    assert await task == "zh"
