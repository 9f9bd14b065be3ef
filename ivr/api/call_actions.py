"""Actions on a live call that need no other slice: hang it up
(``POST /api/calls/{call_id}/hangup``).

The call and its channels are read from the live call model (ivr/calls) and checked
before anything is sent: an unknown or ended call is 404 and an agent's hang-up of a call
it is not with is 403, with no action sent to Asterisk.  Then an AMI ``Hangup`` (cause 16,
normal clearing) goes to each of the call's live channels, the caller's first, over the
bridge's AMI client.  Imported by ivr/app.py (routes exist before ``install``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from ivr.ami.errors import AMIActionTimeout, AMIConnectionError
from ivr.ami.messages import Response
from ivr.api.errors import BadGateway, Forbidden, NotFound, Unavailable
from ivr.api.http import API, TARGET, body, json_response, principal, route
from ivr.calls.model import CallModel
from ivr.log import event as log_event

log = logging.getLogger("ivr.api.calls")

HANGUP_CAUSE = "16"  # normal clearing
ACTION_TIMEOUT_S = 5.0
NO_SUCH_CHANNEL = "no such channel"  # manager.c's reply for a channel already gone


def _model(request: web.Request) -> CallModel:
    model = request.app[API].sources.call_model()
    if model is None:
        raise Unavailable("the live calls are not kept in this process (no call-event "
                          "pipeline)", "本进程不维护实时通话", code="calls_unavailable")
    return model


def _gone(call_id: str, ended: bool) -> NotFound:
    if ended:
        return NotFound(f"call {call_id!r} has already ended: nothing sent to Asterisk",
                        f"通话 {call_id!r} 已结束：未向 Asterisk 发送任何操作",
                        code="unknown_call")
    return NotFound(f"no live call {call_id!r}: nothing sent to Asterisk",
                    f"没有实时通话 {call_id!r}：未向 Asterisk 发送任何操作",
                    code="unknown_call")


@route("POST", "/api/calls/{call_id}/hangup", "calls.hangup", audit="calls.hangup")
async def hangup(request: web.Request) -> web.StreamResponse:
    """Hang up a live call: supervisors and admins any call, an agent only the call it
    is with."""
    call_id = request.match_info["call_id"]
    request[TARGET] = call_id
    if request.can_read_body:
        await body(request)  # optional: {} (nothing else is taken)
    model = _model(request)
    call = model.call(call_id)
    channels = model.channels_of(call_id)
    if call is None or not channels:
        raise _gone(call_id, model.has_ended(call_id))
    who = principal(request)
    # an agent: the call it is with now (the member's interface, as its token names it)
    if not who.may_act_for(model.agent_interface_of(call_id) or ""):
        raise Forbidden(f"an agent hangs up only its own calls ({who.agent}); call "
                        f"{call_id!r} is not with it",
                        f"坐席只能挂断自己的通话（{who.agent}），通话 {call_id!r} 不是",
                        code="not_own_call")
    client = request.app[API].sources.ami()
    if client is None or not client.connected:
        raise Unavailable("not connected to Asterisk: nothing sent",
                          "未连接 Asterisk：未发送任何操作", code="ami_unavailable")
    # the caller's channel first: its hang-up usually ends the others (bridge, queue)
    channels.sort(key=lambda c: (c.uniqueid != call.first_uniqueid, c.uniqueid))
    hung: list[str] = []
    for ch in channels:
        try:
            reply = await client.send_action(
                "Hangup", {"Channel": ch.name, "Cause": HANGUP_CAUSE},
                timeout=ACTION_TIMEOUT_S)
        except AMIActionTimeout:
            raise BadGateway(f"Asterisk did not answer Hangup of {ch.name} in time",
                             f"Asterisk 未及时答复挂断 {ch.name}",
                             code="asterisk_timeout") from None
        except AMIConnectionError:
            raise Unavailable(f"the connection to Asterisk dropped while hanging up "
                              f"{ch.name}", f"挂断 {ch.name} 时与 Asterisk 的连接中断",
                              code="ami_unavailable") from None
        if isinstance(reply, Response) and reply.success:
            hung.append(ch.name)
            continue
        message = reply.message if isinstance(reply, Response) else repr(reply)
        if message.strip().lower() == NO_SUCH_CHANNEL:
            continue  # it went away meanwhile (hung up with the one before it)
        log_event(log, logging.WARNING, "api.hangup_refused", call=call_id,
                  channel=ch.name, message=message)
        raise BadGateway(f"Asterisk refused Hangup of {ch.name}: {message}",
                         f"Asterisk 拒绝挂断 {ch.name}：{message}", code="asterisk_refused")
    if not hung:
        raise _gone(call_id, True)
    log_event(log, logging.INFO, "api.hangup", call=call_id, channels=len(hung),
              by=who.token_id)
    return json_response({"ok": True, "call_id": call_id, "channels": hung})
