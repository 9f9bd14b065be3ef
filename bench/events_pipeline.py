"""Benchmark: AMI events → bridge → Redis outbox → pusher → ticket sink.

Two sources of AMI events (``--source``):

``emulator`` (default): the Asterisk emulator (``ivr.sim``) in its own process generates
PSTN calls at ``--rate`` new calls/s for ``--seconds``, each caller talking ``--talk`` s
± 20 %, CEL and CDR on.  ``--scenario`` (the calls of ``bench/sim_load.py``):

* ``hotline`` (default): the product's real 12345 call.  The emulator's etc is prepared
  as ``ivr demo`` does and the dialplan published into it over AMI (``ivr.demo``), then
  the load changes of ``sim_load.py`` (queue members, ``MixMonitor(b)``): Answer, the
  greeting by Read, ONE FastAGI session to the *bridge's* FastAGI server, Playback,
  Queue answered by a Local member, recording.  The bridge runs the real IVR runtime as
  ``ivr serve`` wires it (the published definition of that asterisk-conf dir, IVR steps
  into the call-event pipeline, ticket lookups to the sink).
* ``basic``: the pure-dialplan call (Answer, Read a menu digit, Set language, Playback,
  Queue with auto-answering Local agents; no FastAGI).

The *bridge* process is :class:`ivr.bridge.Bridge` — the real
:class:`ivr.ami.client.AMIClient` logged in over TCP (MD5 challenge) as against
Asterisk, its AMI event filter, every event → ``CallStats`` and
``CallEventPipeline.submit_ami_event``, and its FastAGI server.

``trace``: a *generator* process replays the trace-02 call (the 38 AMI events the
builder consumes, i.e. what an AMI eventfilter passes) as N synthetic calls at
``--rate``, each call's events spread over ``--call-seconds``; the bridge parses them
with the AMI codec and feeds ``CallEventPipeline``.

``--agents`` (emulator): the bridge also runs the queue and agent slice as ``ivr serve``
does (``QueueMonitor`` as an AMI consumer, its events pass the filter; a ``QueueStatus``
resync) and a break rota (``ivr.agents.rota.PauseRota`` through ``AgentService`` over the
bridge's AMI): ``--pauses-per-s`` agents sent on a break per second, each back after
``--break-s``, while calls arrive.  ``--compare-agents`` runs the same load twice in one
run, slice off then on, and prints a last line with both figures and the ratio of the
bridge's CPU per call.

Issue 13 (emulator): ``--pushers N`` runs N ``ivr events push`` processes (they share the
partitions, each its fair share; the run starts once they do); ``--bridges 2`` runs an
owner and a hot standby on the same AMI (``[events] failover``; the dialplan's FastAGI
names the owner) and reports each one's CPU per call; every run samples the outbox's
Redis memory every 2 s (``MEMORY USAGE … SAMPLES 0``: checkpoint bytes per call in
progress at the peak, the levels stream); ``--late-pushers`` starts the pushers only
after the calls ended, so the whole run's events wait in the outbox (as in a ticket
backend outage) and its bytes per event are measured.

Both: ``ivr events push`` and ``ivr ticket-sink`` run as their own processes; Redis is
a private redis-server (AOF, appendfsync always).  Latency = time the AMI event that
produced a call event was emitted (emulator, ``timestampevents``) or handled (trace) →
time the pusher got the sink's 200 for it.  Usage:

    .venv/bin/python bench/events_pipeline.py                  # hotline: 150/s, 36 s, talk 4
    .venv/bin/python bench/events_pipeline.py --scenario basic  # 150/s, 28 s, talk 18
    .venv/bin/python bench/events_pipeline.py --source trace --rate 150 --seconds 30 \
        --call-seconds 20
    .venv/bin/python bench/events_pipeline.py --compare-agents --talk 12  # national peak:
        # 150/s, ~3,000 up, 5 breaks/s; queue and agent slice off vs on, one run
    .venv/bin/python bench/events_pipeline.py --rate 10 --seconds 30 --pushers 2 \
        --bridges 2   # 2 pushers, owner + hot standby; --late-pushers: outbox bytes/event
    .venv/bin/python bench/events_pipeline.py --scale   # bench/events_scale.py: sustained
        # calls/s at p99 <= 200 ms with 1, 2, 4 pushers; two bridges (failover) vs one
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.ami.codec import AMIParser, encode_message  # noqa: E402
from ivr.ami.messages import Event  # noqa: E402
from ivr.events.config import EventsConfig  # noqa: E402
from ivr.events.outbox import keys_for, read_status  # noqa: E402
from ivr.events.pipeline import CallEventPipeline  # noqa: E402
from ivr.redisproc import RedisServer  # noqa: E402
from ivr.sim.synth_calls import load_call_template, synth_call  # noqa: E402

TRACES = Path(os.environ.get("IVR_TRACES") or ROOT / "tests" / "data" / "asterisk-traces")
TRACE = TRACES / "02-ivr-queue-record-threeway"
SECRET = "bench-secret"
MARK = 500  # emulator mode: every 500th AMI event is timed from emission to the bridge
ME = str(Path(__file__).resolve())
# hotline, before talk: an upper bound since the shorter 12345 path (recording notice
# 7.6 s + AGI + please-hold 5.1 s only when nobody is ready); it was 18.5 s + 5.1 s
IVR_S = 26.0
BENCH_REASONS = {"lunch": "午休 lunch", "training": "培训 training", "acw": "小结 after-call work"}


def longest_call(args: argparse.Namespace) -> float:
    """An upper bound of one call's length in the emulator (talk is ± 20 %)."""
    return float(args.talk) * 1.2 + (IVR_S if args.scenario == "hotline" else 3.0)


