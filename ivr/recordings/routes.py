"""HTTP routes of the recording hooks (docs/api.md, docs/recordings.md): stop or start a
call's recording, mute or unmute one direction.  Imported by :mod:`ivr.app` so the routes
exist before :func:`ivr.api.http.install`."""

from __future__ import annotations

from aiohttp import web

from ivr.api.errors import Forbidden, Unavailable
from ivr.api.http import TARGET, body, document_fragment, json_response, principal, route
from ivr.recordings.hooks import RECORDING_HOOKS, RecordingHooks

document_fragment("ivr.recordings")


def _hooks(request: web.Request) -> RecordingHooks:
    hooks = request.app.get(RECORDING_HOOKS)
    if hooks is None:
        raise Unavailable("calls are not recorded by this process (no [recordings] dir or "
                          "no call-event pipeline)", "本进程不负责通话录音",
                          code="recordings_unavailable")
    return hooks


def _check_own(request: web.Request, hooks: RecordingHooks, call_id: str) -> None:
    """An agent acts only on calls one of its channels is in (supervisors, admins: any)."""
    who = principal(request)
    if who.can("agents.act_any"):
        return
    base = (who.agent or "").removesuffix("/n") + "-"
    if not who.agent or not hooks.has_channel(call_id, base):
        raise Forbidden(f"an agent controls the recording of its own calls only "
                        f"({who.agent}); call {call_id!r} is not",
                        f"坐席只能控制自己通话的录音（{who.agent}）", code="not_own_call")


@route("POST", "/api/calls/{call_id}/recording/mute", "calls.record", audit="recording.mute")
async def mute(request: web.Request) -> web.StreamResponse:
    hooks = _hooks(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    data = await body(request)
    _check_own(request, hooks, call_id)
    direction = str(data.get("direction", "caller"))
    on = bool(data.get("on", True))
    await hooks.mute(call_id, direction, on)
    return json_response({"call_id": call_id, "direction": direction, "muted": on})


@route("POST", "/api/calls/{call_id}/recording/stop", "calls.record", audit="recording.stop")
async def stop(request: web.Request) -> web.StreamResponse:
    hooks = _hooks(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    _check_own(request, hooks, call_id)
    await hooks.stop(call_id)
    return json_response({"call_id": call_id, "recording": "stopped"})


@route("POST", "/api/calls/{call_id}/recording/start", "calls.record",
       audit="recording.start")
async def start(request: web.Request) -> web.StreamResponse:
    hooks = _hooks(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    _check_own(request, hooks, call_id)
    file = await hooks.start(call_id)
    return json_response({"call_id": call_id, "recording": "started", "file": file})
