"""Test support for the AGI tests: the recorded FastAGI traces split into steps, chunking
strategies, a fake Asterisk that replays a trace over a real socket, and a server subclass
that reports when each session's task has finished."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ivr.agi.codec import parse_args
from ivr.agi.server import FastAGIServer
from tests.conftest import TRACES

Chunker = Callable[[bytes], list[bytes]]


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(seed: int) -> Chunker:
    def chunk(data: bytes) -> list[bytes]:
        rnd = random.Random(seed + len(data))
        out, i = [], 0
        while i < len(data):
            n = rnd.randint(1, 40)
            out.append(data[i : i + n])
            i += n
        return out

    return chunk


CHUNKERS: dict[str, Chunker] = {
    "whole": whole,
    "bytewise": bytewise,
    "random7": random_chunks(7),
    "random1234": random_chunks(1234),
}


@dataclass
class Step:
    command: bytes  # the line the client sent (with its "\n")
    reply: bytes  # Asterisk's reply to it (a 520 block is several lines)
    async_after: bytes = b""  # unsolicited lines (HANGUP) Asterisk wrote after the reply


@dataclass
class AGITrace:
    name: str
    header: bytes  # the agi_* block with its blank line
    steps: list[Step]
    trailing: bytes = b""  # replies/async lines with no command left (none in the traces)


def split_replies(data: bytes) -> list[bytes]:
    """Asterisk's reply stream as units: one reply (a ``520-`` block whole) or one
    ``HANGUP`` line."""
    lines = data.splitlines(keepends=True)
    units: list[bytes] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line[3:4] == b"-" and line[:3].isdigit():
            end = b"%s " % line[:3]
            j = i + 1
            while not lines[j].startswith(end):
                j += 1
            units.append(b"".join(lines[i : j + 1]))
            i = j + 1
        else:
            units.append(line)
            i += 1
    return units


def load_trace(scenario: str, n: int) -> AGITrace:
    folder = next(p for p in TRACES.iterdir() if p.name.startswith(scenario))
    server = (folder / f"agi-{n}.server.raw").read_bytes()
    client = (folder / f"agi-{n}.client.raw").read_bytes()
    end = server.index(b"\n\n") + 2
    header, rest = server[:end], server[end:]
    commands = client.splitlines(keepends=True)
    steps: list[Step] = []
    for unit in split_replies(rest):
        if unit == b"HANGUP\n":
            steps[-1].async_after += unit
        else:
            steps.append(Step(command=commands[len(steps)], reply=unit))
    assert len(steps) == len(commands), (folder, len(steps), len(commands))
    return AGITrace(name=f"{folder.name}/agi-{n}", header=header, steps=steps)



async def send(writer: asyncio.StreamWriter, data: bytes, chunker: Chunker) -> None:
    for piece in chunker(data):
        writer.write(piece)
        await writer.drain()
        if len(piece) < len(data):
            await asyncio.sleep(0)  # let the other side see a partial read


@dataclass
class Replay:
    received: list[bytes] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    requoted: list[tuple[bytes, bytes]] = field(default_factory=list)  # (got, recorded)
    closed_by_server: bool = False


async def fake_asterisk(
    port: int,
    trace: AGITrace,
    chunker: Chunker = whole,
    *,
    hangup: str = "eager",
) -> Replay:
    """Connect to the FastAGI server as Asterisk would and replay ``trace``.

    ``hangup="eager"``: the async ``HANGUP`` goes right after the reply it follows (what
    res_agi.c does: it writes it as soon as it sees the hang-up, before the next command).
    ``hangup="lazy"``: it is held back and sent in front of the next reply (how the
    recorder's notes.txt shows it), the worst case for a reader.
    Each received command must mean the same argv to Asterisk's parse_args as the recorded
    one (the traces quote some plain tokens, e.g. ``"0123456789*#"``).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = Replay()
    held = b""
    try:
        await send(writer, trace.header, chunker)
        for step in trace.steps:
            line = await reader.readline()
            if not line:
                out.mismatches.append(f"EOF, expected {step.command!r}")
                return out
            out.received.append(line)
            want = parse_args(step.command.decode().rstrip("\n"))
            got = parse_args(line.decode().rstrip("\n"))
            if got != want:
                out.mismatches.append(f"got {line!r}, expected {step.command!r}")
                return out
            if line != step.command:
                out.requoted.append((line, step.command))
            if hangup == "eager":
                await send(writer, step.reply + step.async_after, chunker)
            else:
                await send(writer, held + step.reply, chunker)
                held = step.async_after
        if held:
            await send(writer, held, chunker)
        extra = await reader.read()
        out.closed_by_server = True
        if extra:
            out.mismatches.append(f"unexpected commands after the trace: {extra!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return out


class ProbeServer(FastAGIServer):
    """The real server; each finished session task puts how it ended on ``finished``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.finished: asyncio.Queue[str] = asyncio.Queue()

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super().handler(reader, writer)
        except asyncio.CancelledError:
            self.finished.put_nowait("cancelled")
            raise
        except Exception as exc:  # reported, then re-raised
            self.finished.put_nowait(f"raised {type(exc).__name__}")
            raise
        self.finished.put_nowait("done")


HEADER_TEMPLATE = (
    "agi_network: yes\n"
    "agi_network_script: {script}\n"
    "agi_request: agi://127.0.0.1:4573/{script}\n"
    "agi_channel: {channel}\n"
    "agi_language: zh\n"
    "agi_uniqueid: 1795883958.{n}\n"
    "agi_callerid: {callerid}\n"
    "agi_calleridname: 测试\n"
    "agi_context: from-pstn\n"
    "agi_extension: 12345\n"
    "\n"
)


def header(
    script: str = "ivr?entry=main",
    channel: str = "Local/12345@from-pstn-00000000;2",
    callerid: str = "13800138000",
    n: int = 1,
) -> bytes:
    return HEADER_TEMPLATE.format(
        script=script, channel=channel, callerid=callerid, n=n
    ).encode()
