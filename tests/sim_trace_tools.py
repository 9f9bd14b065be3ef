"""Helpers for the emulator conformance tests: trace parsing and step shapes."""

from __future__ import annotations

import asyncio
import re
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


# -- per-stream comparison of call scenarios ---------------------------------------------
#
# Asterisk's AMI output during a call is a merge of streams that Asterisk itself does not
# order against each other:
#   * CEL events are written by the CEL engine's own stasis subscription thread
#     (main/cel.c -> cel/cel_manager.c), Cdr events by the CDR engine's thread
#     (main/cdr.c -> cdr/cdr_manager.c): they race the manager router that writes the
#     channel events (trace 07: the CEL HANGUP of a queue caller arrives *before* that
#     caller's QueueCallerAbandon and Hangup);
#   * every channel runs on its own thread (its PBX or a bridge/dial loop) and publishes
#     its events in its own order; two channels publish concurrently;
#   * DeviceStateChange comes from the device-state thread and QueueMemberStatus from
#     app_queue's device-state subscription;
#   * the Confbridge* events (ConfbridgeStart/Join/Leave/End…) are written by
#     app_confbridge's own routers (apps/confbridge/confbridge_manager.c:
#     stasis_message_router_create(ast_bridge_topic_all())), not by the manager's router
#     that writes the channel's BridgeEnter and VarSet.  The joining thread publishes
#     BridgeEnter, the BRIDGEPEER updates (bridge_reconfigured) and only then, from the
#     join hook, ConfbridgeJoin (bridge_channel.c bridge_channel_internal_join); which of
#     the two writers gets to the socket first is a race, and trace 02 shows both
#     outcomes (cap-10: ConfbridgeJoin after the joiner's BRIDGEPEER update; cap-11:
#     before it, while the manager router still had a backlog).
# So for a step, each stream's own sequence (CEL; Cdr; Confbridge*; each channel's
# events; each device; each queue member; the action's response/list) must be exactly
# the trace's, and the step must hold the same frames; only the interleaving of
# different streams is free.

StepFrames = list[tuple[str, Shape]]  # (stream key, shape)


def _short(name: str) -> str:
    base = name.rsplit(";", 1)
    stem = re.sub(r"-[0-9a-f]{8}$", "", base[0])
    return stem + (";" + base[1] if len(base) == 2 else "")


def stream_steps(items: list[Incoming]) -> dict[str, StepFrames]:
    """Like :func:`steps`, each frame tagged with the stream it belongs to.  Channel
    names lose their sequence number and are numbered by first appearance, so the
    trace's ``Local/6000@from-pstn-00000040;1`` and the emulator's own id compare."""
    seen: dict[str, str] = {}
    counts: dict[str, int] = {}

    def chan(raw: str) -> str:
        if raw not in seen:
            s = _short(raw)
            counts[s] = counts.get(s, 0) + 1
            seen[raw] = f"{s}#{counts[s]}"
        return seen[raw]

    out: dict[str, StepFrames] = {"": []}
    cur = ""
    for it in items:
        if isinstance(it, Banner):
            continue
        if isinstance(it, Response):
            cur = it.action_id or cur
            out.setdefault(cur, [])
        sh = shape(it)
        if sh is None:
            continue
        key = "action"
        if isinstance(it, Event) and it.get("ActionID") is None:
            if it.name in ("CEL", "Cdr"):
                key = it.name
            elif it.name.startswith("Confbridge"):
                key = "confbridge"
            elif (c := it.get("Channel") or it.get("LocalOneChannel")) is not None:
                key = chan(c)
            elif (c := it.get("DestChannel")) is not None:
                key = chan(c)
            elif (d := it.get("Device")) is not None:
                key = "device " + _short(d)
            elif (q := it.get("Interface")) is not None:
                key = "member " + q
            else:
                key = "other " + it.name
        out[cur].append((key, sh))
    return out


def by_stream(frames: StepFrames) -> dict[str, list[Shape]]:
    out: dict[str, list[Shape]] = {}
    for key, sh in frames:
        out.setdefault(key, []).append(sh)
    return out


def stream_differences(theirs: dict[str, StepFrames], mine: dict[str, StepFrames]
                       ) -> list[str]:
    """Every (step, stream) whose sequence differs, described; [] when all match."""
    out: list[str] = []
    if list(mine) != list(theirs):
        out.append(f"steps: trace {list(theirs)} emulator {list(mine)}")
    for step, frames in theirs.items():
        a, b = by_stream(frames), by_stream(mine.get(step, []))
        for key in sorted(set(a) | set(b)):
            if a.get(key, []) != b.get(key, []):
                ta = [x[1] for x in a.get(key, [])]
                tb = [x[1] for x in b.get(key, [])]
                what = f"trace {ta} emulator {tb}" if ta != tb else "header names differ"
                out.append(f"step {step or 'login'} stream {key}: {what}")
    return out


def step_order_similarity(theirs: dict[str, StepFrames], mine: dict[str, StepFrames]
                          ) -> float:
    """difflib ratio of the whole (kind, name) sequence, step by step concatenated."""
    import difflib

    a = [sh[:2] for fr in theirs.values() for _, sh in fr]
    b = [sh[:2] for fr in mine.values() for _, sh in fr]
    return difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()
