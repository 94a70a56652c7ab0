"""Issue 5: K concurrent WebSocket sessions against one daphne process, beside the direct SDK path.

For each K, every session makes the same turns twice, alternating which path
goes first: over its WebSocket (``user.message`` -> ``message.delta`` ... ->
``message.completed``) and directly with ``AsyncOpenAI`` streaming a run on
the session's thread over HTTP to the same daphne. Both paths end in the same
run engine and echo responder, so the ratio is the cost of the WebSocket layer
(consumer, channel layer, turn queue, frames).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import openai
import websockets

from betaassi_django.testing import LiveServer, scratch_database_url

from .report import Timing, add, verdict

NAME = "websocket sessions"
LEVELS = (10, 100, 500)
#: Turns each session makes per path and per K.
TURNS = 2
#: The K at which the WebSocket path is held to the direct path (issue 16): first delta p50 at most
#: ``TARGET_RATIO`` times the direct path's, turns per second at least ``TARGET_RATE`` times its rate.
TARGET_KS, TARGET_RATIO, TARGET_RATE = (100, 500), 1.1, 0.95

_CREATE_SESSIONS = """
import json
from django.contrib.auth import get_user_model
from betaassi_django.models import Assistant, Session
assistant = Assistant.objects.get(name="Demo assistant")
owner = get_user_model().objects.get(username="demo")
ids = [f"bench-{{i}}" for i in range({count})]
last = None
for session_id in ids:
    last = assistant.sessions.create(session_id, owner=owner)
assistant.sessions.wait(last, timeout=120)
rows = Session.objects.filter(assistant_id=assistant.id, session_id__in=ids).values_list("session_id", "thread_id")
print(json.dumps({{"assistant": assistant.id, "sessions": dict(rows)}}))
"""


def _rss_kib(pid: int) -> tuple[int, int]:
    """The server's resident memory now and at its peak, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


async def _ws_session(url: str, headers: dict, turns: int, first: Timing, done: Timing,
                      connected: list, go: asyncio.Event) -> None:
    async with websockets.connect(url, additional_headers=headers, max_size=2**20, open_timeout=60) as socket:
        ready = json.loads(await asyncio.wait_for(socket.recv(), 60))
        assert ready["type"] == "session.ready", ready
        connected.append(url)
        await go.wait()
        for turn in range(turns):
            start = time.perf_counter()
            await socket.send(json.dumps({"type": "user.message", "content": f"turn {turn}"}))
            seen_delta = False
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 120))
                if frame["type"] == "message.delta" and not seen_delta:
                    seen_delta = True
                    first.samples.append(time.perf_counter() - start)
                elif frame["type"] == "message.completed":
                    assert frame["message"]["content"].startswith(f"echo: turn {turn} "), frame
                    done.samples.append(time.perf_counter() - start)
                    break
                elif frame["type"] in ("run.failed", "error"):
                    raise RuntimeError(f"turn failed: {frame}")


async def _direct_session(api: openai.AsyncOpenAI, assistant_id: str, thread_id: str, turns: int,
                          first: Timing, done: Timing) -> None:
    for turn in range(turns):
        start = time.perf_counter()
        seen_delta = False
        async with api.beta.threads.runs.stream(
            thread_id=thread_id, assistant_id=assistant_id,
            additional_messages=[{"role": "user", "content": f"turn {turn}"}],
        ) as stream:
            async for event in stream:
                if event.event == "thread.message.delta" and not seen_delta:
                    seen_delta = True
                    first.samples.append(time.perf_counter() - start)
            final = await stream.get_final_messages()
        assert final[-1].content[0].text.value.startswith(f"echo: turn {turn} "), final
        done.samples.append(time.perf_counter() - start)


async def _ws_round(server: LiveServer, headers: dict, assistant_id: str, session_ids: list[str]):
    """Every session connects first; then all talk at once (the clock of a turn starts at its send)."""
    first, done, go, connected = Timing(), Timing(), asyncio.Event(), []
    base = f"ws://127.0.0.1:{server.port}/ws/assistants/{assistant_id}/sessions"
    tasks = [asyncio.create_task(_ws_session(f"{base}/{sid}/", headers, TURNS, first, done, connected, go))
             for sid in session_ids]
    while len(connected) < len(tasks):
        failed = next((t for t in tasks if t.done() and t.exception()), None)
        if failed is not None:
            raise failed.exception()
        await asyncio.sleep(0.05)
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    return first, done, time.perf_counter() - start


