"""The composition root: one aiohttp application holds every part of the bridge process.

    app = build_app(settings)              # checks, loads the IVR definition; starts nothing
    async with running(app) as runner:     # starts each part in order
        ...                                # app[BRIDGE], app[PIPELINE], … are live
    # stopped, in reverse order, exactly the parts that had started

Each part is a ``cleanup_ctx`` entry (aiohttp runs them in order at start-up and undoes
them in reverse at clean-up; a part whose start-up did not finish is not cleaned up, the
parts before it are) and publishes itself under a typed :class:`aiohttp.web.AppKey`::

    PIPELINE     call events → durable Redis outbox (resumes checkpointed calls)
    PUSHER       outbox → signed POSTs to the ticket backend (optional: `ivr events push`)
    RECORDINGS   recordings after the call (ivr/recordings): listens to the pipeline's call
                 events, archives each ended call's recordings (durable Redis jobs), adds
                 recording.ready to the outbox; daily retention purge (only with
                 [recordings] dir)
    CALLBACKS    missed-call callbacks (ivr/callbacks): listens to the pipeline's call
                 events (queue.abandoned, callback.requested …), an AMI consumer of
                 OriginateResponse; places due callbacks over the bridge's AMI client
                 (only with [callbacks] enabled)
    STATS        service-level figures (ivr.callstats), on the builder's Linkedid tracker
    CALL_EVENTS  the pipeline as an AMI consumer: the live call model (ivr/calls,
                 app[PIPELINE].builder.model) and call events in wire order,
                 CoreShowChannels after every (re)connect, sweeps lost calls
    IVR          the per-call IVR runtime on the published definition (+ reload watcher)
    QUEUES       live queues, agents and waiting callers (ivr/agents), re-read with
                 QueueStatus after every (re)connect
    (feed)       the API's live feed registers its AMI consumer (and hears call events)
    BRIDGE       FastAGI server (routes to IVR) and AMI client: every AMI event goes, in
                 wire order, to the AMI_CONSUMERS that read it; the AMI event filter is
                 the union of what they declare; each one's resync after every (re)connect
    TRANSFERS    blind, attended and one-key transfers (ivr/transfers) on the live call model,
                 over the bridge's AMI client; an AMI consumer after the pipeline (needs
                 the pipeline)
    THREEWAY     three-way calls (ivr/threeway): directory entries or numbers brought into
                 an agent's call (ConfBridge), mute, drop, the agent leaving; an AMI
                 consumer after the pipeline (needs it)
    RECORDING_HOOKS  the call recording starts at the agent's answer (the policy of
                 ivr/recordings), stop / mute one direction on request; with [recordings]
                 dir only (recorded calls are archived)
    AGENTS       agent operations (log in/out, pause with a reason) over the bridge's client
    QUALITY      quality review (ivr/quality): records of ended calls and their archives,
                 the daily sample, scores and appeals as quality.* call events (with events)
    SUPERVISION  supervisors listen/whisper/barge on agent calls (ivr/supervision: ChanSpy
                 over the bridge's client; an AMI consumer registered before BRIDGE)
    API          the HTTP API's routes and middlewares (ivr/api, docs/api.md; added by
                 build_app, not wired by hand); its Redis client (tokens, audit) last

A part that reads AMI events is an :class:`ivr.bridge.AmiConsumer` (it declares the
events and ``VarSet`` variables it reads, takes them in ``on_ami_event`` and re-reads
Asterisk's lists in ``resync``) and registers itself in its own ``cleanup_ctx`` entry,
before ``_bridge``: ``app[AMI_CONSUMERS].append(consumer)``.  Each event reaches the
consumers in registration order.

``ivr serve``, ``ivr demo`` and the tests use it.  It is a real
:class:`aiohttp.web.Application`, run with an :class:`~aiohttp.web.AppRunner`: the HTTP
API and console join it as routes; a TCP site is bound only when ``[http] port`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

import ivr.api.call_actions  # noqa: F401  (its routes exist before install)
import ivr.api.prompt_routes  # noqa: F401
import ivr.api.session_routes  # noqa: F401  (its routes exist before install)
import ivr.callbacks.routes  # noqa: F401  (its routes exist before install)
import ivr.quality.routes  # noqa: F401  (its routes exist before install)
import ivr.recordings.routes  # noqa: F401  (its routes exist before install)
import ivr.supervision.routes  # noqa: F401  (its routes exist before install)
import ivr.threeway.routes  # noqa: F401  (its routes exist before install)
import ivr.transfers.routes  # noqa: F401  (its routes exist before install)
from ivr.agents.catalog import AgentCatalog
from ivr.agents.monitor import QueueMonitor
from ivr.agents.service import AgentService
from ivr.ami.client import AMISettings
from ivr.api.auth import Principal
from ivr.api.feed import FeedConsumer
from ivr.api.http import API, Sources
from ivr.api.http import install as install_api
from ivr.bridge import AmiConsumers, Bridge
from ivr.callbacks.service import CALLBACKS, CallbacksConfig, CallbackService
from ivr.calls.steps import ServiceStep
from ivr.callstats import CallStats
from ivr.config import AsteriskServer, Settings
from ivr.console.routes import install as install_console
from ivr.dialplan.publish import Store
from ivr.dialplan.validate import file_prompt_lookup
from ivr.errors import ConfigError
from ivr.events.builder import BuilderConfig
from ivr.events.feed import CallEventFeed
from ivr.events.model import CallEvent
from ivr.events.outbox import keys_for
from ivr.events.pipeline import CallEventPipeline
from ivr.events.pusher import Pusher
from ivr.failover.service import FailoverFeed
from ivr.flow.runtime import DefinitionStore, IvrRuntime
from ivr.flow.ticket_lookup import TicketLookup
from ivr.log import event as log_event
from ivr.quality.policy import load_quality_policy
from ivr.quality.service import QUALITY, QualityService
from ivr.quality.store import QualityStore
from ivr.recordings.hooks import RECORDING_HOOKS, RecordingHooks
from ivr.recordings.service import RecordingsConfig, RecordingWorker
from ivr.redisconn import connect as redis_connect
from ivr.supervision.policy import load_supervision_policy
from ivr.supervision.service import SUPERVISION, SupervisionService
from ivr.supervision.state import Actor
from ivr.threeway.service import THREEWAY, ThreeWayService
from ivr.transfers.service import TRANSFERS, TransferService
from ivr.transfers.targets import Resolver

log = logging.getLogger("ivr.app")


@dataclass(frozen=True, slots=True)
class AppOptions:
    """How this process composes the parts (the settings say where things are)."""

    events: bool = True  # the call-event pipeline (needs [redis] url)
    pusher: bool = True  # deliver here; False = `ivr events push` runs elsewhere
    watch_s: float | None = 2.0  # reload the published definition every N s; None = never
    drain_s: float = 0.0  # at stop, deliver what is in the outbox first (demo), ≤ N s
    ami: AMISettings | None = None  # AMI client tuning (keep-alive, reconnect)
    tickets: TicketLookup | None = None  # None: the definition's own ticket API
    api_prefix: str = "ivr:api"  # Redis keys of the HTTP API's tokens and audit trail
    # wall clock of the callbacks' schedule (None: time.time; tests: the emulator's)
    clock: Callable[[], float] | None = None


SETTINGS = web.AppKey("ivr.settings", Settings)
OPTIONS = web.AppKey("ivr.options", AppOptions)
DEFINITIONS = web.AppKey("ivr.definitions", DefinitionStore)
PIPELINE = web.AppKey("ivr.pipeline", CallEventPipeline)
PUSHER = web.AppKey("ivr.pusher", Pusher)
STATS = web.AppKey("ivr.stats", CallStats)
CALL_EVENTS = web.AppKey("ivr.call_events", CallEventFeed)
AMI_CONSUMERS = web.AppKey("ivr.ami_consumers", AmiConsumers)
IVR = web.AppKey("ivr.ivr_runtime", IvrRuntime)
BRIDGE = web.AppKey("ivr.bridge", Bridge)
QUEUES = web.AppKey("ivr.queues", QueueMonitor)
AGENTS = web.AppKey("ivr.agents", AgentService)
RECORDINGS = web.AppKey("ivr.recordings", RecordingWorker)
SERVERS = web.AppKey("ivr.servers", dict[str, "ServerParts"])


def build_app(settings: Settings, options: AppOptions | None = None) -> web.Application:
    """The application, nothing started.  Raises (``IvrError``) on what it can check
    before starting anything: missing settings, an invalid IVR definition."""
    options = options or AppOptions()
    settings.require("ami_secret")
    if len(settings.servers) > 1 and not options.events:
        raise ConfigError("several Asterisk servers ([[asterisk]]) need the call-event "
                          "pipeline ([redis] url) / 多台服务器需要事件管道")
    if options.events:
        settings.require("redis_url")
        if options.pusher:
            settings.require("events.ticket_url", "events.secret")
    # Calls run on the *published* definition, never on unpublished edits in dialplans/.
    published = Store.at(settings.asterisk_conf_dir).current_definition_dir()
    definitions = DefinitionStore(published or settings.dialplans_dir,
                                  prompts_dir=settings.prompts_dir)
    definitions.load()

    app = web.Application()
    app[SETTINGS] = settings
    app[OPTIONS] = options
    app[DEFINITIONS] = definitions
    app[AMI_CONSUMERS] = AmiConsumers()
    if options.events:
        app.cleanup_ctx.append(_pipeline)
        if options.pusher:
            app.cleanup_ctx.append(_pusher)
        app.cleanup_ctx.append(_quality)  # hears every call's events, and the archives'
        if settings.recordings_dir is not None:  # listens before the AMI client feeds calls
            app.cleanup_ctx.append(_recordings)
        if settings.callbacks_enabled:  # an AMI consumer: registered before the bridge
            app.cleanup_ctx.append(_callbacks)
    # The live call model (ivr/calls, the pipeline builder's) is fed from here: after the
    # outbox it checkpoints through, before the IVR and the AMI client that feed it.
    app.cleanup_ctx.append(_stats)
    if options.events:
        app.cleanup_ctx.append(_call_events)
    app.cleanup_ctx.append(_ivr)
    app.cleanup_ctx.append(_queues)
    app.cleanup_ctx.append(_feed)
    if options.events:
        app.cleanup_ctx.append(_transfers)
        app.cleanup_ctx.append(_threeway)
        if settings.recordings_dir is not None:  # recorded calls are archived: record them
            app.cleanup_ctx.append(_recording_hooks)
    app.cleanup_ctx.append(_supervision)
    app.on_shutdown.append(_supervision_drain)  # its audit lines, before the API's Redis goes
    app.cleanup_ctx.append(_bridge)
    if options.events and len(settings.servers) > 1:  # [[asterisk]]: one bridge each
        app.cleanup_ctx.append(_more_servers)
    app.cleanup_ctx.append(_agents)
    # the HTTP API (ivr/api): routes, middlewares, its Redis connection (last part)
    install_api(app, _api_sources(app), redis_url=settings.redis_url,
                prefix=options.api_prefix)
    install_console(app)  # the web console's pages and files (ivr/console)
    return app


async def _feed(app: web.Application) -> AsyncIterator[None]:
    # the API's live feed (ivr/api/feed.py) hears of queue changes from AMI and of call
    # changes from the call events the pipeline builds (it changes the call model then)
    feed = app[API].feed
    app[AMI_CONSUMERS].append(FeedConsumer(feed))
    pipeline = app.get(PIPELINE)
    if pipeline is not None:
        pipeline.add_listener(lambda events: feed.poke("calls"))
        pipeline.add_listener(app[API].call_events.on_call_events)  # GET /api/calls/{id}
    yield


def _api_sources(app: web.Application) -> Sources:
    """What the API reads of this process's parts (each None while it does not run)."""
    settings = app[SETTINGS]

    def ami_connected() -> bool | None:
        bridge = app.get(BRIDGE)
        return None if bridge is None else bridge.ami.connected

    def calls() -> Any:
        pipeline = app.get(PIPELINE)
        return None if pipeline is None else list(pipeline.builder.model.calls.values())

    async def published() -> None:
        # a publish over the API: the IVR loads the version Asterisk now runs (its own
        # folder, versions/<id>/dialplans), not only the files it was started on
        folder = Store.at(settings.asterisk_conf_dir).current_definition_dir()
        definitions = app[DEFINITIONS]
        if folder is not None:
            definitions.directory = folder
            await definitions.reload()

    return Sources(
        ami_connected=ami_connected,
        queue_state=lambda: None if (q := app.get(QUEUES)) is None else q.state,
        agents=lambda: app.get(AGENTS),
        stats=lambda: None if (s := app.get(STATS)) is None else s.summary(),
        calls=calls,
        call_model=lambda: None if (p := app.get(PIPELINE)) is None else p.builder.model,
        outbox_keys=keys_for(settings.events) if settings.redis_url else None,
        store=lambda: Store.at(settings.asterisk_conf_dir),
        ami=lambda: None if (b := app.get(BRIDGE)) is None else b.ami,
        dialplans_dir=settings.dialplans_dir,
        prompts_dir=settings.prompts_dir,
        published=published,
        tickets=lambda: None if (rt := app.get(IVR)) is None else rt.ticket_lookup(),
    )


