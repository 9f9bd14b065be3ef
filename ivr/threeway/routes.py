"""HTTP routes of three-way calls (docs/api.md, docs/threeway.md): bring a party into a
call, read the three-way call, mute/unmute or drop a party, the agent leaving.  Imported
by :mod:`ivr.app` so the routes exist before :func:`ivr.api.http.install`."""

from __future__ import annotations

from aiohttp import web

from ivr.api.errors import Forbidden, NotFound, Unavailable
from ivr.api.http import TARGET, body, document_fragment, json_response, principal, route
from ivr.threeway.service import THREEWAY, ThreeWayService

document_fragment("ivr.threeway")


def _service(request: web.Request) -> ThreeWayService:
    svc = request.app.get(THREEWAY)
    if svc is None:
        raise Unavailable("three-way calls do not run in this process (no call-event "
                          "pipeline)", "本进程不提供三方通话", code="threeway_unavailable")
    return svc


def _leg_prefix(interface: str) -> str:
    """An agent's interface → how its channels are named (``Local/1001@agent-local/n`` →
    ``Local/1001@agent-local-``; ``PJSIP/1001`` → ``PJSIP/1001-``)."""
    return (interface[:-2] if interface.endswith("/n") else interface) + "-"


def _check_own(request: web.Request, svc: ThreeWayService, call_id: str) -> None:
    """An agent acts only on calls its own channel is in (supervisors, admins: any)."""
    who = principal(request)
    if who.can("agents.act_any"):
        return
    channel = svc.agent_channel(call_id)
    if channel is None:
        return  # the service names what is wrong (no call, no agent)
    if not who.agent or not channel.startswith(_leg_prefix(who.agent)):
        raise Forbidden(f"an agent holds three-way calls only in its own calls "
                        f"({who.agent}); call {call_id!r} is not",
                        f"坐席只能在自己的通话中发起三方通话（{who.agent}）",
                        code="not_own_call")


@route("GET", "/api/calls/{call_id}/threeway", "calls.read")
async def get_threeway(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    status = _service(request).status(call_id)
    if status is None:
        raise NotFound(f"call {call_id!r} has no three-way call",
                       f"通话 {call_id!r} 没有三方通话", code="threeway_none")
    return json_response({"threeway": status})


@route("POST", "/api/calls/{call_id}/threeway", "calls.threeway", audit="threeway.add")
async def add_party(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    data = await body(request)
    _check_own(request, svc, call_id)
    result = await svc.add(call_id, str(data["target"]), announce=data.get("announce"),
                           timeout_s=data.get("timeout_s"))
    return json_response({"leg": result.to_json()})


@route("POST", "/api/calls/{call_id}/threeway/{party}/mute", "calls.threeway",
       audit="threeway.mute")
async def mute_party(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request.match_info["call_id"]
    party = request.match_info["party"]
    request[TARGET] = f"{call_id}/{party}"
    data = await body(request)
    _check_own(request, svc, call_id)
    on = bool(data.get("on", True))
    await svc.mute(call_id, party, on)
    return json_response({"call_id": call_id, "party": party, "muted": on})


@route("POST", "/api/calls/{call_id}/threeway/{party}/drop", "calls.threeway",
       audit="threeway.drop")
async def drop_party(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request.match_info["call_id"]
    party = request.match_info["party"]
    request[TARGET] = f"{call_id}/{party}"
    _check_own(request, svc, call_id)
    await svc.drop(call_id, party)
    return json_response({"call_id": call_id, "party": party, "dropped": True})


@route("POST", "/api/calls/{call_id}/threeway/leave", "calls.threeway",
       audit="threeway.leave")
async def agent_leaves(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    _check_own(request, svc, call_id)
    await svc.leave(call_id)
    return json_response({"call_id": call_id, "left": True})
