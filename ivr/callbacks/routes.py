"""HTTP routes of the missed-call callbacks (docs/api.md, docs/callbacks.md): list the
jobs, read one, cancel one (supervisors and admins; numbers masked).  Imported by
:mod:`ivr.app` so the routes exist before :func:`ivr.api.http.install`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ivr.api.errors import Unavailable
from ivr.api.http import TARGET, body, document_fragment, json_response, principal, route
from ivr.callbacks.service import CALLBACKS, CallbackService
from ivr.callbacks.state import Job
from ivr.privacy import mask_number

document_fragment("ivr.callbacks")


def view(job: Job) -> dict[str, Any]:
    return job.to_json(mask=mask_number)


def _service(request: web.Request) -> CallbackService:
    svc = request.app.get(CALLBACKS)
    if svc is None:
        raise Unavailable("callbacks do not run in this process ([callbacks] enabled = false "
                          "or no call-event pipeline)", "本进程未启用漏接回拨",
                          code="callbacks_unavailable")
    return svc


@route("GET", "/api/callbacks", "callbacks.read")
async def list_callbacks(request: web.Request) -> web.StreamResponse:
    every = request.query.get("all", "") in ("1", "true", "yes")
    jobs = await _service(request).list(active_only=not every)
    return json_response({"callbacks": [view(j) for j in jobs]})


@route("POST", "/api/callbacks", "callbacks.act", audit="callbacks.schedule")
async def schedule_callback(request: web.Request) -> web.StreamResponse:
    data = await body(request)
    who = principal(request)
    job = await _service(request).schedule(
        str(data["number"]), queue=data.get("queue"), call_id=str(data.get("call_id") or ""),
        by=f"operator:{who.name}")
    request[TARGET] = job.id
    return json_response({"callback": view(job)})


@route("GET", "/api/callbacks/{job_id}", "callbacks.read")
async def get_callback(request: web.Request) -> web.StreamResponse:
    job = await _service(request).get(request.match_info["job_id"])
    return json_response({"callback": view(job)})


@route("POST", "/api/callbacks/{job_id}/cancel", "callbacks.act", audit="callbacks.cancel")
async def cancel_callback(request: web.Request) -> web.StreamResponse:
    job_id = request[TARGET] = request.match_info["job_id"]
    who = principal(request)
    job = await _service(request).cancel(job_id, by=f"operator:{who.name}")
    return json_response({"callback": view(job)})