def _catalog(app: web.Application) -> AgentCatalog:
    return AgentCatalog.from_definition(app[DEFINITIONS].current.definition)


async def _supervision(app: web.Application) -> AsyncIterator[None]:
    policy = load_supervision_policy(app[SETTINGS].staff_policy)
    pipeline = app.get(PIPELINE)

    async def audit(actor: Actor, action: str, target: str, result: str, detail: str) -> None:
        log_ = app[API].audit
        if log_ is not None:
            await log_.record(Principal(actor.token_id, actor.role, actor.name), action,
                              target, result, detail=detail)

    service = SupervisionService(
        ami=lambda: None if (b := app.get(BRIDGE)) is None else b.ami,
        model=lambda: None if pipeline is None else pipeline.builder.model,
        policy=lambda: policy,
        report=None if pipeline is None else pipeline.submit_service_step, audit=audit)
    app[SUPERVISION] = service
    app[AMI_CONSUMERS].append(service)  # after the call events: the model is current
    try:
        yield
    finally:
        await service.close()


async def _supervision_drain(app: web.Application) -> None:
    service = app.get(SUPERVISION)
    if service is not None:
        await service.close()


async def _queues(app: web.Application) -> AsyncIterator[None]:
    app[QUEUES] = QueueMonitor(catalog=lambda: _catalog(app))
    app[AMI_CONSUMERS].append(app[QUEUES])
    yield


