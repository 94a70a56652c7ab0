"""Issue 16: what one chat turn costs, against the streamed-SDK floor and against the peer, side by side.

The same fake Chat Completions upstream for every path (``tests/fake_upstream.py`` in its own process, paced
as ``bench/upstream.py`` paces it: 50 ms to the first token, then 40 deltas 2 ms apart). Paths:

- floor: the bare ``openai`` SDK (``AsyncOpenAI``) streaming ``chat.completions`` from the fake;
- ``session.ask`` (on 10 long-lived threads), ``session.astream`` and a WebSocket turn through the project's
  ASGI application and the real consumer (``channels.testing.WebsocketCommunicator``, in this process, so
  its CPU and SQL are counted here), the embedded backend's ``openai`` responder asking the fake;
- the peer, django-ai-assistant with a streaming and a default (not streamed) ``ChatOpenAI``, in its own
  virtualenv and process (``bench/peer/driver.py``), which measures its turns itself and answers on a pipe.

Each round runs, for one path, one turn on each of 10 workers at once, then ``ALONE`` turns one at a time, then
the next path; the order of the paths rotates every round, after two warm-up rounds. Per path: wall p50/p99 of
the turns 10 at once (the 10 share the interpreter: a path's CPU shows in their wall) and p50 of the turns
alone (the latency a turn adds, e.g. a polling tick); CPU per turn (the process's CPU time over all the path's
turns, divided by their number: the fake is another process); SQL statements and new database connections per
turn, counted on every connection of the process (``bench/peer/counting.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.test import override_settings

from .peer.counting import Counters, Workers
from .report import Timing, add

NAME = "chat turn"
WORKERS = 10
WARMUP_ROUNDS = 2
#: Turns of each path run one at a time in every round, after its 10 at once.
ALONE = 3
ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PEER_TIMEOUT_S = 300.0
FLOOR = "bare openai SDK, streamed (floor)"
OURS = ("session.ask", "session.astream", "WebSocket turn (in-process consumer)")
PEER_PIN = next(line.split("==")[1] for line in (ROOT / "bench" / "peer" / "requirements.txt").read_text().splitlines()
                if line.startswith("django-ai-assistant["))
PEERS = {"streaming": "django-ai-assistant {version}, streaming LLM",
         "default": "django-ai-assistant {version}, default (not streamed)"}


@dataclass
class Figures:
    """One path's measured batches."""

    wall: Timing = field(default_factory=Timing)
    alone: Timing = field(default_factory=Timing)
    cpu: float = 0.0
    sql: int = 0
    opened: int = 0
    created: int = 0
    error: str = ""
    #: CPU per turn of each measured round, for the spread of the ratio against the floor's in the same round.
    rounds: list[float] = field(default_factory=list)

    def add(self, walls: list[float], cpu: float, sql: int, opened: int, created: int) -> None:
        (self.wall if len(walls) > 1 else self.alone).samples.extend(walls)
        self.cpu += cpu
        self.sql += sql
        self.opened += opened
        self.created += created

    def per_turn(self, total: float) -> float:
        return total / (len(self.wall.samples) + len(self.alone.samples))


