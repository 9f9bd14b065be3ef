"""Recording hooks: the call recording starts when an agent answers, and stops, starts
again or mutes one direction when an agent asks (the caller reading out an ID number).

:class:`RecordingHooks` is one of the bridge's AMI consumers: at ``AgentConnect`` of a
call whose policy (``recordings:`` of the definition, by entry and queue) says
``record``, it starts ``MixMonitor`` on the caller's channel — so it covers everything
the caller hears: the agent, then every party of a three-way call, and it goes on
across the ``Redirect`` into the conference (trace 12) — with the ``b`` option (only
while bridged) and, for stereo archives, ``r()``/``t()`` legs beside the mixed file
(``<stem>-in.wav``: the caller's voice, ``<stem>-out.wav``: what the caller hears;
ivr/recordings/audio.py).  The file is ``ivr/<YYYYMMDD>/<call id>-<uniqueid>.wav``,
relative: Asterisk writes it under its monitor directory and reports the full path in
``MIXMONITOR_FILENAME``, which the call events carry to the recordings worker.

The service (``app[RECORDING_HOOKS]``) checks every request first — the call is in
progress, it has a caller channel, it is (or is not) recorded — and raises a
:class:`~ivr.recordings.errors.RecordingRequestError` before anything is sent.  The call
events come from Asterisk's own (``recording.started/stopped/muted/unmuted``, built by
:mod:`ivr.events.builder`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ivr.ami.client import AMIClient
from ivr.ami.messages import Event, Response
from ivr.calls.model import CallModel
from ivr.calls.state import CallState
from ivr.dialplan.model import Recordings
from ivr.log import event as log_event
from ivr.metrics import METRICS
from ivr.recordings.errors import (
    AlreadyRecorded,
    NotRecorded,
    RecordingAsteriskRefused,
    RecordingBadDirection,
    RecordingCallNotFound,
)

log = logging.getLogger("ivr.recordings.hooks")

ACTION_TIMEOUT_S = 10.0
DIRECTIONS = {"caller": "read", "agent": "write", "both": "both"}
"""What the agent asks to mute → MixMonitorMute's ``Direction`` on the caller's channel
(``read``: what Asterisk reads from the caller, the caller's voice; ``write``: what the
caller hears — the agent and any party of a three-way call)."""


def raw_file(call_id: str, uniqueid: str, when: dt.datetime) -> str:
    """The MixMonitor file of a recording (relative: Asterisk's monitor directory)."""
    return f"ivr/{when:%Y%m%d}/{call_id}-{uniqueid}.wav"


def mixmonitor_options(file: str, stereo: bool) -> str:
    """``b`` (only while bridged), and the ``r()``/``t()`` legs for a stereo archive."""
    if not stereo:
        return "b"
    stem = file[:-4] if file.endswith(".wav") else file
    return f"br({stem}-in.wav)t({stem}-out.wav)"


class RecordingHooks:
    """Starts the recording at the agent's answer; start/stop/mute on request."""

    consumed_ami_events = frozenset({"AgentConnect"})
    consumed_variables: frozenset[str] = frozenset()

    def __init__(self, *, ami: Callable[[], AMIClient | None], model: Callable[[], CallModel],
                 policy: Callable[[], Recordings],
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self._ami = ami
        self._model = model
        self._policy = policy
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped: set[str] = set()  # uniqueids whose recording was stopped on request
        self.started = 0  # recordings started at an agent's answer

    # -- AMI events: the agent answered ---------------------------------------------

    def on_ami_event(self, event: Event) -> None:
        if event.name != "AgentConnect":
            return
        uid = event.get("Uniqueid") or ""
        channel = event.get("Channel") or ""
        call = self._model().call_of(uid)
        if call is None or not channel or call.recordings:
            return  # not a call in progress, or already recorded (a second agent)
        rule = self._policy().rule_for(call.entry or call.dialled or None,
                                       event.get("Queue") or call.queue)
        if not rule.record:
            return
        task = asyncio.get_running_loop().create_task(
            self._start(call.call_id, channel, uid, rule.channels == "stereo", quiet=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync(self, client: AMIClient) -> bool:
        return True  # the recordings in progress are the call model's (MIXMONITOR_FILENAME)

    # -- requests ----------------------------------------------------------------------

    async def start(self, call_id: str) -> str:
        """Start recording a call its policy does not record (or whose recording failed
        to start).  A recording stopped on request stays stopped: one file per channel
        (mute it instead to leave a part out)."""
        call, channel, uid = self._caller(call_id)
        if call.recordings:
            raise AlreadyRecorded(call_id)
        rule = self._policy().rule_for(call.entry or call.dialled or None, call.queue)
        return await self._start(call_id, channel, uid, rule.channels == "stereo")

    async def stop(self, call_id: str) -> None:
        """Stop the call's recording (StopMixMonitor; the file is kept and archived)."""
        _call, channel, uid = self._recorded(call_id)
        await self._send(call_id, "StopMixMonitor", {"Channel": channel})
        self._stopped.add(uid)
        if len(self._stopped) > 1000:  # forget the channels that are gone
            model = self._model()
            self._stopped = {u for u in self._stopped if model.channels.get(u) is not None}

    async def mute(self, call_id: str, direction: str = "caller", on: bool = True) -> None:
        """Mute (or unmute) one direction of the recording: ``caller`` (the caller's voice,
        e.g. reading out an ID number), ``agent`` (what the caller hears) or ``both``."""
        if direction not in DIRECTIONS:
            raise RecordingBadDirection(direction, sorted(DIRECTIONS))
        _call, channel, _uid = self._recorded(call_id)
        await self._send(call_id, "MixMonitorMute", {
            "Channel": channel, "Direction": DIRECTIONS[direction], "State": "1" if on else "0"})

    def has_channel(self, call_id: str, prefix: str) -> bool:
        """Whether a live channel of the call is named ``<prefix>…`` (an agent's)."""
        return any(c.name.startswith(prefix) for c in self._model().channels_of(call_id))

    # -- checks and actions ------------------------------------------------------------------

    def _caller(self, call_id: str) -> tuple[CallState, str, str]:
        model = self._model()
        call = model.calls.get(call_id)
        if call is None:
            raise RecordingCallNotFound(call_id, model.has_ended(call_id))
        recorded = [u for u in call.recordings if model.channels.get(u) is not None]
        chans = model.channels_of(call_id)
        pick = (next((c for c in chans if c.uniqueid in recorded), None)
                or next((c for c in chans if c.agent), None)
                or next((c for c in chans if c.uniqueid in call.channels
                         and c.uniqueid not in call.agent_channels), None))
        if pick is None:
            raise RecordingCallNotFound(call_id, False)
        return call, pick.name, pick.uniqueid

    def _recorded(self, call_id: str) -> tuple[CallState, str, str]:
        call, channel, uid = self._caller(call_id)
        if uid not in call.recordings or uid in self._stopped:
            raise NotRecorded(call_id)
        return call, channel, uid

    async def _start(self, call_id: str, channel: str, uid: str, stereo: bool,
                     quiet: bool = False) -> str:
        file = raw_file(call_id, uid, self.clock())
        try:
            await self._send(call_id, "MixMonitor", {
                "Channel": channel, "File": file,
                "Options": mixmonitor_options(file, stereo)})
        except Exception as exc:
            if not quiet:
                raise
            METRICS.inc("recordings.hooks.start_failed")
            log_event(log, logging.ERROR, "recordings.hooks.start_failed", call_id=call_id,
                      error=str(exc))
            return file
        self.started += 1
        return file

    async def _send(self, call_id: str, action: str, fields: dict[str, Any]) -> None:
        client = self._ami()
        if client is None:
            raise RecordingAsteriskRefused(action, call_id, "not connected / 未连接")
        reply = await client.send_action(action, fields, timeout=ACTION_TIMEOUT_S)
        if isinstance(reply, Response) and not reply.success:
            raise RecordingAsteriskRefused(action, call_id, reply.message or "")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


RECORDING_HOOKS = web.AppKey("ivr.recording_hooks", RecordingHooks)