async def _transfers(app: web.Application) -> AsyncIterator[None]:
    # an AMI consumer after the pipeline's (the call model is changed first); its actions
    # go through the bridge's AMI client, started after it
    pipeline = app[PIPELINE]
    definitions = app[DEFINITIONS]  # targets: the published definition's directory
    app[TRANSFERS] = service = TransferService(
        lambda: None if (b := app.get(BRIDGE)) is None else b.ami, pipeline.builder.model,
        Resolver(lambda: definitions.current.definition), pipeline.submit_service_step)
    app[AMI_CONSUMERS].append(service)
    try:
        yield
    finally:
        await service.close()


async def _threeway(app: web.Application) -> AsyncIterator[None]:
    # an AMI consumer after the pipeline's (the call model is changed first); its actions
    # go through the bridge's AMI client, started after it; its call events go into the
    # call's order through the pipeline's service steps
    pipeline = app[PIPELINE]
    definitions = app[DEFINITIONS]
    lookup = file_prompt_lookup(app[SETTINGS].prompts_dir)

    def emit(call_id: str, type_: str, data: Mapping[str, Any], routing: Mapping[str, str],
             uniqueid: str) -> None:
        pipeline.submit_service_step(ServiceStep(call_id, "threeway", type_, dict(data),
                                                 uniqueid, dict(routing)))

    def prompt(name: str, language: str) -> str | None:
        d = definitions.current.definition
        found = lookup(name, language, d.language_chain(language)[1:])
        return None if found is None else f"{found}/{name}"

    service = ThreeWayService(
        ami=lambda: None if (b := app.get(BRIDGE)) is None else b.ami,
        model=lambda: pipeline.builder.model, definition=lambda: definitions.current.definition,
        emit=emit, prompt_exists=prompt)
    app[THREEWAY] = service
    app[AMI_CONSUMERS].append(service)
    try:
        yield
    finally:
        await service.close()


