"""Benchmark the real-time stream's fan-out of 1,000 events to 200 WebSocket subscribers, against a direct
Redis pub/sub loop measured in the same run.

One real api process (uvicorn, `app.main:create_app`) on embedded MongoDB, Redis and moto's S3, with
STREAM_MAX_CONNECTIONS_PER_IP=1000 and the `stream` rate limit lifted (every client comes from 127.0.0.1),
and STREAM_BACKLOG=5000, so no
connection's backlog overflows (`events_dropped` notices are counted all the same, as "dropped").
Each round, interleaved so drift hits both cases alike:
- the stream: 200 WebSocket clients (the `websockets` package, which like browsers negotiates
  permessage-deflate) open `GET /api/stream?topics=sales` and wait for their `subscribed` notice;
  then 1,000 events are published with `eventlog.publish`, as the dispatcher does (one Lua script each,
  appending to the log), one after another at full speed: each awaited, none paced, a burst (`--rate`
  paces them instead). The api's channels backend (app/lib/channels.py) follows the log and each
  connection sends every event as its JSON message;
- the baseline: 200 redis.asyncio pub/sub subscribers (a connection each) on one channel, and 1,000
  PUBLISHes of messages of the same shape and size, awaited one after another the same way: fanning
  out through Redis alone, without the api in between.
Each payload carries its publish time (`{"n": i, "t": time.time()}`); each client records, for each
message, the time it received it minus that, and stops at the last event (a connection is in order,
so what did not come before it is lost). Per round: delivery latency p50 and p99 over every (event,
subscriber) pair; events per second (events / the time from the first publish to the last delivery
to the last subscriber) and deliveries per second (messages received / the same time); messages lost;
the publishing time; the time to open the 200 subscriptions. Medians over rounds; ratios to the
baseline. In a burst, latency is mostly queueing: p99 is about the time to drain the whole burst.

The log keeps STREAM_HISTORY (10,000) events, more than a burst: an api process that fell further
behind than that would tell its clients (`events_dropped`), never skip events silently.

The clients and the publisher share this process's one asyncio loop, and the machine has 2 noisy
cores: the clients' parsing (200 sockets, 200,000 messages a round) competes with the api process and
Redis for them, and the publisher publishes only when the loop lets it, so the baseline's rate is
bounded by this process's parsing. Quote the medians and ratios, never a single timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from redis.asyncio import Redis

from app.config import Settings
from app.lib import eventlog
from app.lib.embedded import EmbeddedStack
from app.lib.timeutil import utcnow
from scripts.benchkit import api_process, bench_settings

EVENT, TOPIC = "item_sold", "sales"
OPEN_BATCH = 50  # sockets opened at once
FIGURES = ("p50 ms", "p99 ms", "events/s", "deliveries/s", "lost", "dropped", "publish s")


@dataclass
class Tally:
    """What one subscriber received."""

    expected: int
    latencies: list[float] = field(default_factory=list)
    last: float = 0.0  # time.time() of its last event
    dropped: int = 0  # as counted by `events_dropped` notices

    def add(self, at: float, payload: dict[str, Any]) -> bool:
        """Record one event received at `at`; whether it was the last one (each connection is in order,
        so nothing comes after it: what did not come before it is lost)."""
        self.latencies.append(at - payload["t"])
        self.last = at
        return payload["n"] >= self.expected - 1


def figures(tallies: list[Tally], started: float, published_s: float, events: int) -> dict[str, float]:
    latencies = [latency for tally in tallies for latency in tally.latencies]
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    span = max(tally.last for tally in tallies) - started
    return {
        "p50 ms": cuts[49] * 1000,
        "p99 ms": cuts[98] * 1000,
        "events/s": events / span if span > 0 else 0.0,
        "deliveries/s": len(latencies) / span if span > 0 else 0.0,
        "lost": events * len(tallies) - len(latencies),
        "dropped": sum(tally.dropped for tally in tallies),
        "publish s": published_s,
    }


async def collect(readers: list[asyncio.Task], within: float) -> None:
    """Wait for every reader to have its last event, at most `within` seconds; cancel the rest."""
    _, pending = await asyncio.wait(readers, timeout=within)
    for task in pending:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for task in readers:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def pace(n: int, started: float, rate: float) -> None:
    """At `rate` events a second, wait for the n-th event's turn; at rate 0 (full speed), not at all."""
    if rate > 0:
        await asyncio.sleep(max(0.0, started + n / rate - time.time()))