async def _direct_round(server: LiveServer, assistant_id: str, thread_ids: list[str]):
    first, done = Timing(), Timing()
    # The SDK's default retries, as an application would have them (a kept-alive connection can be dropped).
    api = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.api_key, timeout=120)
    start = time.perf_counter()
    await asyncio.gather(*(_direct_session(api, assistant_id, tid, TURNS, first, done) for tid in thread_ids))
    elapsed = time.perf_counter() - start
    await api.close()
    return first, done, elapsed


def run(like_url: str, root: Path, levels: tuple[int, ...] | None = None) -> None:
    """``levels``: the Ks (default ``BENCH_WS_LEVELS``, e.g. ``100,500``, else ``LEVELS``)."""
    levels = levels or tuple(int(k) for k in os.environ.get("BENCH_WS_LEVELS", "").split(",") if k) or LEVELS
    # As deployed: DEBUG off (with it on, Django keeps every query of a connection in memory).
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0", "DEBUG": "false",
           # One demo user holds every session and sends every turn: the per-user quotas are off for the bench.
           "BETAASSI_MAX_SESSIONS_PER_USER": "0", "BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT": "0",
           "BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE": "0"}
    with scratch_database_url(like_url) as url, LiveServer(url, env=env, cwd=root) as server:
        web = server.login(*server.demo_login())
        headers = server.websocket_headers(web)
        created = json.loads(server.manage("shell", "-c", _CREATE_SESSIONS.format(count=max(levels))).splitlines()[-1])
        assistant_id, threads = created["assistant"], created["sessions"]
        rss_idle, _ = _rss_kib(server.process.pid)
        for k in levels:
            session_ids = [f"bench-{i}" for i in range(k)]
            rounds = {
                "WebSocket": lambda ids=session_ids: _ws_round(server, headers, assistant_id, ids),
                "direct SDK": lambda ids=session_ids: _direct_round(server, assistant_id, [threads[i] for i in ids]),
            }
            timings = {name: (Timing(), Timing()) for name in rounds}  # first delta, completed
            seconds = dict.fromkeys(rounds, 0.0)
            for order in (list(rounds), list(reversed(rounds))):  # each path goes first once
                for name in order:
                    first, done, elapsed = asyncio.run(rounds[name]())
                    timings[name][0].samples.extend(first.samples)
                    timings[name][1].samples.extend(done.samples)
                    seconds[name] += elapsed
            rss, peak = _rss_kib(server.process.pid)
            ratio = timings["WebSocket"][0].p50_ms / timings["direct SDK"][0].p50_ms
            rates = {name: len(done.samples) / seconds[name] for name, (_, done) in timings.items()}
            rate_ratio = rates["WebSocket"] / rates["direct SDK"]
            for name, (first, done) in timings.items():
                figure = (f"first delta p50 {first.p50_ms:7.1f} ms p99 {first.p99_ms:7.1f} ms; completed p50 "
                          f"{done.p50_ms:7.1f} ms p99 {done.p99_ms:7.1f} ms; {rates[name]:6.0f} turns/s")
                if name == "WebSocket":
                    rate_ok = rate_ratio >= TARGET_RATE
                    target = (f"{verdict(ratio, TARGET_RATIO)} (first delta); turns/s {rate_ratio:.2f}x: "
                              f"{'met' if rate_ok else 'MISSED'} (at least {TARGET_RATE}x)") if k in TARGET_KS else ""
                    add(NAME, f"K={k} {name}", figure, f"{ratio:.2f}x", target)
                else:
                    add(NAME, f"K={k} {name}", figure)
            held = len(timings["WebSocket"][1].samples) == 2 * TURNS * k
            add(NAME, f"K={k} server memory", f"RSS {rss / 1024:.0f} MiB (idle {rss_idle / 1024:.0f} MiB, "
                f"peak {peak / 1024:.0f} MiB); {k} sessions held" if held else "sessions lost")


if __name__ == "__main__":  # python -m bench.websockets: this benchmark alone
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from .report import print_table

    root = Path(__file__).resolve().parent.parent
    run(os.environ.get("DATABASE_URL") or f"sqlite:///{root / 'db.sqlite3'}", root)
    print_table()