async def _recording_hooks(app: web.Application) -> AsyncIterator[None]:
    # an AMI consumer after the pipeline's: at an agent's answer the call model knows the
    # call (entry, queue) the policy is asked about
    pipeline = app[PIPELINE]
    definitions = app[DEFINITIONS]
    hooks = RecordingHooks(
        ami=lambda: None if (b := app.get(BRIDGE)) is None else b.ami,
        model=lambda: pipeline.builder.model,
        policy=lambda: definitions.current.definition.recordings)
    app[RECORDING_HOOKS] = hooks
    app[AMI_CONSUMERS].append(hooks)
    try:
        yield
    finally:
        await hooks.close()


async def _agents(app: web.Application) -> AsyncIterator[None]:
    app[AGENTS] = AgentService(app[BRIDGE].ami, app[QUEUES].state, lambda: _catalog(app))
    yield


def _server_pipeline(settings: Settings, server: AsteriskServer) -> CallEventPipeline:
    """The call-event pipeline of one Asterisk server: its calls' ids qualified by its
    name when there are several; with failover a bridge starts as a standby (it loads
    the checkpoints when it takes the owner lease, ivr/failover)."""
    cfg = settings.events
    return CallEventPipeline(config=cfg, resume=not cfg.failover, server=server.name,
                             builder_config=BuilderConfig(server=server.name))


