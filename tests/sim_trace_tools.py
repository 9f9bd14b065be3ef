"""Helpers for the emulator conformance tests: trace parsing and step shapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Action, Banner, Event, Incoming, Response

Shape = tuple[str, str, tuple[str, ...]]  # (kind, name, header names)


def client_actions(path: Path) -> list[Action]:
    p = AMIParser(expect_banner=False, group_lists=False)
    return [m for m in p.feed(path.read_bytes()) + p.feed_eof() if isinstance(m, Action)]


def server_items(data: bytes) -> list[Incoming]:
    p = AMIParser(group_lists=False)
    return p.feed(data) + p.feed_eof()


def shape(item: Incoming) -> Shape | None:
    if isinstance(item, Event):
        return ("E", item.name, tuple(item.headers))
    if isinstance(item, Response):
        return ("R", item.status, tuple(item.headers))
    return None


def steps(items: list[Incoming]) -> dict[str, list[Shape]]:
    """Responses and events grouped per step: a step starts at the response to an
    action (keyed by its ActionID); events before any response go under ''."""
    out: dict[str, list[Shape]] = {"": []}
    cur = ""
    for it in items:
        if isinstance(it, Banner):
            continue
        if isinstance(it, Response):
            cur = it.action_id or cur
            out.setdefault(cur, [])
        sh = shape(it)
        if sh is not None:
            out[cur].append(sh)
    return out


async def read_until(reader: asyncio.StreamReader, buf: bytearray, needle: bytes,
                     per_read: float = 10.0) -> None:
    while needle not in buf:
        chunk = await asyncio.wait_for(reader.read(65536), per_read)
        if not chunk:
            return
        buf += chunk
