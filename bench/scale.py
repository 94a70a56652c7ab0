"""Issue 16, scale: 1,000 WebSocket connections on one daphne process, and 100,000 sessions on one assistant.

Connections: N sessions of the demo assistant connect to one daphne (SQLite, in-server processor, echo
responder) and stay idle; then ``ACTIVE`` of them make two turns each while the others stay connected.
Reported: daphne's resident memory before, with N idle connections, after the turns, and its peak (VmHWM);
memory per idle connection = (RSS with N idle - RSS before) / N.

Sessions: see :mod:`bench.scale_sessions`.

``BENCH_SCALE=small`` runs both at a tenth of the size (quick check while working).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from pathlib import Path

import websockets

from betaassi_django.testing import LiveServer, scratch_database_url

from .report import add
from .websockets import _CREATE_SESSIONS, _rss_kib

NAME = "scale"
#: Connections held, of which ACTIVE make turns after the idle period; the memory target in MiB.
CONNECTIONS, ACTIVE, TARGET_MIB = 1000, 100, 256
IDLE_SECONDS = 5.0


def small() -> bool:
    return os.environ.get("BENCH_SCALE") == "small"


#: Handshakes in flight at once: clients arrive over time, not in one instant (daphne drops a handshake that
#: its application has not accepted within 5 s).
HANDSHAKES = 50


async def _hold(url: str, headers: dict, opened: list, go: asyncio.Event, leave: asyncio.Event,
                turns: int, done: list, arriving: asyncio.Semaphore) -> None:
    async with arriving:
        socket = await websockets.connect(url, additional_headers=headers, max_size=2**20, open_timeout=120,
                                          ping_interval=None)
        ready = json.loads(await asyncio.wait_for(socket.recv(), 120))
    async with socket:
        assert ready["type"] == "session.ready", ready
        opened.append(url)
        await go.wait()
        for turn in range(turns):
            await socket.send(json.dumps({"type": "user.message", "content": f"turn {turn}"}))
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 120))
                if frame["type"] == "message.completed":
                    done.append(url)
                    break
                if frame["type"] in ("run.failed", "error"):
                    raise RuntimeError(f"turn failed: {frame}")
        await leave.wait()
        assert socket.state is websockets.protocol.State.OPEN, "an idle connection was closed"


async def _connections(server: LiveServer, headers: dict, assistant_id: str, count: int, active: int) -> dict:
    pid = server.process.pid
    base = f"ws://127.0.0.1:{server.port}/ws/assistants/{assistant_id}/sessions"
    opened, done, go, leave = [], [], asyncio.Event(), asyncio.Event()
    arriving = asyncio.Semaphore(HANDSHAKES)
    figures: dict = {}
    # A warm-up connection and turn first: code paths loaded and caches filled before "before".
    warm = asyncio.create_task(_hold(f"{base}/bench-0/", headers, opened, go, leave, 1, done, arriving))
    while not opened:
        await asyncio.sleep(0.05)
    go.set()
    while not done:
        await asyncio.sleep(0.05)
    leave.set()
    await warm
    opened.clear(), done.clear()
    go, leave = asyncio.Event(), asyncio.Event()
    await asyncio.sleep(1.0)
    figures["before"] = _rss_kib(pid)[0]
    tasks = [asyncio.create_task(_hold(f"{base}/bench-{i}/", headers, opened, go, leave,
                                       2 if i < active else 0, done, arriving)) for i in range(count)]
    start = time.perf_counter()
    while len(opened) < count:
        failed = next((t for t in tasks if t.done() and t.exception()), None)
        if failed is not None:
            raise failed.exception()
        await asyncio.sleep(0.1)
    figures["connect_s"] = time.perf_counter() - start
    await asyncio.sleep(IDLE_SECONDS)
    figures["idle"] = _rss_kib(pid)[0]
    start = time.perf_counter()
    go.set()
    while len(done) < 2 * active:
        failed = next((t for t in tasks if t.done() and t.exception()), None)
        if failed is not None:
            raise failed.exception()
        await asyncio.sleep(0.05)
    figures["turns_s"] = time.perf_counter() - start
    figures["used"], figures["peak"] = _rss_kib(pid)
    leave.set()
    await asyncio.gather(*tasks)
    figures["held"] = len(opened) == count
    return figures


def connections(like_url: str, root: Path) -> None:
    count, active = (CONNECTIONS // 10, ACTIVE // 10) if small() else (CONNECTIONS, ACTIVE)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * count + 256))  # the clients here, and daphne (it inherits the limit)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    env = {"BETAASSI_IN_SERVER_PROCESSOR": "true", "BETAASSI_ECHO_DELAY": "0", "DEBUG": "false",
           "BETAASSI_MAX_SESSIONS_PER_USER": "0", "BETAASSI_MAX_SESSIONS_PER_USER_PER_ASSISTANT": "0",
           "BETAASSI_MAX_TURNS_PER_USER_PER_MINUTE": "0", **({"BETAASSI_TRACEMALLOC": "1"}
                                                            if os.environ.get("BETAASSI_TRACEMALLOC") else {})}
    with scratch_database_url(like_url) as url, LiveServer(url, env=env, cwd=root) as server:
        web = server.login(*server.demo_login())
        headers = server.websocket_headers(web)
        created = json.loads(server.manage("shell", "-c", _CREATE_SESSIONS.format(count=count)).splitlines()[-1])
        f = asyncio.run(_connections(server, headers, created["assistant"], count, active))
    per_kib = (f["idle"] - f["before"]) / count
    ok = f["held"] and max(f["used"], f["peak"]) <= TARGET_MIB * 1024
    add(NAME, f"{count} WebSocket connections, idle",
        f"RSS {f['idle'] / 1024:.0f} MiB (before {f['before'] / 1024:.0f} MiB): {per_kib:.0f} KiB per idle "
        f"connection; all connected in {f['connect_s']:.1f} s")
    add(NAME, f"{count} connections, {active} in turns", f"RSS {f['used'] / 1024:.0f} MiB, peak {f['peak'] / 1024:.0f} "
        f"MiB; {2 * active} turns in {f['turns_s']:.1f} s; {'all held' if f['held'] else 'connections LOST'}",
        "", f"<= {TARGET_MIB} MiB: {'met' if ok else 'MISSED'}")


def run(like_url: str, root: Path) -> None:
    from . import scale_sessions

    scale_sessions.run(like_url)
    connections(like_url, root)