def _server_feed(settings: Settings, pipeline: CallEventPipeline) -> CallEventFeed:
    cfg = settings.events
    return (FailoverFeed(pipeline, consumer=cfg.consumer_name(), lease_ms=cfg.owner_lease_ms)
            if cfg.failover else CallEventFeed(pipeline))


async def _pipeline(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with _server_pipeline(settings, settings.servers[0]) as pipeline:
        app[PIPELINE] = pipeline
        yield


@dataclass(slots=True)
class ServerParts:
    """What the application runs for one more Asterisk server ([[asterisk]] after the
    first): its call-event pipeline and feed, an IVR runtime reporting to it (on the
    published definition) and its bridge (AMI client, FastAGI server on its agi_port)."""

    server: AsteriskServer
    pipeline: CallEventPipeline
    feed: CallEventFeed
    ivr: IvrRuntime
    bridge: Bridge


async def _more_servers(app: web.Application) -> AsyncIterator[None]:
    """One bridge per further Asterisk server, inside this application: each with its own
    AMI connection, owner lease (failover) and checkpoints; the outbox streams and the
    pusher are shared.  Queues, agents and the live figures are the first server's."""
    settings = app[SETTINGS]
    parts: dict[str, ServerParts] = {}
    app[SERVERS] = parts
    async with AsyncExitStack() as stack:
        for server in settings.servers[1:]:
            pipeline = await stack.enter_async_context(_server_pipeline(settings, server))
            feed = await stack.enter_async_context(_server_feed(settings, pipeline))
            runtime = IvrRuntime(app[DEFINITIONS], reporter=pipeline.on_ivr_step,
                                 tickets=app[OPTIONS].tickets,
                                 ticket_secret=settings.events.secret_bytes or None)
            stack.push_async_callback(runtime.close)
            bridge = Bridge(settings.for_server(server), ivr_handler=runtime.handle,
                            consumers=[feed], ami_settings=app[OPTIONS].ami)
            await stack.enter_async_context(bridge)
            parts[server.name] = ServerParts(server, pipeline, feed, runtime, bridge)
            log_event(log, logging.INFO, "app.server_started", server=server.name,
                      ami=f"{server.host}:{server.port}", agi_port=bridge.agi_port)
        yield


async def _stats(app: web.Application) -> AsyncIterator[None]:
    # one Linkedid tracker: the call-event builder keeps it, the figures read it (without
    # the pipeline the figures keep their own)
    pipeline = app.get(PIPELINE)
    app[STATS] = CallStats(calls=None if pipeline is None else pipeline.builder.calls,
                           internal_contexts=(BuilderConfig() if pipeline is None else
                                              pipeline.builder.config).internal_contexts)
    app[AMI_CONSUMERS].append(app[STATS])
    yield


async def _call_events(app: web.Application) -> AsyncIterator[None]:
    feed = _server_feed(app[SETTINGS], app[PIPELINE])
    async with feed:  # after the bridge: last stores awaited
        app[CALL_EVENTS] = feed
        app[AMI_CONSUMERS].append(feed)
        yield


async def _recordings(app: web.Application) -> AsyncIterator[None]:
    pipeline = app[PIPELINE]

    async def archived(events: list[CallEvent]) -> None:
        await pipeline.outbox.write(events)
        quality = app.get(QUALITY)
        if quality is not None:  # the archives of the calls quality review samples
            quality.on_call_events(events)
    definitions = app[DEFINITIONS]
    redis = redis_connect(app[SETTINGS].redis_url)
    worker = RecordingWorker(RecordingsConfig.from_settings(app[SETTINGS]), redis,
                             policy=lambda: definitions.current.definition.recordings,
                             emit=archived)
    pipeline.add_listener(worker.on_call_events)
    try:
        async with worker:
            app[RECORDINGS] = worker
            yield
    finally:
        await redis.aclose()


async def _callbacks(app: web.Application) -> AsyncIterator[None]:
    pipeline = app[PIPELINE]
    definitions = app[DEFINITIONS]
    redis = redis_connect(app[SETTINGS].redis_url)
    service = CallbackService(
        CallbacksConfig.from_settings(app[SETTINGS]), redis,
        ami=lambda: None if (b := app.get(BRIDGE)) is None else b.ami,
        emit=pipeline.outbox.write, definition=lambda: definitions.current.definition,
        greeting=lambda lang: definitions.current.prompts.resolve("callback-greeting", lang)[0],
        clock=app[OPTIONS].clock or time.time)
    pipeline.add_listener(service.on_call_events)
    app[AMI_CONSUMERS].append(service)
    try:
        async with service:
            app[CALLBACKS] = service
            yield
    finally:
        await redis.aclose()


async def _quality(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    policy = load_quality_policy(settings.staff_policy)
    pipeline = app[PIPELINE]
    redis = redis_connect(settings.redis_url)
    service = QualityService(QualityStore(redis, settings.events.stream_prefix),
                             lambda: policy, emit=pipeline.outbox.write,
                             recordings_dir=settings.recordings_dir)
    pipeline.add_listener(service.on_call_events)
    await service.start()
    app[QUALITY] = service
    try:
        yield
    finally:
        await service.close()
        await redis.aclose()


async def _pusher(app: web.Application) -> AsyncIterator[None]:
    async with Pusher(app[SETTINGS].events) as pusher:
        app[PUSHER] = pusher
        yield
        if app[OPTIONS].drain_s > 0:  # the AMI client has stopped: nothing new comes in
            await drain_outbox(app[PIPELINE], pusher, within_s=app[OPTIONS].drain_s)


async def _ivr(app: web.Application) -> AsyncIterator[None]:
    pipeline = app.get(PIPELINE)
    definitions = app[DEFINITIONS]
    secret = app[SETTINGS].events.secret_bytes or None
    if (secret is None and app[OPTIONS].tickets is None
            and definitions.current.definition.settings.ticket_api is not None):
        log_event(log, logging.WARNING, "app.ticket_lookup_unsigned",
                  detail="no [tickets] secret: the IVR's ticket-status lookups go unsigned "
                  "and a backend that checks signatures refuses them (callers hear "
                  "'status unavailable') / 未配置工单密钥，工单查询将不签名")
    # the definition's ticket-status lookups are signed with the [tickets] secret
    runtime = IvrRuntime(definitions, reporter=None if pipeline is None else pipeline.on_ivr_step,
                         tickets=app[OPTIONS].tickets, ticket_secret=secret)
    app[IVR] = runtime
    watch_s = app[OPTIONS].watch_s
    watcher = (None if watch_s is None else
               asyncio.create_task(definitions.watch(watch_s), name="dialplan-watch"))
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await runtime.close()


async def _bridge(app: web.Application) -> AsyncIterator[None]:
    consumers: AmiConsumers = app[AMI_CONSUMERS]
    settings = app[SETTINGS]
    bridge = Bridge(settings.for_server(settings.servers[0]), ivr_handler=app[IVR].handle,
                    consumers=consumers, ami_settings=app[OPTIONS].ami)
    async with bridge:  # FastAGI listening, AMI logged in, filter set, first resync done
        app[BRIDGE] = bridge
        yield


@asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[web.AppRunner]:
    """Start every part in order (and the HTTP site if ``[http] port`` is set); on exit,
    or if start-up fails part-way, stop in reverse order what had started."""
    settings = app[SETTINGS]
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
        if settings.http_port is not None:
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
        log_event(log, logging.INFO, "app.started", http=[str(a) for a in runner.addresses])
        yield runner
    finally:
        log_event(log, logging.INFO, "app.stopping")
        await runner.cleanup()
        log_event(log, logging.INFO, "app.stopped")


async def drain_outbox(pipeline: CallEventPipeline, pusher: Pusher, within_s: float) -> None:
    """Until every call event written to the outbox has been delivered (or dead-lettered),
    at most ``within_s`` seconds."""
    await pipeline.flush()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status = await pipeline.status()
        if status.undelivered == 0 and status.pending == 0:
            return
        try:
            async with asyncio.timeout(1.0):
                await pusher.wait_idle()
        except TimeoutError:
            pass
