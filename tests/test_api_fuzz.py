"""Fuzz the HTTP API from its OpenAPI document (hypothesis): for every route, arbitrary
JSON bodies (and bodies that are not JSON), arbitrary path parameters and query strings,
with an admin's and an agent's token and with none.  Every answer is one the document
declares (else a JSON error of its Error schema) and never a 500.  The application runs
against the emulator in a thread of its own (real HTTP on 127.0.0.1); hypothesis drives
it with plain blocking requests."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.api.auth import FailureLimiter, TokenStore
from ivr.api.http import API, ROUTES, openapi
from ivr.app import AppOptions, build_app, running
from ivr.sim import Emulator, EmulatorConfig
from ivr.sim.clock import VirtualClock
from tests.test_api import FAST, check_response
from tests.test_api_prompts import PROMPTS
from tests.test_app import for_emulator

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["interface", "queues", "name", "reason", "call_id", "version_id",
                         "files", "state_interface", "x"]) | st.text(max_size=10),
        inner, max_size=6),
    max_leaves=20)


KEYS = {"files": ["hotline.yaml", "x.yaml", "entries.yaml", "a.yml"],
        "queues": ["hotline", "desk", "nosuch"]}


def from_schema(schema: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values of the subset of JSON Schema the document's request bodies use (objects
    with properties, strings, integers, arrays), so that the fuzzer gets past the schema
    check into the handlers; the text is random (unicode, separators, control
    characters).  A ``$ref`` (a slice's fragment may use one) is resolved in the
    document."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = openapi()
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return from_schema(target, name)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        extra = schema.get("additionalProperties")
        fields = {k: from_schema(v, k) for k, v in props.items()}
        base = st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required})
        if isinstance(extra, dict):
            # mostly names the handlers accept (queues, files), sometimes anything
            keys = st.sampled_from(KEYS.get(name, ["x"])) | st.text(max_size=20)
            more = st.dictionaries(keys, from_schema(extra),
                                   min_size=schema.get("minProperties", 0), max_size=2)
            return st.builds(lambda a, b: {**b, **a}, base, more)
        return base
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 60), 60)) | st.sampled_from(
            ["SIP/fuzz", "SIP/other", "Local/1001@agent-local/n", "hotline", "lunch",
             "version: 1\n", "entries.yaml", "x.yaml"])
    if kind == "integer":
        return st.integers(schema.get("minimum", -10), schema.get("maximum", 2000))
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=4)
    return JSON


SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1,
                  max_size=30)


@dataclass
class Running:
    base: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The application with its emulator, on an event loop in a thread, for the module."""
    tmp = tmp_path_factory.mktemp("api-fuzz")
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        box["stop"] = lambda: loop.call_soon_threadsafe(stop.set)
        async with Emulator(EmulatorConfig(clock=VirtualClock())) as emu:
            run = uuid.uuid4().hex[:8]
            (tmp / "prompts").mkdir()  # what an upload imports lands here, not in the repo
            shutil.copy(PROMPTS / "catalog.yaml", tmp / "prompts")
            s = for_emulator(emu, redis_url=redis_server.url, http_port=0,
                             asterisk_conf_dir=tmp / "asterisk-conf", prompts_dir=tmp / "prompts")
            s = replace(s, events=s.events.with_(stream_prefix=f"test:fuzz:{run}"))
            prefix = f"test:fuzz:{run}:api"
            app = build_app(s, AppOptions(pusher=False, watch_s=None, ami=FAST,
                                          api_prefix=prefix))
            # the fuzzer fails authentication on purpose, often: no lockout here (the
            # limiter has its own tests)
            app[API].limiter = FailureLimiter(allowed=10**9)
            async with running(app) as runner:
                r = aioredis.from_url(redis_server.url)
                store = TokenStore(r, prefix)
                tokens = {}
                for role in ("agent", "supervisor", "admin"):
                    tokens[role], _ = await store.create(
                        role, agent="SIP/fuzz" if role == "agent" else None)
                await r.aclose()
                host, port = runner.addresses[0][:2]
                box["running"] = Running(f"http://{host}:{port}", tokens)
                started.set()
                await stop.wait()

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test
            box["error"] = exc
            started.set()

    t = threading.Thread(target=thread, name="api-fuzz-app")
    t.start()
    started.wait(60)
    try:
        if "error" in box:
            raise box["error"]
        yield box["running"]
    finally:
        if "stop" in box:
            box["stop"]()
        t.join(60)
    if "error" in box:
        raise box["error"]


def request(base: str, method: str, path: str, token: str | None, data: bytes | None
            ) -> tuple[int, str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, ctype, raw = resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        status, ctype, raw = exc.code, exc.headers["Content-Type"], exc.read()
    body = raw.decode() if ctype.startswith("text/") else json.loads(raw)
    return status, ctype, body


def fill(path: str, segments: list[str]) -> str:
    out = path
    for seg in segments:
        if "{" not in out:
            break
        start, end = out.index("{"), out.index("}")
        out = out[:start] + urllib.parse.quote(seg, safe="") + out[end + 1:]
    return out


ROUTE_LIST = sorted((r.method, r.path) for r in ROUTES if r.path != "/api/dialplans/publish")
DOC = openapi()
BODIES = {(m, p): from_schema(DOC["paths"][p][m.lower()]["requestBody"]["content"]
                              ["application/json"]["schema"])
          for m, p in ROUTE_LIST if "application/json" in DOC["paths"][p][m.lower()].get(
              "requestBody", {}).get("content", {})}  # (an upload takes bytes: JSON too)


@pytest.mark.parametrize("route", ROUTE_LIST, ids=[f"{m} {p}" for m, p in ROUTE_LIST])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), raw=st.binary(max_size=60),
       kind=st.sampled_from(["schema", "schema", "schema", "json", "bytes"]),
       segments=st.lists(SEGMENT, min_size=2, max_size=2),
       role=st.sampled_from(["admin", "admin", "supervisor", "agent", None]),
       query=st.dictionaries(st.sampled_from(["interface", "x", "lang", "peak_dbfs"]), SEGMENT,
                             max_size=2))
def test_fuzz_every_route_from_the_document(
        served: Running, route: tuple[str, str], data: st.DataObject, raw: bytes, kind: str,
        segments: list[str], role: str | None, query: dict[str, str]) -> None:
    method, template = route
    path = fill(template, segments)
    qs = ("?" + urllib.parse.urlencode(query)) if query else ""
    body: bytes | None = None
    if method != "GET":
        if kind == "bytes":
            body = raw
        else:
            strategy = BODIES.get(route, JSON) if kind == "schema" else JSON
            body = json.dumps(data.draw(strategy, label="body")).encode()
    token = served.tokens[role] if role else None
    status, ctype, answer = request(served.base, method, path + qs, token, body)
    check_response(method, path, status, ctype, answer)  # declared, and never a 500
