"""HTTP routes of quality review (docs/supervision.md); imported by ivr/app.py.  For the
console's review page:

    GET  /api/quality/form                              the scoring form (zh/en labels)
    POST /api/quality/sample {day?}                     draw a day's sample (default today)
    GET  /api/quality/reviews?day=YYYY-MM-DD            the sample, my queues only
    GET  /api/quality/reviews/{call_id}                 one review + the call's timeline
    GET  /api/quality/reviews/{call_id}/recording?n=0   the audio (HTTP Range: seek)
    POST /api/quality/reviews/{call_id}/score           {scores: {item: points}, comment?}
    GET  /api/quality/my-scores                         an agent's scored calls
    POST /api/quality/reviews/{call_id}/appeal          {reason} (the agent)
"""

from __future__ import annotations

import re

from aiohttp import web

from ivr.api.errors import BadRequest, Unavailable, from_domain
from ivr.api.http import API, TARGET, body, document_fragment, json_response, principal, route
from ivr.errors import IvrError
from ivr.quality.service import QUALITY, QualityService
from ivr.quality.state import day_of
from ivr.supervision.state import Actor

document_fragment("ivr.quality")

_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _service(request: web.Request) -> QualityService:
    svc = request.app.get(QUALITY)
    if svc is None:
        raise Unavailable("quality review does not run in this process (it needs [redis] url)",
                          "本进程不提供质检功能", code="quality_unavailable")
    return svc


def _actor(request: web.Request) -> Actor:
    who = principal(request)
    return Actor(who.token_id, who.role, who.name)


def _day(value: object, svc: QualityService) -> str:
    if value is None or value == "":
        return day_of(svc.clock())
    if not isinstance(value, str) or not _DAY_RE.fullmatch(value):
        raise BadRequest(f"day {value!r}: expected YYYY-MM-DD", f"日期 {value!r} 格式应为 "
                         "YYYY-MM-DD", code="invalid_day")
    return value


@route("GET", "/api/quality/form", "quality.self")
async def form(request: web.Request) -> web.StreamResponse:
    policy = _service(request).policy
    return json_response({"form_id": policy.form_id, "total": 100,
                          "items": [i.to_json() for i in policy.form]})


@route("POST", "/api/quality/sample", "quality.review", audit="quality.sample")
async def draw(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    data = await body(request)
    day = _day(data.get("day"), svc)
    request[TARGET] = day
    actor = _actor(request)
    svc.check_reviewer(actor)
    reviews = await svc.sample_day(day)
    return json_response({"day": day, "reviews": [
        r.summary() for r in reviews if svc.policy.reviews(actor.name, r.queue)]})


@route("GET", "/api/quality/reviews", "quality.review")
async def list_reviews(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    day = _day(request.query.get("day"), svc)
    reviews = await svc.reviews(_actor(request), day)
    return json_response({"day": day, "reviews": [r.summary() for r in
                                                  sorted(reviews, key=lambda r: r.started_at)]})


@route("GET", "/api/quality/reviews/{call_id}", "quality.review")
async def get_review(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    rv = await svc.review(_actor(request), request.match_info["call_id"])
    return json_response({**rv.view(), "form": [i.to_json() for i in svc.policy.form]})


@route("GET", "/api/quality/reviews/{call_id}/recording", "quality.review")
async def recording(request: web.Request) -> web.StreamResponse:
    """The archived audio, as a file response: ``Range`` requests (seeking) answer 206.
    Every request is audited (``quality.recording``, refusals too), though a GET."""
    svc = _service(request)
    call_id = request.match_info["call_id"]
    raw = request.query.get("n", "0")
    result = "ok"
    try:
        if not raw.isdigit() or len(raw) > 3:
            raise BadRequest(f"n={raw!r}: the recording's index, 0…", "录音序号无效",
                             code="invalid_index")
        path = await svc.recording_path(_actor(request), call_id, int(raw))
    except IvrError as exc:
        result = from_domain(exc).code
        raise
    finally:
        audit = request.app[API].audit
        if audit is not None:
            await audit.record(principal(request), "quality.recording", call_id, result,
                               request.remote or "",
                               detail=f"n={raw} range={request.headers.get('Range', '')}")
    ctype = "audio/mpeg" if path.suffix == ".mp3" else "audio/ogg"
    return web.FileResponse(path, headers={"Content-Type": ctype,
                                           "Cache-Control": "private, no-store"})


@route("POST", "/api/quality/reviews/{call_id}/score", "quality.review",
       audit="quality.score")
async def score(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request.match_info["call_id"]
    request[TARGET] = call_id
    data = await body(request)
    rv = await svc.score(_actor(request), call_id, dict(data["scores"]),
                         str(data.get("comment", "")))
    return json_response(rv.summary())


@route("GET", "/api/quality/my-scores", "quality.self")
async def my_scores(request: web.Request) -> web.StreamResponse:
    reviews = await _service(request).my_scores(principal(request).agent)
    return json_response({"reviews": [r.summary() for r in reviews]})


@route("POST", "/api/quality/reviews/{call_id}/appeal", "quality.self",
       audit="quality.appeal")
async def appeal(request: web.Request) -> web.StreamResponse:
    svc = _service(request)
    call_id = request.match_info["call_id"]
    request[TARGET] = call_id
    data = await body(request)
    rv = await svc.appeal(principal(request).agent, call_id, str(data["reason"]))
    return json_response(rv.summary())