def quantiles_ms(xs: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in ms of a sorted list (empty dict when empty)."""
    if not xs:
        return {}
    return {k: round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1)
            for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))}


# -- generator: plays synthetic calls as AMI bytes --------------------------------------

async def generator(args: argparse.Namespace) -> None:
    template = load_call_template(Path(args.trace) / "ami.server.raw")
    k_events = len(template)
    offsets = [i * args.call_seconds / (k_events - 1) for i in range(k_events)]
    total_calls = int(args.rate * args.seconds)
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        frames: dict[int, list[bytes]] = {}
        nxt = [0] * k_events  # next call whose event k is due
        t0 = time.monotonic()
        while nxt[-1] < total_calls:
            now = time.monotonic() - t0
            out: list[bytes] = []
            for k in range(k_events):
                while nxt[k] < total_calls and nxt[k] / args.rate + offsets[k] <= now:
                    n = nxt[k]
                    call = frames.get(n)
                    if call is None:
                        call = frames[n] = [encode_message(e) for e in synth_call(template, n)]
                    out.append(call[k])
                    if k == k_events - 1:
                        del frames[n]
                    nxt[k] += 1
            if out:
                writer.write(b"".join(out))
                await writer.drain()
            await asyncio.sleep(0.005)
        writer.close()
        await writer.wait_closed()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"cpu": ru.ru_utime + ru.ru_stime}), flush=True)
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    await done.wait()
    server.close()


# -- bridge: AMI parser + CallEventPipeline ----------------------------------------------

async def bridge(args: argparse.Namespace) -> None:
    cfg = EventsConfig(redis_url=args.redis_url, stream_prefix=args.prefix,
                       partitions=args.partitions)
    reader, _writer = await asyncio.open_connection("127.0.0.1", args.port)
    parser = AMIParser()
    ami = 0
    max_open = 0
    write_lat: list[float] = []
    t0 = time.monotonic()

    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        elif info.get("generation") == 2:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    import gc

    gc.callbacks.append(on_gc)
    lags: list[float] = []

    async def watch_loop() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    watcher = asyncio.create_task(watch_loop())

    def record(start: float) -> Any:
        return lambda _f: write_lat.append(time.perf_counter() - start)

    async with CallEventPipeline(args.redis_url, cfg) as pipe:
        while data := await reader.read(65536):
            for item in parser.feed(data):
                if isinstance(item, Event):
                    ami += 1
                    fut = pipe.submit_ami_event(item)
                    if fut is not None and ami % 10 == 0:
                        fut.add_done_callback(record(time.perf_counter()))
            max_open = max(max_open, pipe.builder.open_calls)
            if pipe.outbox.backlog > 20_000:
                await pipe.flush()
        await pipe.flush()
        wall = time.monotonic() - t0
        built = pipe.events_built
    ru = resource.getrusage(resource.RUSAGE_SELF)
    write_lat.sort()
    wl = {q: round(write_lat[min(len(write_lat) - 1, int(q * len(write_lat)))] * 1000, 1)
          for q in (0.5, 0.99)} if write_lat else {}
    watcher.cancel()
    lags.sort()
    print(json.dumps({"write_latency_ms": wl,
                      "loop_lag_ms": {"p99": round(lags[int(0.99 * len(lags))] * 1000, 1),
                                      "max": round(lags[-1] * 1000, 1)} if lags else {},
                      "gc2_pauses_ms": [round(x * 1000) for x in gc_pauses],
                      "ami_events": ami, "call_events": built, "wall": wall,
                      "cpu": ru.ru_utime + ru.ru_stime, "max_open_calls": max_open}),
          flush=True)


# -- emulator mode: the emulator process ------------------------------------------------

async def emulator(args: argparse.Namespace) -> None:
    """The emulator generating calls; JSON progress lines on stdout, commands on stdin
    (``go``: start generating; ``quit``: close)."""
    import random

    from bench.sim_load import HOTLINE_ENTRY, hotline_load_conf, make_basic_etc
    from ivr.config import Settings
    from ivr.demo import _prepare_etc, _publish
    from ivr.sim import CallerScript, Emulator, EmulatorConfig
    from ivr.sim.cli import tune_gc

    loop = asyncio.get_running_loop()
    hotline = args.scenario == "hotline"
    workdir = Path(args.workdir)
    agents = int(args.rate * (args.talk * 1.3 + 3)) + 200
    # hotline: the emulator's etc as `ivr demo` prepares it (its manager.conf, the site
    # contexts, empty generated files), then the dialplan published into it over AMI
    # exactly as an admin does (versions/ holds the published definition the bridge's
    # IVR runtime loads, as `ivr serve` does from its asterisk-conf dir)
    etc = _prepare_etc(workdir) if hotline else make_basic_etc(workdir / "etc", agents)
    # timestampevents = yes (as a real deployment should set it): every AMI event
    # carries its emission time, which the builder takes as its call events' time,
    # so the pusher's latency runs from the emulator emitting the AMI event to the
    # sink's acknowledgement, socket and bridge queueing included
    conf = etc / "manager.conf"
    conf.write_text(conf.read_text().replace("[general]\n",
                                             "[general]\ntimestampevents = yes\n", 1))
    emu = Emulator(EmulatorConfig(
        etc=etc, ami_port=0, seed=1, cel=not args.no_cel,
        # hotline: every call's AGI() goes to the bridge's FastAGI server
        agi_host="127.0.0.1" if hotline else None, agi_port=args.agi_port or None,
        prompts=ROOT / "prompts", record_dir=workdir / "rec" if hotline else None))
    await emu.start()
    agi_lat: list[float] = []
    if hotline:
        await _publish(Settings(), etc, emu.ami_port, lambda _line: None)
        # the load changes of bench/sim_load.py on the published files: enough queue
        # members, MixMonitor(b) after Answer(); the published definition is untouched
        hotline_load_conf(etc, etc, agents)
        if not emu.reload(""):
            raise RuntimeError(f"the emulator refused the load configuration in {etc}")
        # measurement seam: the AGI() application's duration as the caller's channel
        # sees it (connect, agi_* block, every command and reply, close)
        agi = emu.pbx.apps["agi"]

        async def timed_agi(pbx: Any, ch: Any, data: str) -> None:
            t = time.perf_counter()
            try:
                await agi(pbx, ch, data)
            finally:
                agi_lat.append(time.perf_counter() - t)

        emu.pbx.apps["agi"] = timed_agi
    tune_gc()  # as `ivr sim` runs it
    print(json.dumps({"port": emu.ami_port}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "go": the bridge is in
    talk = args.talk

    def script(rng: random.Random, i: int) -> CallerScript:
        t = talk * rng.uniform(0.8, 1.2)
        if hotline:  # zh caller, no key during the greeting, hangs up after talking
            return CallerScript(number=f"138{i:08d}", exten=HOTLINE_ENTRY,
                                context="from-pstn", language="zh", menu_digits=[""],
                                talk_time=t, patience=None)
        return CallerScript(number=f"138{i:08d}", exten="6100", context="load-in",
                            menu_digits=[rng.choice("12")], talk_time=t, patience=None)

    count = int(args.rate * args.seconds)
    events0 = emu.bus.count
    # the bridge's AMI session (logged in before "go"); measurement seam: count what
    # is sent to it, after its event filter, and time every MARK-th such event from
    # emission (the bridge notes when it handles the same n-th event: one AMI
    # session, TCP keeps the order)
    # (--bridges 2: two sessions, the owner's first; the failover marks, UserEvent
    # IvrMark, are counted by neither side: they flow before "go" too)
    logged_in = [s for s in emu.ami.sessions if s.user is not None]
    if len(logged_in) != args.bridges:
        raise RuntimeError(f"expected {args.bridges} bridge AMI session(s), "
                           f"got {len(logged_in)}")
    marks: list[tuple[int, float]] = []
    counts = [0] * len(logged_in)
    sent = counts  # sent[0]: the owner's session, which the delivery marks time

    def counter(i: int, session: Any) -> None:
        send = session.send

        def counting_send(data: bytes) -> None:
            dropped = session.filtered
            send(data)
            # events only: the replies to the bridge's own actions (--agents) are not
            if (session.filtered == dropped and data.startswith(b"Event: ")
                    and not data.startswith(b"Event: UserEvent\r\n")):
                counts[i] += 1
                if i == 0 and counts[0] % MARK == 0:
                    marks.append((counts[0], time.time()))

        session.send = counting_send

    for i, session in enumerate(logged_in):
        counter(i, session)
    lags: list[float] = []

    async def watch_loop() -> None:  # the emulator's own event-loop lag
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    watcher = asyncio.create_task(watch_loop())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru.ru_utime + ru.ru_stime  # after start-up (and the hotline's publish)
    t0 = time.monotonic()
    gen_s: list[float] = []
    gen = asyncio.ensure_future(emu.generate(count, args.rate, script))
    gen.add_done_callback(lambda _f: gen_s.append(time.monotonic() - t0))
    peak = 0
    deadline = t0 + args.seconds + longest_call(args) + 15
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)  # progress sampling: nothing to await
        summ = emu.summary()
        peak = max(peak, summ.active)
        print(json.dumps({"t": round(time.monotonic() - t0, 2), "placed": summ.placed,
                          "calls_up": summ.active, "events": sent[0]}),
              flush=True)
        if gen_s and summ.active == 0:
            break
    gen.cancel()
    watcher.cancel()
    lags.sort()
    summ = emu.summary()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    agi_lat.sort()
    print(json.dumps({"final": True, "placed": summ.placed, "active": summ.active,
                      "answered": summ.answered, "peak_calls_up": peak,
                      "completed": summ.completed, "agi_failures": summ.agi_failures,
                      "agi_apps": len(agi_lat), "agi_app_ms": quantiles_ms(agi_lat),
                      "events": sent[0], "events_per_session": counts,
                      "emitted": emu.bus.count - events0,
                      "generator_s": gen_s[0] if gen_s else None,
                      "elapsed": time.monotonic() - t0,
                      "cpu": ru.ru_utime + ru.ru_stime - cpu0, "marks": marks,
                      "loop_lag_ms": {"p99": round(lags[int(0.99 * len(lags))] * 1000, 1),
                                      "max": round(lags[-1] * 1000, 1)} if lags else {}}),
          flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "quit": the bridge is done
    await emu.close()


# -- emulator mode: the bridge process (ivr.bridge.Bridge) -----------------------------

async def sim_bridge(args: argparse.Namespace) -> None:
    """``ivr.bridge.Bridge`` (AMIClient → consumers CallStats + CallEventFeed) against the
    emulator; for the hotline scenario its FastAGI server runs the IVR runtime as
    ``ivr serve`` wires it.  Prints ``{"ready"}``, then a progress line per second; on
    ``stop N`` (N = events the emulator emitted) it waits (bounded) until it has handled
    N events, flushes the outbox and prints its totals."""
    from contextlib import AsyncExitStack

    from ivr.agi.channel import AGIChannel
    from ivr.bridge import Bridge
    from ivr.callstats import CallStats
    from ivr.config import Settings
    from ivr.dialplan.publish import Store
    from ivr.events.feed import CallEventFeed
    from ivr.flow.runtime import DefinitionStore, IvrRuntime
    from ivr.flow.ticket_lookup import HttpTicketLookup
    from ivr.metrics import METRICS

    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    loop = asyncio.get_running_loop()
    cfg = EventsConfig(redis_url=args.redis_url, stream_prefix=args.prefix,
                       partitions=args.partitions)
    hotline = args.scenario == "hotline"
    settings = Settings(ami_port=args.port, ami_secret="ivrsecret", agi_host="127.0.0.1",
                        agi_port=args.agi_port, redis_url=args.redis_url,
                        ami_event_filter=not args.no_filter)
    if args.conf_dir:
        settings = dataclasses.replace(settings, asterisk_conf_dir=Path(args.conf_dir))
    agi_lat: list[float] = []  # the IVR handler's time per FastAGI session

    async def no_ivr(channel: AGIChannel) -> None:  # pure-dialplan calls: never used
        raise RuntimeError("this benchmark's dialplan has no FastAGI")

    lags: list[float] = []

    async def watch_loop() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    write_lat: list[float] = []

    def record(start: float) -> Any:
        return lambda _f: write_lat.append(time.perf_counter() - start)

    # --failover: a bridge of a pair serving one Asterisk ([events] failover): a standby
    # loads the checkpoints only when it takes the owner lease (as ivr/app.py wires it)
    async with CallEventPipeline(args.redis_url, cfg, resume=not args.failover) as pipe:
        # measurement seam (this process only): time from the bridge handing an AMI event
        # to the pipeline until the call events it produced are in Redis, 1 in 10 events
        submit = pipe.submit_ami_event
        seen = [0]
        received = [0]  # AMI events the bridge's client received since "ready"
        marks: list[tuple[int, float]] = []

        first = asyncio.Event()

        def mark_received(event: Any) -> None:  # every MARK-th event received: its time
            if event.name == "UserEvent":  # the failover marks: not counted (see emulator)
                return
            received[0] += 1
            first.set()
            if received[0] % MARK == 0:
                marks.append((received[0], time.time()))

        def timed_submit(event: Any, *more: Any) -> asyncio.Future[None] | None:
            t = time.perf_counter()
            fut = submit(event, *more)
            if fut is not None:
                seen[0] += 1
                if seen[0] % 10 == 0:
                    fut.add_done_callback(record(t))
            return fut

        pipe.submit_ami_event = timed_submit  # type: ignore[method-assign]
        stack = AsyncExitStack()
        handler = no_ivr
        if hotline:
            # as ivr/serve.py: the runtime runs the *published* definition of the
            # asterisk-conf dir (here the emulator's etc), prompts from the prompts dir,
            # IVR steps into the call-event pipeline, the definition watched for
            # publishes; the ticket lookup goes to the sink (the definition's
            # ticket_api.url names the backend; its timeout is kept)
            published = Store.at(settings.asterisk_conf_dir).current_definition_dir()
            if published is None:
                raise RuntimeError(f"no published dialplan in {settings.asterisk_conf_dir}")
            store = DefinitionStore(published, prompts_dir=settings.prompts_dir)
            store.load()
            api = store.current.definition.settings.ticket_api
            tickets = HttpTicketLookup(args.tickets_url, api.timeout if api else 2.0,
                                       secret=SECRET.encode())  # signed, as ivr serve does
            stack.push_async_callback(tickets.close)
            runtime = IvrRuntime(store, reporter=pipe.on_ivr_step, tickets=tickets)
            stack.push_async_callback(runtime.close)
            watch = asyncio.create_task(store.watch(2.0), name="dialplan-watch")
            stack.callback(watch.cancel)

            async def timed_ivr(channel: AGIChannel) -> None:
                t = time.perf_counter()
                try:
                    await runtime.handle(channel)
                finally:
                    agi_lat.append(time.perf_counter() - t)

            handler = timed_ivr
        # as ivr/app.py composes them: the figures on the builder's tracker, then the
        # pipeline, as the bridge's AMI consumers; --agents: the queue and agent slice
        # too (QueueMonitor after the call events, as app.py orders it) and a break rota
        # pausing and resuming agents through the AgentService over the bridge's AMI
        stats = CallStats(calls=pipe.builder.calls)
        feed: Any = CallEventFeed(pipe)
        if args.failover:
            from ivr.failover.service import FailoverFeed

            feed = FailoverFeed(pipe, consumer=args.consumer, lease_ms=args.owner_lease_ms)
        consumers: list[Any] = [stats, feed]
        monitor = None
        if args.agents:
            from ivr.agents.catalog import AgentCatalog
            from ivr.agents.monitor import QueueMonitor

            catalog = (AgentCatalog.from_definition(store.current.definition) if hotline
                       else AgentCatalog(BENCH_REASONS))
            monitor = QueueMonitor(catalog=lambda: catalog)
            consumers.append(monitor)
        async with stack, feed, Bridge(settings, ivr_handler=handler,
                                       consumers=consumers) as br:
            rota = None
            if monitor is not None:
                from ivr.agents.rota import PauseRota
                from ivr.agents.service import AgentService

                async with asyncio.timeout(30):
                    await monitor.wait_for(lambda s: s.ready)
                rota = PauseRota(AgentService(br.ami, monitor.state, lambda: catalog),
                                 "hotline" if hotline else "load", sleep=asyncio.sleep,
                                 clock=time.time, every_s=1.0 / args.pauses_per_s,
                                 break_s=args.break_s)
            role = None
            if args.failover:
                # the first bridge of the pair takes the owner lease, the second waits as
                # a hot standby until its tape covers the owner's stored position
                async with asyncio.timeout(30):  # the feed's role has no event to await
                    while not (feed.role == "owner" or (feed.role == "standby"  # noqa: ASYNC110
                                                        and feed.ready)):
                        await asyncio.sleep(0.05)
                role = feed.role
            ami0, cpu0 = pipe.ami_events, cpu()
            br.ami.on_event("*", mark_received)
            print(json.dumps({"ready": True, "role": role}), flush=True)
            rota_task = None
            if rota is not None:
                async def breaks(r: Any) -> None:
                    # from the first call (the emulator counts what it sends from "go")
                    # while calls arrive; then everyone on a break is resumed
                    await first.wait()
                    try:
                        async with asyncio.timeout(args.seconds):
                            await r.run()
                    except TimeoutError:
                        pass
                    await r.finish()

                rota_task = asyncio.create_task(breaks(rota), name="rota")
            watcher = asyncio.create_task(watch_loop())
            if args.profile:
                prof.enable()
            t0 = time.monotonic()
            stop = loop.run_in_executor(None, sys.stdin.readline)
            max_open = 0
            while not stop.done():
                await asyncio.wait([stop], timeout=1.0)
                max_open = max(max_open, pipe.builder.open_calls)
                print(json.dumps({"t": round(time.monotonic() - t0, 2),
                                  "ami": received[0],
                                  "built": pipe.events_built,
                                  "open": pipe.builder.open_calls,
                                  "cpu": round(cpu() - cpu0, 2)}), flush=True)
            want = int((await stop).split()[1])
            if rota_task is not None:
                rota_task.cancel()
            for _ in range(400):  # bounded (20 s): the AMI socket is read by the client
                if received[0] >= want:
                    break
                await asyncio.sleep(0.05)
            handled_at = time.monotonic() - t0
            await pipe.flush()
            if args.profile:
                prof.disable()
                prof.dump_stats(args.profile)
            watcher.cancel()
            summary = stats.summary()
            total: dict[str, Any] = {
                     "ami_events": received[0],
                     "role": None if not args.failover else feed.role,
                     "takeovers": None if not args.failover else feed.takeovers,
                     "pipeline_ami_events": pipe.ami_events - ami0,
                     "call_events": pipe.events_built,
                     "errors": pipe.errors, "wall": handled_at, "cpu": cpu() - cpu0,
                     "max_open_calls": max_open, "marks": marks, "stats_calls": summary.calls,
                     "stats_answered": summary.answered, "stats_ended": summary.ended,
                     "agi_sessions": len(agi_lat),
                     "agents": None if monitor is None or rota is None else {
                         "pauses": sum(1 for c in rota.changes if c.paused),
                         "resumes": sum(1 for c in rota.changes if not c.paused),
                         "refused": rota.refused,
                         "members": sum(len(q.members)
                                        for q in monitor.state.queues.values()),
                         "paused_now": sum(1 for m in monitor.state.members() if m.paused),
                         "resyncs": monitor.state.resyncs},
                     "metrics": {k: v for k, v in sorted(METRICS.snapshot().items())
                                 if k.startswith(("agi.", "ivr.", "events.", "bridge."))}}
    lags.sort()
    write_lat.sort()
    total["to_redis_ms"] = ({q: round(write_lat[min(len(write_lat) - 1,
                                                   int(q * len(write_lat)))] * 1000, 1)
                             for q in (0.5, 0.99, 1.0)} if write_lat else {})
    agi_lat.sort()
    total["agi_handler_ms"] = quantiles_ms(agi_lat)
    total["loop_lag_ms"] = ({"p99": round(lags[int(0.99 * len(lags))] * 1000, 1),
                             "max": round(lags[-1] * 1000, 1)} if lags else {})
    print(json.dumps(total), flush=True)


# -- orchestrator ------------------------------------------------------------------------

def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def spawn(*args: str, env: dict[str, str] | None = None,
                stdin: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin else None)


async def first_line(proc: asyncio.subprocess.Process, wait: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), wait)
    if not line:
        raise RuntimeError(f"benchmark child {proc.pid} exited (see its stderr above)")
    out: dict[str, Any] = json.loads(line)
    return out


async def start_sink_and_pusher(
    args: argparse.Namespace, redis: RedisServer, tmp: Path,
    procs: list[asyncio.subprocess.Process], pushers: bool = True,
) -> tuple[dict[str, str], str, list[Path], str]:
    """The ticket sink and ``--pushers`` ``ivr events push`` processes (appended to
    ``procs``: the sink, then the pushers; ``pushers=False``: none yet, see
    :func:`start_pushers`); returns the environment for the other children, the stream
    prefix, the files the pushers write their statistics to and the sink's base URL."""
    py = sys.executable
    env = dict(os.environ, IVR_TICKET_SECRET=SECRET, PYTHONPATH=str(ROOT))
    sink = await spawn(py, "-m", "ivr", "ticket-sink", "--port", "0",
                       *(["--no-validate"] if args.no_validate else []), env=env)
    procs.append(sink)
    urls = await first_line(sink)
    args.sink_events_url = urls["events_url"]
    prefix = "bench"
    stats_files = [tmp / f"pusher{i}.json" for i in range(1, args.pushers + 1)]
    if pushers:
        await start_pushers(args, redis, env, prefix, stats_files, procs)
    return env, prefix, stats_files, str(urls["url"])


async def start_pushers(args: argparse.Namespace, redis: RedisServer, env: dict[str, str],
                        prefix: str, stats_files: list[Path],
                        procs: list[asyncio.subprocess.Process]) -> dict[str, int]:
    """One ``ivr events push`` process per stats file (consumers bench1…benchN); waits
    (bounded) until they share the partitions (each its fair share, as the pushers'
    census hands them round) and returns the partitions each holds."""
    py = sys.executable
    penv = dict(env, IVR_REDIS_URL=redis.url, IVR_TICKET_URL=args.sink_events_url,
                IVR_EVENTS_PREFIX=prefix, IVR_EVENTS_PARTITIONS=str(args.partitions),
                IVR_EVENTS_CONCURRENCY=str(args.concurrency),
                IVR_EVENTS_BATCH_MAX=str(args.batch_max))
    started = []
    for i, stats_file in enumerate(stats_files, 1):
        pusher = await spawn(py, "-m", "ivr", "events", "push", "--consumer", f"bench{i}",
                             "--stats-file", str(stats_file), env=penv)
        procs.append(pusher)
        started.append(pusher)
    for pusher in started:
        await first_line(pusher)
    import redis.asyncio as aioredis

    keys = keys_for(EventsConfig(stream_prefix=prefix, partitions=args.partitions))
    r = aioredis.from_url(redis.url)
    fair = args.partitions // len(stats_files)
    held: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            vals = [await r.get(keys.lease(p)) for p in range(args.partitions)]
            held = Counter((v or b"-/").decode().split("/")[0] for v in vals)
            if all(held.get(f"bench{i}", 0) >= fair for i in range(1, len(stats_files) + 1)):
                break
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()
    return dict(sorted(held.items()))


async def stop_pusher(
    pushers: list[asyncio.subprocess.Process], sink: asyncio.subprocess.Process,
    redis: RedisServer, stats_files: list[Path],
) -> tuple[float, float, float, dict[str, Any]]:
    """CPU seconds of the pushers (together), sink and redis-server, then stop the
    pushers and read the statistics each writes on exit (latencies merged)."""
    pusher_cpu = sum(cpu_of(p.pid) for p in pushers)
    sink_cpu = cpu_of(sink.pid)
    redis_cpu = cpu_of(redis.proc.pid) if redis.proc else 0.0
    for pusher in pushers:
        pusher.send_signal(signal.SIGTERM)
    pstats: dict[str, Any] = {"latencies": [], "delivered": []}
    for pusher, stats_file in zip(pushers, stats_files, strict=True):
        await pusher.wait()
        one = json.loads(await asyncio.to_thread(stats_file.read_text))
        pstats["latencies"].extend(one["latencies"])
        pstats["delivered"].append(one.get("delivered"))
    return pusher_cpu, sink_cpu, redis_cpu, pstats


async def stop_all(procs: list[asyncio.subprocess.Process], redis: RedisServer) -> None:
    """Every child still running gets SIGTERM, then SIGKILL after 10 s; Redis stops."""
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                p.kill()
                await p.wait()
    await asyncio.to_thread(redis.stop)


async def orchestrate(args: argparse.Namespace) -> int:
    py = sys.executable
    me = ME
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", persist=not args.no_fsync)
        await asyncio.to_thread(redis.start)
        procs: list[asyncio.subprocess.Process] = []
        try:
            env, prefix, stats_files, _ = await start_sink_and_pusher(
                args, redis, Path(tmp), procs)
            sink, *pushers = procs
            gen = await spawn(py, me, "--role", "generator", "--rate", str(args.rate),
                              "--seconds", str(args.seconds), "--call-seconds",
                              str(args.call_seconds), "--trace", args.trace, env=env)
            procs.append(gen)
            port = (await first_line(gen))["port"]
            br = await spawn(py, me, "--role", "bridge", "--port", str(port), "--redis-url",
                             redis.url, "--prefix", prefix, "--partitions",
                             str(args.partitions), env=env)
            procs.append(br)
            t0 = time.monotonic()
            bstats = await first_line(br, args.seconds + args.call_seconds + 120)
            await br.wait()
            gstats = await first_line(gen)
            await gen.wait()
            # drain: bounded polling of the outbox counters (the pusher is another process)
            cfg = EventsConfig(redis_url=redis.url, stream_prefix=prefix,
                               partitions=args.partitions)
            import redis.asyncio as aioredis

            r = aioredis.from_url(redis.url)
            deadline = time.monotonic() + 60
            while True:
                st = await read_status(r, keys_for(cfg))
                if st.delivered + st.dead_letters >= st.written or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            drain = time.monotonic() - t0 - bstats["wall"]
            await r.aclose()
            pusher_cpu, sink_cpu, redis_cpu, pstats = await stop_pusher(
                pushers, sink, redis, stats_files)
        finally:
            await stop_all(procs, redis)
    lat = sorted(pstats["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    calls = int(args.rate * args.seconds)
    result = {
        "source": "trace",
        "rate_target": args.rate, "calls": calls, "call_seconds": args.call_seconds,
        "max_open_calls": bstats["max_open_calls"],
        "bridge_wall_s": round(bstats["wall"], 2),
        # calls arrive for --seconds, the last one lasts --call-seconds more
        "calls_per_s": round(calls / max(0.001, bstats["wall"] - args.call_seconds), 1),
        "ami_events_per_s": round(bstats["ami_events"] / bstats["wall"], 1),
        "call_events": bstats["call_events"],
        "call_events_per_s": round(bstats["call_events"] / bstats["wall"], 1),
        "written": st.written, "delivered": st.delivered, "dead_letters": st.dead_letters,
        "events_lost": st.events_lost, "drain_after_last_ami_s": round(drain, 2),
        "bridge_to_redis_ms": bstats["write_latency_ms"],
        "bridge_loop_lag_ms": bstats["loop_lag_ms"],
        "bridge_gc2_pauses_ms": bstats["gc2_pauses_ms"],
        "latency_ms": {"p50": round(pct(0.50), 1), "p90": round(pct(0.90), 1),
                       "p99": round(pct(0.99), 1), "max": round(pct(1.0), 1)},
        "cpu_ms_per_call": {
            "bridge": round(bstats["cpu"] / calls * 1000, 2),
            "generator": round(gstats["cpu"] / calls * 1000, 2),
            "pusher": round(pusher_cpu / calls * 1000, 2),
            "sink": round(sink_cpu / calls * 1000, 2),
            "redis": round(redis_cpu / calls * 1000, 2)},
        "redis_fsync": not args.no_fsync, "sink_validates": not args.no_validate,
        "partitions": args.partitions, "batch_max": args.batch_max,
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    return 0 if st.events_lost == 0 and st.delivered == st.written else 1


async def drain(redis_url: str, prefix: str, partitions: int, limit: float) -> Any:
    """Bounded polling of the outbox counters until everything written is delivered (the
    pusher is another process: nothing to await)."""
    import redis.asyncio as aioredis

    cfg = EventsConfig(redis_url=redis_url, stream_prefix=prefix, partitions=partitions)
    r = aioredis.from_url(redis_url)
    deadline = time.monotonic() + limit
    try:
        while True:
            st = await read_status(r, keys_for(cfg))
            if st.delivered + st.dead_letters >= st.written or time.monotonic() > deadline:
                return st
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()


async def lease_holders(redis_url: str, prefix: str, partitions: int) -> dict[str, int]:
    """How many partitions each pusher holds the lease of now."""
    import redis.asyncio as aioredis

    keys = keys_for(EventsConfig(stream_prefix=prefix, partitions=partitions))
    r = aioredis.from_url(redis_url)
    try:
        vals = [await r.get(keys.lease(p)) for p in range(partitions)]
        return dict(sorted(Counter((v or b"-/").decode().split("/")[0]
                                   for v in vals).items()))
    finally:
        await r.aclose()


async def outbox_memory(redis_url: str, prefix: str, partitions: int) -> dict[str, Any]:
    """Redis memory of the outbox now: the checkpoints of calls in progress (one hash,
    a field per call), the partition streams (entries not yet delivered), the levels
    stream (kept 35 days, never deleted by delivery); ``MEMORY USAGE … SAMPLES 0`` counts
    every field and entry."""
    import redis.asyncio as aioredis

    keys = keys_for(EventsConfig(stream_prefix=prefix, partitions=partitions))
    r = aioredis.from_url(redis_url)
    try:
        async def usage(key: str) -> int:
            return int(await r.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)

        streams = keys.streams
        info = await r.info("memory")
        return {
            "calls_in_progress": int(await r.hlen(keys.calls)),
            "checkpoints_bytes": await usage(keys.calls),
            "outbox_entries": sum([int(await r.xlen(k)) for k in streams]),
            "outbox_bytes": sum([await usage(k) for k in streams]),
            "levels_entries": int(await r.xlen(keys.levels)),
            "levels_bytes": await usage(keys.levels),
            "used_memory": int(info["used_memory"]),
            "used_memory_dataset": int(info.get("used_memory_dataset", 0)),
        }
    finally:
        await r.aclose()


async def sample_memory(redis_url: str, prefix: str, partitions: int,
                        out: list[dict[str, Any]]) -> None:
    """Every 2 s until cancelled: :func:`outbox_memory` appended to ``out``."""
    while True:
        await asyncio.sleep(2.0)  # sampling period: nothing to await
        out.append(await outbox_memory(redis_url, prefix, partitions))


def memory_peak(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the most calls in progress, with bytes per call derived."""
    if not samples:
        return {}
    top = max(samples, key=lambda m: m["calls_in_progress"])
    per_call = top["checkpoints_bytes"] / max(1, top["calls_in_progress"])
    return {"peak": top, "checkpoint_bytes_per_call": round(per_call)}


async def send(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    await proc.stdin.drain()


async def orchestrate_sim(args: argparse.Namespace) -> int:
    from ivr.redisproc import free_port
    from ivr.ticketsink.client import SinkClient

    py = sys.executable
    hotline = args.scenario == "hotline"
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", persist=not args.no_fsync)
        await asyncio.to_thread(redis.start)
        procs: list[asyncio.subprocess.Process] = []
        try:
            # --late-pushers: no pusher while calls run (the outbox fills as in a ticket
            # backend outage; its Redis memory is measured), started once they ended
            env, prefix, stats_files, sink_url = await start_sink_and_pusher(
                args, redis, Path(tmp), procs, pushers=not args.late_pushers)
            sink, pushers = procs[0], procs[1:]
            partitions_held = {} if args.late_pushers else await lease_holders(
                redis.url, prefix, args.partitions)
            workdir = Path(tmp) / "emulator"
            # hotline: the bridge's FastAGI port, which the emulator's dialplan calls
            agi_port = free_port() if hotline else 0
            emu = await spawn(py, ME, "--role", "emulator", "--scenario", args.scenario,
                              "--rate", str(args.rate), "--seconds", str(args.seconds),
                              "--talk", str(args.talk), "--workdir", str(workdir),
                              "--agi-port", str(agi_port), "--bridges", str(args.bridges),
                              *(["--no-cel"] if args.no_cel else []), env=env, stdin=True)
            procs.append(emu)
            port = (await first_line(emu, 120))["port"]

            async def start_bridge(n: int, agi: int) -> tuple[asyncio.subprocess.Process,
                                                              dict[str, Any]]:
                proc = await spawn(
                    py, ME, "--role", "sim-bridge", "--scenario", args.scenario,
                    "--port", str(port), "--agi-port", str(agi),
                    "--conf-dir", str(workdir / "etc"),
                    "--tickets-url", sink_url + "/api/v1/tickets/status",
                    "--redis-url", redis.url, "--prefix", prefix, "--partitions",
                    str(args.partitions),
                    *(["--profile", args.profile] if args.profile and n == 1 else []),
                    *(["--no-filter"] if args.no_filter else []),
                    *(["--agents", "--pauses-per-s", str(args.pauses_per_s),
                       "--break-s", str(args.break_s), "--seconds",
                       str(args.seconds)] if args.agents else []),
                    # --bridges 2: [events] failover, the first the owner, the second a
                    # hot standby (its FastAGI port unused: the dialplan names the first)
                    *(["--failover", "--consumer", f"bridge{n}", "--owner-lease-ms",
                       str(args.owner_lease_ms)] if args.bridges > 1 else []),
                    env=env, stdin=True)
                procs.append(proc)
                return proc, await first_line(proc, 60)  # logged in, pipeline ready

            br, ready = await start_bridge(1, agi_port)
            roles = [ready.get("role")]
            standbys: list[asyncio.subprocess.Process] = []
            for n in range(2, args.bridges + 1):
                sb, sready = await start_bridge(n, free_port())
                standbys.append(sb)
                roles.append(sready.get("role"))
            await send(emu, "go")
            mem_samples: list[dict[str, Any]] = []
            sampler = asyncio.create_task(sample_memory(redis.url, prefix, args.partitions,
                                                        mem_samples))
            # progress of both; the bridge's lag = events emitted - events handled
            bridge_progress: list[dict[str, Any]] = []

            async def follow_bridge() -> None:
                assert br.stdout is not None
                while line := await br.stdout.readline():
                    rec = json.loads(line)
                    if "ami_events" in rec:
                        bridge_progress.append(rec)
                        return
                    bridge_progress.append(rec)

            follower = asyncio.create_task(follow_bridge())
            emu_progress: list[dict[str, Any]] = []
            while True:
                rec = await first_line(emu, args.seconds + longest_call(args) + 30)
                loads.append(os.getloadavg()[0])
                if rec.get("final"):
                    efinal = rec
                    break
                emu_progress.append(rec)
                if args.verbose:
                    last = bridge_progress[-1] if bridge_progress else {}
                    print(json.dumps({"emu": rec, "bridge": last}), file=sys.stderr,
                          flush=True)
            t_end = time.monotonic()
            await send(br, f"stop {efinal['events']}")
            for sb, n in zip(standbys, efinal["events_per_session"][1:], strict=True):
                await send(sb, f"stop {n}")
            await asyncio.wait_for(follower, 60)
            bstats = bridge_progress[-1]
            await br.wait()
            sbstats: list[dict[str, Any]] = []
            for sb in standbys:
                assert sb.stdout is not None
                last: dict[str, Any] = {}
                while line := await asyncio.wait_for(sb.stdout.readline(), 60):
                    last = json.loads(line)  # progress lines, then its totals
                sbstats.append(last)
                await sb.wait()
            await send(emu, "quit")
            await emu.wait()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            memory = memory_peak(mem_samples)
            if args.late_pushers:  # the whole run's events wait in the outbox
                memory["backlog"] = await outbox_memory(redis.url, prefix, args.partitions)
                partitions_held = await start_pushers(args, redis, env, prefix, stats_files,
                                                      procs)
                pushers = procs[-args.pushers:]
            st = await drain(redis.url, prefix, args.partitions, 60)
            drain_s = time.monotonic() - t_end
            memory["after"] = await outbox_memory(redis.url, prefix, args.partitions)
            # the sink's store: one ticket per call, with what it says about the call
            async with SinkClient(sink_url, SECRET.encode(), timeout=60) as sc:
                tickets = await sc.tickets()
            pusher_cpu, sink_cpu, redis_cpu, pstats = await stop_pusher(
                pushers, sink, redis, stats_files)
        finally:
            await stop_all(procs, redis)
    lat = sorted(pstats["latencies"])

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    # steady state: the window where calls up is >= 90 % of its peak
    peak = max((r["calls_up"] for r in emu_progress), default=0)
    steady = [r for r in emu_progress if r["calls_up"] >= 0.9 * peak]
    ami_rate = call_rate = -1.0  # -1: the run had no steady window
    bp = [r for r in bridge_progress if "ami" in r]
    if len(steady) >= 2 and bp:
        t_a, t_b = steady[0]["t"], steady[-1]["t"]

        def at(t: float, key: str) -> float:  # bridge counter at emulator time t (±0.5 s)
            return float(min(bp, key=lambda r: abs(r["t"] - t))[key])

        ami_rate = (at(t_b, "ami") - at(t_a, "ami")) / max(0.001, t_b - t_a)
        call_rate = (at(t_b, "built") - at(t_a, "built")) / max(0.001, t_b - t_a)
    # how far behind the emulator the bridge fell: events the emulator had emitted
    # (interpolated between its 1 s samples) minus events the bridge had handled
    backlog = 0.0
    ept = [(0.0, 0)] + [(float(r["t"]), int(r["events"])) for r in emu_progress]
    for b in bp:
        t = float(b["t"])
        for (ta, ea), (tb, eb) in itertools.pairwise(ept):
            if ta <= t <= tb:
                emitted = ea + (eb - ea) * (t - ta) / max(1e-6, tb - ta)
                backlog = max(backlog, emitted - b["ami"])
                break
    steady_cpu = -1.0
    if len(steady) >= 2 and bp:
        steady_cpu = (at(t_b, "cpu") - at(t_a, "cpu")) / max(0.001, t_b - t_a)
    emitted_at: dict[int, float] = {int(n): float(t) for n, t in efinal["marks"]}
    delivery: list[float] = sorted(float(t) - emitted_at[n] for n, t in bstats["marks"]
                                   if n in emitted_at)

    def dpct(q: float) -> float:
        if not delivery:
            return -1.0
        return round(delivery[min(len(delivery) - 1, int(q * len(delivery)))] * 1000, 1)

    calls = efinal["placed"]
    gen_s = efinal["generator_s"] or efinal["elapsed"]
    metrics = bstats["metrics"]
    by_kind = Counter(f"{t.get('entry') or '-'} {t.get('status')} {t.get('queue') or '-'}"
                      f"{' agent' if t.get('agent') else ''} p{t.get('priority')}"
                      for t in tickets)
    callers = {t.get("caller") for t in tickets}
    types = Counter(e["type"] for t in tickets for e in t["events"])
    agi: dict[str, Any] | None = None
    if hotline:
        agi = {
            # FastAGI sessions the bridge's server accepted / the IVR handler ran /
            # completed; AGI() applications the emulator ran and their failures
            "accepted": metrics.get("agi.sessions.accepted", 0),
            "handled": bstats["agi_sessions"],
            "completed": metrics.get("agi.sessions.completed", 0),
            "failed": metrics.get("agi.sessions.failed", 0),
            "dropped": metrics.get("agi.sessions.dropped", 0),
            "ivr_calls_failed": metrics.get("ivr.calls.failed", 0),
            "ivr_exit_queue": metrics.get("ivr.exit.queue", 0),
            "ticket_lookup_timeouts": metrics.get("ivr.ticket_lookup.timeout", 0),
            "ticket_lookup_errors": metrics.get("ivr.ticket_lookup.unavailable", 0),
            "emulator_agi_apps": efinal["agi_apps"],
            "emulator_agi_failures": efinal["agi_failures"],
            # the IVR handler in the bridge (ticket lookup + MSet round trip), and the
            # AGI() application seen from the caller's channel (connect … close)
            "bridge_handler_ms": bstats["agi_handler_ms"],
            "emulator_agi_app_ms": efinal["agi_app_ms"],
        }
    result = {
        "source": "emulator", "scenario": args.scenario, "rate_target": args.rate,
        "agents_slice": bool(args.agents), "agents": bstats.get("agents"),
        "seconds": args.seconds, "talk_s": args.talk, "calls": calls,
        "calls_per_s": round(calls / max(0.001, gen_s), 1),
        "calls_up_peak": efinal["peak_calls_up"], "answered": efinal["answered"],
        "calls_still_up_at_end": efinal["active"],  # > 0: the emulator ran out of time
        "ami_event_filter": not args.no_filter, "emulator_cel": not args.no_cel,
        "emulator_events": efinal["emitted"], "sent_to_bridge": efinal["events"],
        "bridge_ami_events": bstats["ami_events"],
        "ami_events_per_call_emitted": round(efinal["emitted"] / max(1, calls), 1),
        "ami_events_per_call": round(bstats["ami_events"] / max(1, calls), 1),
        "steady_window_s": [steady[0]["t"], steady[-1]["t"]] if steady else None,
        "ami_events_per_s_steady": round(ami_rate), "call_events_per_s_steady": round(call_rate),
        "ami_events_per_s_avg": round(bstats["ami_events"] / bstats["wall"]),
        "bridge_max_backlog_events": int(backlog),
        "bridge_max_backlog_ms": round(backlog / ami_rate * 1000) if ami_rate > 0 else -1,
        "bridge_cores_steady": round(steady_cpu, 2),
        "bridge_caught_up_s_after_emulator": round(bstats["wall"] - efinal["elapsed"], 2),
        "call_events": bstats["call_events"], "builder_errors": bstats["errors"],
        "callstats": {"calls": bstats["stats_calls"], "answered": bstats["stats_answered"],
                      "ended": bstats["stats_ended"]},
        "written": st.written, "delivered": st.delivered, "dead_letters": st.dead_letters,
        "events_lost": st.events_lost, "drain_after_emulator_s": round(drain_s, 2),
        "call_events_per_call": round(bstats["call_events"] / max(1, calls), 2),
        "tickets": len(tickets), "tickets_distinct_callers": len(callers),
        "tickets_by_kind": dict(by_kind.most_common()),
        "call_event_types_per_call": {k: round(v / max(1, calls), 2)
                                      for k, v in types.most_common()},
        "agi": agi,
        "latency_ms": {"p50": round(pct(0.50), 1), "p90": round(pct(0.90), 1),
                       "p99": round(pct(0.99), 1), "max": round(pct(1.0), 1),
                       "samples": len(lat)},
        "ami_delivery_ms": {"p50": dpct(0.5), "p99": dpct(0.99), "max": dpct(1.0),
                            "samples": len(delivery)},
        "bridge_loop_lag_ms": bstats["loop_lag_ms"],
        "emulator_loop_lag_ms": efinal["loop_lag_ms"],
        "bridge_to_redis_ms": bstats["to_redis_ms"],
        "cpu_ms_per_call": {
            "bridge": round(bstats["cpu"] / calls * 1000, 2),
            # --bridges 2: the hot standby's own CPU, and both bridges together
            "standby": round(sum(b["cpu"] for b in sbstats) / calls * 1000, 2),
            "bridges": round((bstats["cpu"] + sum(b["cpu"] for b in sbstats))
                             / calls * 1000, 2),
            "emulator": round(efinal["cpu"] / calls * 1000, 2),
            "pusher": round(pusher_cpu / calls * 1000, 2),
            "sink": round(sink_cpu / calls * 1000, 2),
            "redis": round(redis_cpu / calls * 1000, 2)},
        "bridge_cpu_share": round(bstats["cpu"] / bstats["wall"], 2),
        "pushers": args.pushers, "partitions_held": partitions_held,
        "late_pushers": args.late_pushers,
        "bridges": args.bridges, "failover": args.bridges > 1,
        "bridge_roles": {"at_start": roles,
                         "at_end": [bstats.get("role"), *(b.get("role") for b in sbstats)]},
        "redis_memory": memory,
        "load_avg_1m": [round(min(loads), 2), round(max(loads), 2)],
        "redis_fsync": not args.no_fsync, "sink_validates": not args.no_validate,
        "partitions": args.partitions, "batch_max": args.batch_max, "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    # the bridge must have handled every event the emulator sent (a bridge too slow is
    # dropped by the emulator, like Asterisk drops a manager session that stops reading)
    checks = {
        "no event lost": st.events_lost == 0,
        "every event delivered": st.delivered == st.written and st.dead_letters == 0,
        "no builder error": bstats["errors"] == 0,
        "every AMI event sent to the bridge handled": bstats["ami_events"] == efinal["events"],
        "no call left up": efinal["active"] == 0,
        "a ticket for every call": len(tickets) == calls and len(callers) == calls,
    }
    if agi is not None:
        checks["AGI sessions served == calls"] = (
            agi["accepted"] == agi["handled"] == agi["completed"] == agi["emulator_agi_apps"]
            == calls)
        checks["no AGI failure"] = (agi["failed"] == agi["dropped"] == agi["ivr_calls_failed"]
                                    == agi["emulator_agi_failures"] == 0)
    if args.agents:
        ag = bstats.get("agents") or {}
        checks["agents paused and resumed, none refused"] = (
            ag.get("pauses", 0) > 0 and ag.get("resumes", 0) > 0 and ag.get("refused") == 0)
    if sbstats:
        checks["owner and hot standby kept their roles"] = (
            roles == ["owner", *["standby"] * len(sbstats)]
            and bstats.get("role") == "owner"
            and all(b.get("role") == "standby" and b.get("takeovers") == 0 for b in sbstats))
        checks["every AMI event sent to the standby handled"] = all(
            b["ami_events"] == n for b, n in zip(sbstats, efinal["events_per_session"][1:],
                                                 strict=True))
    failed = [name for name, good in checks.items() if not good]
    print(json.dumps({"checks_failed": failed}), flush=True)
    result["checks_failed"] = failed
    args.last_result = result
    return 1 if failed else 0


async def compare_agents(args: argparse.Namespace) -> int:
    """The same load twice in one run: the queue and agent slice off, then on (with the
    break rota); prints both results, then the ratio of the bridge's CPU per call."""
    out: dict[str, dict[str, Any]] = {}
    rc = 0
    for on in (False, True):
        args.agents = on
        rc |= await orchestrate_sim(args)
        out["on" if on else "off"] = args.last_result
    off, on_ = out["off"], out["on"]
    cpu_off, cpu_on = off["cpu_ms_per_call"]["bridge"], on_["cpu_ms_per_call"]["bridge"]
    print(json.dumps({
        "compare": "queue and agent slice off vs on", "scenario": args.scenario,
        "calls_per_s": [off["calls_per_s"], on_["calls_per_s"]],
        "calls_up_peak": [off["calls_up_peak"], on_["calls_up_peak"]],
        "bridge_cpu_ms_per_call": [cpu_off, cpu_on],
        "ratio_on_over_off": round(cpu_on / cpu_off, 3) if cpu_off else None,
        "bridge_ami_events_per_call": [off["ami_events_per_call"], on_["ami_events_per_call"]],
        "latency_p99_ms": [off["latency_ms"]["p99"], on_["latency_ms"]["p99"]],
        "agents": on_["agents"], "load_avg_1m": [off["load_avg_1m"], on_["load_avg_1m"]],
        "p99_within_200_ms": max(off["latency_ms"]["p99"], on_["latency_ms"]["p99"]) <= 200,
    }, ensure_ascii=False), flush=True)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["emulator", "trace"], default="emulator",
                    help="AMI events from the emulator (ivr.sim) or a replayed trace")
    ap.add_argument("--role", default="orchestrator",
                    choices=["orchestrator", "generator", "bridge", "emulator", "sim-bridge"])
    ap.add_argument("--rate", type=float, default=150.0, help="new calls per second")
    ap.add_argument("--no-cel", action="store_true",
                    help="emulator without CEL events (the bridge's filter drops them "
                         "anyway): less load from the stand-in for Asterisk on this box")
    ap.add_argument("--scenario", choices=["hotline", "basic"], default="hotline",
                    help="emulator: the product's 12345 call with the IVR runtime on the "
                    "bridge's FastAGI (hotline) or the pure-dialplan call (basic)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="how long calls arrive (hotline 36, basic 28, trace 30)")
    ap.add_argument("--call-seconds", type=float, default=20.0,
                    help="trace: length of each call")
    ap.add_argument("--talk", type=float, default=None,
                    help="emulator: caller talk time, s, ± 20 %% (hotline 4: ~24 s of "
                    "greeting, AGI and prompt before; basic 18: ~3 s before)")
    ap.add_argument("--profile", default="", help="emulator: cProfile the bridge to FILE")
    ap.add_argument("--verbose", action="store_true", help="progress on stderr")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batch-max", type=int, default=100, help="events per POST (1=single)")
    ap.add_argument("--no-fsync", action="store_true", help="Redis without AOF")
    ap.add_argument("--no-validate", action="store_true", help="sink skips JSON Schema")
    ap.add_argument("--no-filter", action="store_true",
                    help="emulator: the bridge asks for every AMI event (no Filter)")
    ap.add_argument("--agents", action="store_true",
                    help="emulator: the bridge runs the queue and agent slice too "
                    "(QueueMonitor, AgentService) with a break rota pausing and resuming "
                    "agents")
    ap.add_argument("--compare-agents", action="store_true",
                    help="emulator: run twice, agent slice off then on, and print the ratio")
    ap.add_argument("--pauses-per-s", type=float, default=5.0,
                    help="--agents: agents sent on a break per second (each resumed later)")
    ap.add_argument("--break-s", type=float, default=10.0, help="--agents: length of a break")
    ap.add_argument("--pushers", type=int, default=1,
                    help="emulator: ivr events push processes sharing the partitions")
    ap.add_argument("--bridges", type=int, default=1, choices=[1, 2],
                    help="emulator, hotline: 2 = an owner and a hot standby on the same "
                    "AMI ([events] failover)")
    ap.add_argument("--late-pushers", action="store_true",
                    help="emulator: start the pushers only after the calls ended (the "
                    "outbox holds the run's events: its Redis memory per event)")
    ap.add_argument("--owner-lease-ms", type=int, default=3000, help=argparse.SUPPRESS)
    ap.add_argument("--failover", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--consumer", default="bridge", help=argparse.SUPPRESS)
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--redis-url", default="")
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--agi-port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--conf-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tickets-url", default="", help=argparse.SUPPRESS)
    import events_scale  # bench/events_scale.py: --scale (issue 13)

    events_scale.add_arguments(ap)
    args = ap.parse_args()
    if args.scale:
        return asyncio.run(events_scale.run(args))
    hotline = args.scenario == "hotline"
    if args.seconds is None:
        args.seconds = 30.0 if args.source == "trace" else 36.0 if hotline else 28.0
    if args.talk is None:
        args.talk = 4.0 if hotline else 18.0
    if args.role == "emulator":
        asyncio.run(emulator(args))
        return 0
    if args.role == "sim-bridge":
        asyncio.run(sim_bridge(args))
        return 0
    if args.role == "generator":
        asyncio.run(generator(args))
        return 0
    if args.role == "bridge":
        asyncio.run(bridge(args))
        return 0
    if args.bridges > 1 and not hotline:
        ap.error("--bridges 2 runs the hotline scenario (its manager.conf allows UserEvent)")
    if args.source == "emulator" and args.compare_agents:
        return asyncio.run(compare_agents(args))
    if args.source == "emulator":
        return asyncio.run(orchestrate_sim(args))
    return asyncio.run(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
