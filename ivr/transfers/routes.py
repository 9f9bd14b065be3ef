"""HTTP routes of transfers (docs/api.md, docs/transfers.md): ask for a transfer of a call,
complete or cancel an attended one, read the one in progress.  Imported by
:mod:`ivr.app` so the routes exist before :func:`ivr.api.http.install`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.api.errors import Forbidden, NotFound, Unavailable
from ivr.api.http import TARGET, body, document_fragment, json_response, principal, route
from ivr.transfers.service import TRANSFERS, TransferService
from ivr.transfers.state import Transfer

document_fragment("ivr.transfers")


def view(t: Transfer) -> dict[str, Any]:
    data = t.data()
    return {"id": t.id, "call_id": t.call_id, "kind": t.kind, "method": t.method,
            "target": t.ref, "number": t.target.number, "entry": data["entry"],
            "label": data["label"], "target_kind": t.target.kind, "agent": t.agent,
            "phase": t.phase, "outcome": t.outcome, "reason": t.reason,
            "cause": t.target_cause, "target_channel": t.target_channel,
            "fallback_queue": t.fallback_queue}


def _service(request: web.Request) -> TransferService:
    svc = request.app.get(TRANSFERS)
    if svc is None:
        raise Unavailable("transfers do not run in this process (no call-event pipeline)",
                          "本进程不提供转接", code="transfers_unavailable")
    return svc


def _leg_prefix(interface: str) -> str:
    """An agent's interface → how its channels are named: ``Local/1001@agent-local/n`` →
    ``Local/1001@agent-local-``; ``PJSIP/1001`` → ``PJSIP/1001-``."""
    base = interface[:-2] if interface.endswith("/n") else interface
    return base + "-"


def _check_own(request: web.Request, svc: TransferService, call_id: str) -> None:
    """An agent acts only on calls its own leg is in (supervisors and admins: any)."""
    who = principal(request)
    if who.can("agents.act_any"):
        return
    leg = None
    active = svc.active(call_id)
    if active is not None:
        leg = active.agent_channel
    else:
        try:
            leg = svc.legs(call_id)[1].name
        except Exception:  # noqa: BLE001 - the service names what is wrong below
            return
    if not who.agent or not leg.startswith(_leg_prefix(who.agent)):
        raise Forbidden(f"an agent transfers only its own calls ({who.agent}); call "
                        f"{call_id!r} is not", f"坐席只能转接自己的通话（{who.agent}）",
                        code="not_own_call")


@route("GET", "/api/calls/{call_id}/transfer", "calls.read")
async def get_transfer(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    t = _service(request).active(call_id)
    if t is None:
        raise NotFound(f"call {call_id!r} has no transfer in progress",
                       f"通话 {call_id!r} 没有进行中的转接", code="no_transfer")
    return json_response({"transfer": view(t)})


@route("POST", "/api/calls/{call_id}/transfer", "calls.transfer", audit="transfers.request")
async def request_transfer(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    data = await body(request)
    _check_own(request, svc, call_id)
    mode = data.get("mode", "attended")
    target = str(data["target"])
    if mode == "blind":
        t = await svc.blind(call_id, target, method=data.get("method", "blindtransfer"))
    elif mode == "one_key":
        t = await svc.one_key(call_id, target)
    else:
        t = await svc.attended(call_id, target)
    return json_response({"transfer": view(t)})


@route("POST", "/api/calls/{call_id}/transfer/complete", "calls.transfer",
       audit="transfers.complete")
async def complete_transfer(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    _check_own(request, svc, call_id)
    return json_response({"transfer": view(await svc.complete(call_id))})


@route("POST", "/api/calls/{call_id}/transfer/cancel", "calls.transfer",
       audit="transfers.cancel")
async def cancel_transfer(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request[TARGET] = request.match_info["call_id"]
    _check_own(request, svc, call_id)
    return json_response({"transfer": view(await svc.cancel(call_id))})