class Peer:
    """django-ai-assistant in its own virtualenv and process, spoken to in JSON lines."""

    def __init__(self, database_url: str, upstream: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
        env.update(DATABASE_URL=database_url, BENCH_UPSTREAM=upstream)
        self.process = subprocess.Popen([str(PEER_PYTHON), str(ROOT / "bench" / "peer" / "driver.py")], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            self.version = self.ask({"setup": WORKERS})["version"]
        except Exception:
            self.close()
            raise

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], PEER_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the peer process gave no answer (exit code {self.process.poll()}; see stderr)")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the peer failed: {answer['error']}")
        return answer

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Ours:
    """The floor and this app's three ways into a turn, in this process: the async paths on one event loop
    that lives as long as the benchmark, ``ask`` on ``WORKERS`` long-lived threads."""

    def __init__(self, upstream: str) -> None:
        import openai
        from django.contrib.auth import get_user_model
        from django.test import Client

        from betaassi_django.publishing.processor import Processor
        from tests.testapp.models import Support

        support = Support.objects.create(name="bench turns", model="bench-model")
        users, self.sessions = {}, {}
        for path in ("ask", "astream", "ws"):  # a user per session: each stays under the per-minute turn quota
            for index in range(WORKERS):
                users[path, index] = get_user_model().objects.create_user(f"turns-{path}-{index}")
                support.sessions.create(f"{path}-{index}", owner=users[path, index])
        Processor().run_once()
        for path in ("ask", "astream"):
            self.sessions[path] = [support.sessions.get(f"{path}-{index}") for index in range(WORKERS)]
        cookies = []
        for index in range(WORKERS):
            client = Client()
            client.force_login(users["ws", index])
            cookies.append(f"sessionid={client.cookies['sessionid'].value}".encode())
        self.loop = asyncio.new_event_loop()
        self.loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.loop_thread.start()
        self.workers = Workers(WORKERS)
        self.floor = openai.AsyncOpenAI(base_url=upstream, api_key="bench", max_retries=0)
        self.sockets = self._on_loop(self._connect(support.id, cookies))

    def _on_loop(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    async def _connect(self, assistant_id: str, cookies: list[bytes]) -> list:
        from channels.testing import WebsocketCommunicator

        from project.asgi import application

        sockets = []
        for index, cookie in enumerate(cookies):
            socket = WebsocketCommunicator(application, f"/ws/assistants/{assistant_id}/sessions/ws-{index}/",
                                           headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", cookie)])
            connected, _ = await socket.connect()
            ready = await socket.receive_json_from(timeout=10) if connected else {}
            if ready.get("type") != "session.ready":
                raise RuntimeError(f"WebSocket session ws-{index} did not open: {connected}, {ready}")
            sockets.append(socket)
        return sockets

    def paths(self) -> dict[str, Callable[[list[int]], list[float]]]:
        """Each path's batch: a turn on each of the workers (or sessions) ``indices``, at once."""
        return {FLOOR: lambda indices: self._batch(self._floor_turn, indices), OURS[0]: self._ask_batch,
                OURS[1]: lambda indices: self._batch(self._astream_turn, indices),
                OURS[2]: lambda indices: self._batch(self._ws_turn, indices)}

    def _batch(self, turn: Callable, indices: list[int]) -> list[float]:
        async def timed(index: int) -> float:
            start = time.perf_counter()
            await turn(index)
            return time.perf_counter() - start

        async def batch() -> list[float]:
            return list(await asyncio.gather(*(timed(index) for index in indices)))

        return self._on_loop(batch())

    async def _floor_turn(self, index: int) -> None:
        chunks = await self.floor.chat.completions.create(
            model="bench-model", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        text = [chunk.choices[0].delta.content async for chunk in chunks if chunk.choices]
        if not "".join(filter(None, text)):
            raise RuntimeError("the floor read an empty reply")

    def _ask_batch(self, indices: list[int]) -> list[float]:
        def turn(index: int) -> None:
            if not self.sessions["ask"][index].ask("hi"):
                raise RuntimeError("session.ask returned an empty reply")

        return self.workers.batch(turn, indices)

    async def _astream_turn(self, index: int) -> None:
        if not [delta async for delta in self.sessions["astream"][index].astream("hi")]:
            raise RuntimeError("session.astream yielded no delta")

    async def _ws_turn(self, index: int) -> None:
        socket = self.sockets[index]
        await socket.send_json_to({"type": "user.message", "content": "hi"})
        while (frame := await socket.receive_json_from(timeout=30))["type"] != "message.completed":
            if frame["type"] in ("run.failed", "error"):
                raise RuntimeError(f"WebSocket turn: {frame}")

    def close(self) -> None:
        from django.db import connections

        async def close() -> None:
            for socket in self.sockets:
                await socket.disconnect()
            await self.floor.close()

        self._on_loop(close())
        self.workers.batch(lambda _: connections.close_all(), list(range(WORKERS)))
        self.workers.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop_thread.join(10)


def _measure(paths: dict[str, Callable[[list[int]], dict]], rounds: int) -> dict[str, Figures]:
    """``rounds`` measured rounds after the warm-up; the paths' order rotates every round."""
    figures = {name: Figures() for name in paths}
    names = list(paths)
    for number in range(WARMUP_ROUNDS + rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            if figures[name].error:
                continue
            try:
                # the turns alone go round the workers, so each session's user stays under the turn quota
                alone = [[(number * ALONE + turn) % WORKERS] for turn in range(ALONE)]
                batches = [paths[name](indices) for indices in [list(range(WORKERS)), *alone]]
            except Exception as error:  # reported in the path's row, the others go on
                figures[name].error = f"{type(error).__name__}: {error}"[:300]
                continue
            if number >= WARMUP_ROUNDS:
                for batch in batches:
                    figures[name].add(**batch)
                figures[name].rounds.append(sum(b["cpu"] for b in batches) / sum(len(b["walls"]) for b in batches))
    return figures


def _local(counters: Counters, batch: Callable[[list[int]], list[float]]) -> Callable[[list[int]], dict]:
    def measured(indices: list[int]) -> dict:
        before = counters.snapshot()
        cpu = time.process_time()
        walls = batch(indices)
        cpu = time.process_time() - cpu
        return {"walls": walls, "cpu": cpu, **counters.delta(before)}

    return measured


def _report(figures: dict[str, Figures], labels: dict[str, str]) -> None:
    figures = {name: figures[name] for name in (FLOOR, *PEERS, *OURS) if name in figures}
    floor = figures[FLOOR]
    for name, path in figures.items():
        label = labels.get(name, name)
        if path.error or not path.wall.samples or not path.alone.samples:
            add(NAME, label, f"not measured: {path.error or 'no turn'}")
            continue
        cpu, sql, connections = path.per_turn(path.cpu) * 1000, path.per_turn(path.sql), path.per_turn(path.opened)
        figure = (f"10 at once: wall p50 {path.wall.p50_ms:6.1f} ms p99 {path.wall.p99_ms:6.1f} ms; alone: wall p50 "
                  f"{path.alone.p50_ms:6.1f} ms; CPU {cpu:5.1f} ms/turn; SQL {sql:4.1f}/turn; "
                  f"new connections {connections:4.2f}/turn")
        if path.created != path.opened:
            figure += f" (pool checkouts {path.per_turn(path.created):4.2f}/turn)"
        if name == FLOOR or floor.error:
            add(NAME, label, figure)
            continue
        cpu_ratio = cpu / (floor.per_turn(floor.cpu) * 1000)
        spread = sorted(ours / theirs for ours, theirs in zip(path.rounds, floor.rounds, strict=False) if theirs)
        at_once, alone = path.wall.p50_ms - floor.wall.p50_ms, path.alone.p50_ms - floor.alone.p50_ms
        ratio = (f"CPU {cpu_ratio:.2f}x (rounds {spread[0]:.2f}-{spread[-1]:.2f}x); wall {at_once:+.1f} ms at once, "
                 f"{alone:+.1f} ms alone")
        target = "(peer)"
        if name in OURS:  # the engine's heartbeat connection shows as a few hundredths in every row
            checks = [("CPU <= 1.5x", cpu_ratio <= 1.5), ("wall <= floor+10 ms at once", at_once <= 10),
                      ("alone", alone <= 10), ("SQL <= 6", sql <= 6), ("0 new connections", connections < 0.05)]
            target = "; ".join(f"{text}: {'met' if ok else 'MISSED'}" for text, ok in checks)
        add(NAME, label, figure, ratio, target)


def run(n: int, like: str | None = None) -> None:
    """BENCH_N/30 rounds (at least 2) on this process's Django database, the peer on a scratch database of the
    same kind as ``like`` (default: this process's DATABASE_URL). A failure is a row, not the end of the bench."""
    try:
        _run(max(2, n // 3 // WORKERS), like or os.environ["DATABASE_URL"])
    except Exception as error:  # e.g. the turn path half-way through a change: the other benchmarks go on
        traceback.print_exc()
        add(NAME, "all paths", f"not measured: {type(error).__name__}: {error}"[:300])


def _run(rounds: int, like: str) -> None:
    from betaassi_django.testing import scratch_database_url

    from .upstream import DELTA_GAP_S, DELTAS, FIRST_TOKEN_S, _fake_upstream

    counters = Counters()
    counters.install()
    labels: dict[str, str] = {}
    with _fake_upstream() as upstream, scratch_database_url(like) as peer_url, override_settings(
            BETAASSI_RESPONDER="openai", BETAASSI_UPSTREAM_API="chat", BETAASSI_UPSTREAM_BASE_URL=upstream,
            BETAASSI_UPSTREAM_API_KEY="bench"):
        ours = Ours(upstream)
        paths = {name: _local(counters, batch) for name, batch in ours.paths().items()}
        peer, peer_error = None, ""
        try:
            if not PEER_PYTHON.exists():
                raise RuntimeError(f"{PEER_PYTHON.relative_to(ROOT)} is missing (`make bench` creates it from "
                                   "bench/peer/requirements.txt)")
            peer = Peer(peer_url, upstream)
            for kind, label in PEERS.items():
                paths[kind] = lambda indices, kind=kind: peer.ask({"turns": kind, "workers": indices})
                labels[kind] = label.format(version=peer.version)
        except Exception as error:
            peer_error = f"{type(error).__name__}: {error}"[:300]
        try:
            figures = _measure(paths, rounds)
        finally:
            ours.close()
            if peer is not None:
                peer.close()
    if peer_error:
        for kind, label in PEERS.items():
            figures[kind] = Figures(error=f"the peer could not run: {peer_error}")
            labels[kind] = label.format(version=PEER_PIN)
    _report(figures, labels)
    print(f"bench: chat turns: {rounds * WORKERS} per path {WORKERS} at once and {rounds * ALONE} alone, fake upstream "
          f"{FIRST_TOKEN_S * 1000:.0f} ms + {DELTAS} x {DELTA_GAP_S * 1000:.0f} ms", flush=True)