def shaped(n: int, body_id: str) -> dict[str, Any]:
    """A message as the stream sends one, for the baseline's PUBLISH."""
    sent_at = utcnow().isoformat().replace("+00:00", "Z")
    return {
        "id": body_id,
        "event": EVENT,
        "topic": TOPIC,
        "payload": {"n": n, "t": time.time()},
        "sentAt": sent_at,
    }


# -- the stream ---------------------------------------------------------------------------------------


async def open_socket(url: str):
    socket = await websockets.connect(url, open_timeout=30, max_size=2**20)
    first = json.loads(await asyncio.wait_for(socket.recv(), 30))
    if first.get("event") != "subscribed":
        await socket.close()
        raise RuntimeError(f"the stream answered {first} instead of `subscribed`")
    return socket


async def ws_read(socket, tally: Tally) -> None:
    async for raw in socket:
        at = time.time()
        message = json.loads(raw)
        if message["event"] == EVENT:
            if tally.add(at, message["payload"]):
                return
        elif message["event"] == "events_dropped":
            tally.dropped += message["payload"]["count"] or 0  # None: the api fell behind the log itself


async def stream_round(
    base: str, redis: Redis, settings: Settings, args: argparse.Namespace, round_no: int
) -> dict[str, float]:
    url = base.replace("http", "ws", 1) + f"/api/stream?topics={TOPIC}"
    sockets: list[Any] = []
    try:
        opened = time.perf_counter()
        for start in range(0, args.subscribers, OPEN_BATCH):
            batch = min(OPEN_BATCH, args.subscribers - start)
            sockets += await asyncio.gather(*(open_socket(url) for _ in range(batch)))
        opening_s = time.perf_counter() - opened
        tallies = [Tally(args.events) for _ in sockets]
        readers = [asyncio.create_task(ws_read(s, t)) for s, t in zip(sockets, tallies, strict=True)]
        started = time.time()
        for n in range(args.events):
            await pace(n, started, args.rate)
            await eventlog.publish(
                redis,
                key=f"bench-stream-{round_no}-{n}",
                event=EVENT,
                topics=[TOPIC],
                payload={"n": n, "t": time.time()},
                sent_at=utcnow(),
                history=settings.stream.history,
            )
        published_s = time.time() - started
        await collect(readers, args.timeout)
    finally:
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    result = figures(tallies, started, published_s, args.events)
    result["open s"] = opening_s
    return result


# -- the baseline: Redis pub/sub ----------------------------------------------------------------------


async def pubsub_read(pubsub, tally: Tally) -> None:
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        at = time.time()
        body = json.loads(message["data"])
        if tally.add(at, body["payload"]):
            return


async def baseline_round(url: str, redis: Redis, args: argparse.Namespace, round_no: int) -> dict[str, float]:
    channel = f"bench:stream:baseline:{round_no}"
    subscribers = Redis.from_url(url)
    pubsubs = [subscribers.pubsub() for _ in range(args.subscribers)]
    try:
        opened = time.perf_counter()
        for start in range(0, len(pubsubs), OPEN_BATCH):
            await asyncio.gather(*(p.subscribe(channel) for p in pubsubs[start : start + OPEN_BATCH]))
        deadline = time.monotonic() + 30
        while (await redis.pubsub_numsub(channel))[0][1] < args.subscribers:
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline's subscribers did not all subscribe")
            await asyncio.sleep(0.01)
        opening_s = time.perf_counter() - opened
        tallies = [Tally(args.events) for _ in pubsubs]
        readers = [asyncio.create_task(pubsub_read(p, t)) for p, t in zip(pubsubs, tallies, strict=True)]
        started = time.time()
        stamp = int(started * 1000)
        for n in range(args.events):
            await pace(n, started, args.rate)
            await redis.publish(channel, json.dumps(shaped(n, f"{stamp}-{n}"), separators=(",", ":")))
        published_s = time.time() - started
        await collect(readers, args.timeout)
    finally:
        await asyncio.gather(*(p.aclose() for p in pubsubs), return_exceptions=True)
        await subscribers.aclose()
    result = figures(tallies, started, published_s, args.events)
    result["open s"] = opening_s
    return result


