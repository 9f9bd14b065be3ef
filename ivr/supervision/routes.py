"""HTTP routes of supervision (docs/supervision.md, docs/api.md); imported by ivr/app.py
so they exist before the API is installed.  A console page needs only these:

    GET  /api/supervision/calls                       live agent calls I may join
    GET  /api/supervision/sessions                    sessions (an agent: on its calls,
                                                      only if the policy shows them)
    POST /api/supervision/sessions                    join {call_id, mode, phone?, channel?}
    GET  /api/supervision/sessions/{session_id}
    POST /api/supervision/sessions/{session_id}/mode  {mode}
    POST /api/supervision/sessions/{session_id}/leave
"""

from __future__ import annotations

from aiohttp import web

from ivr.api.errors import Unavailable
from ivr.api.http import TARGET, body, document_fragment, json_response, principal, route
from ivr.supervision.service import SUPERVISION, SupervisionService
from ivr.supervision.state import Actor

document_fragment("ivr.supervision")


def _service(request: web.Request) -> SupervisionService:
    svc = request.app.get(SUPERVISION)
    if svc is None:
        raise Unavailable("supervision does not run in this process",
                          "本进程不提供监听功能", code="supervision_unavailable")
    return svc


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.token_id, who.role, who.name)


@route("GET", "/api/supervision/calls", "supervision.act")
async def supervisable_calls(request: web.Request) -> web.StreamResponse:
    return json_response({"calls": _service(request).agent_calls(_actor(request))})


@route("GET", "/api/supervision/sessions", "supervision.read")
async def list_sessions(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    who = principal(request)
    sessions = svc.visible_sessions(_actor(request), who.agent)
    return json_response({"show_agent": svc.policy.show_agent,
                          "sessions": [s.to_json() for s in sessions]})


@route("GET", "/api/supervision/sessions/{session_id}", "supervision.act")
async def get_session(request: web.Request) -> web.StreamResponse:
    return json_response(_service(request).get(request.match_info["session_id"]).to_json())


@route("POST", "/api/supervision/sessions", "supervision.act", audit="supervision.join")
async def join(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    data = await body(request)
    call_id = str(data["call_id"])
    request[TARGET] = call_id
    s = await svc.join(_actor(request), call_id, str(data.get("mode", "listen")),
                       phone=data.get("phone"), channel=data.get("channel"))
    return json_response(s.to_json(), status=202)


@route("POST", "/api/supervision/sessions/{session_id}/mode", "supervision.act",
       audit="supervision.mode")
async def switch(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    sid = request.match_info["session_id"]
    request[TARGET] = sid
    data = await body(request)
    s = await svc.switch(_actor(request), sid, str(data["mode"]))
    return json_response(s.to_json(), status=202)


@route("POST", "/api/supervision/sessions/{session_id}/leave", "supervision.act",
       audit="supervision.leave")
async def leave(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    sid = request.match_info["session_id"]
    request[TARGET] = sid
    await body(request)
    s = await svc.leave(_actor(request), sid)
    return json_response(s.to_json())