# -- the api process and the run ----------------------------------------------------------------------


def _row(label: str, result: dict[str, float]) -> str:
    return (
        f"{label:<22}{result['p50 ms']:>9.1f}{result['p99 ms']:>9.1f}{result['events/s']:>10.0f}"
        f"{result['deliveries/s']:>13.0f}{result['lost']:>7.0f}{result['dropped']:>8.0f}"
        f"{result['publish s']:>10.2f}{result['open s']:>8.2f}"
    )


async def run(base: str, settings: Settings, args: argparse.Namespace) -> None:
    redis = Redis.from_url(settings.redis.url or "")
    results: dict[str, list[dict[str, float]]] = {"stream": [], "redis pub/sub": []}
    header = f"{'case':<22}{'p50 ms':>9}{'p99 ms':>9}{'events/s':>10}{'deliveries/s':>13}"
    header += f"{'lost':>7}{'dropped':>8}{'publish s':>10}{'open s':>8}"
    speed = f"at {args.rate:g} a second" if args.rate > 0 else "at full speed"
    print(
        f"{args.events} events to {args.subscribers} subscribers, published {speed}; {args.rounds} rounds; "
        f"STREAM_BACKLOG={args.backlog}",
        flush=True,
    )
    print(header, flush=True)
    try:
        for round_no in range(args.rounds):
            results["stream"].append(await stream_round(base, redis, settings, args, round_no))
            print(_row(f"{round_no + 1}: stream", results["stream"][-1]), flush=True)
            results["redis pub/sub"].append(
                await baseline_round(settings.redis.url or "", redis, args, round_no)
            )
            print(_row(f"{round_no + 1}: redis pub/sub", results["redis pub/sub"][-1]), flush=True)
    finally:
        await redis.aclose()
    medians = {
        case: {name: statistics.median(r[name] for r in rounds) for name in (*FIGURES, "open s")}
        for case, rounds in results.items()
    }
    print(f"medians of {args.rounds} rounds:")
    for case, median in medians.items():
        print(_row(f"median {case}", median))
    stream, floor = medians["stream"], medians["redis pub/sub"]
    print(f"ratio stream p99 / pub/sub p99:           {stream['p99 ms'] / floor['p99 ms']:.2f}x the latency")
    print(f"ratio stream p50 / pub/sub p50:           {stream['p50 ms'] / floor['p50 ms']:.2f}x the latency")
    print(f"ratio stream events/s / pub/sub events/s: {stream['events/s'] / floor['events/s']:.2f}x the rate")
    print(f"lost: stream {sum(r['lost'] for r in results['stream']):.0f} messages over every round")


def main() -> int:
    """Start embedded MongoDB, Redis and S3 and one api process, and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=5000, help="STREAM_BACKLOG of the api process")
    parser.add_argument("--rate", type=float, default=0, help="events a second; 0: full speed (a burst)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the last deliveries")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack(log_dir=Path(tmp) / "logs") as stack:
        services = {"mongodb": stack.start_mongodb(), "redis": stack.start_redis(), "s3": stack.start_s3()}
        settings = bench_settings(services, Path(tmp), "stream")
        limits = {  # every client comes from 127.0.0.1: its connection limits are lifted
            "STREAM_MAX_CONNECTIONS_PER_IP": str(max(1000, args.subscribers)),
            "AUTH_RATE_LIMITS": '{"stream": {"per_ip": 100000, "per_principal": 100000, "window_s": 60}}',
        }
        with api_process(settings, Path(tmp) / "api.log", **limits, STREAM_BACKLOG=str(args.backlog)) as base:
            asyncio.run(run(base, settings, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
