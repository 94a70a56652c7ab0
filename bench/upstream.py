"""Issue 7: the run engine's added latency over calling the model upstream directly.

The upstream is the tests' fake (``tests/fake_upstream.py``, a real HTTP server
on loopback, in its own process) paced like a fast model: ``FIRST_TOKEN_S`` to the first token, then
``DELTAS`` deltas ``DELTA_GAP_S`` apart. Side by side, alternating order:

- direct: ``AsyncOpenAI`` streaming the fake's reply with the call the responder makes
  (``responses.create(stream=True)`` or ``chat.completions.create(stream=True)``);
- embedded: the app's in-process async client streaming a run
  (``beta.threads.runs.stream``) whose ``openai`` responder calls the same fake
  with the same SDK, on a fresh one-message thread each time.

Figures: time to the first text delta and to the end of the stream, p50/p99;
ratio embedded/direct of the p50 totals (target at most 1.2x), and the first delta's added p50 (target at
most 10 ms, issue 16).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
from django.test import override_settings

from .report import Timing, add, verdict

NAME = "openai responder"
FIRST_TOKEN_S = 0.05
DELTA_GAP_S = 0.002
DELTAS = 40
#: Issue 16: the time the engine adds to the first delta, p50.
ADDED_FIRST_DELTA_MS = 10.0


@contextlib.contextmanager
def _fake_upstream() -> Iterator[str]:
    """The fake in its own process (as a real upstream is on another machine); yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--deltas", str(DELTAS), "--first-delay", str(FIRST_TOKEN_S),
         "--delay", str(DELTA_GAP_S)], cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _direct(upstream: openai.AsyncOpenAI, api: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    if api == "responses":
        events = await upstream.responses.create(model="bench", input=[{"role": "user", "content": "hi"}],
                                                 store=False, stream=True)
        async with events:
            async for event in events:
                if event.type == "response.output_text.delta" and first is None:
                    first = time.perf_counter() - start
    else:
        chunks = await upstream.chat.completions.create(model="bench", messages=[{"role": "user", "content": "hi"}],
                                                        stream=True, stream_options={"include_usage": True})
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def _embedded(api: openai.AsyncOpenAI, assistant_id: str, thread_id: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async with api.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        async for event in stream:
            if event.event == "thread.message.delta" and first is None:
                first = time.perf_counter() - start
    if stream.current_run is None or stream.current_run.status != "completed":
        raise RuntimeError(f"the benchmark run did not complete: {stream.current_run}")
    return first, time.perf_counter() - start


async def _measure(api_name: str, base_url: str, n: int) -> dict[str, tuple[Timing, Timing]]:
    from betaassi_django.client import build_async_client

    upstream = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    embedded = build_async_client(backend="embedded", max_retries=0)
    assistant = await embedded.beta.assistants.create(model="bench", instructions="Be quick.")
    threads = [(await embedded.beta.threads.create(messages=[{"role": "user", "content": "hi"}])).id
               for _ in range(n + 10)]
    paths = {"direct SDK": lambda _: _direct(upstream, api_name),
             "embedded run": lambda thread_id: _embedded(embedded, assistant.id, thread_id)}
    timings = {name: (Timing(), Timing()) for name in paths}
    for index, thread_id in enumerate(threads):
        order = list(paths) if index % 2 else list(reversed(paths))
        for name in order:
            first, total = await paths[name](thread_id)
            if index >= 10:  # after a warm-up
                timings[name][0].samples.append(first)
                timings[name][1].samples.append(total)
    await upstream.close()
    return timings


def run(n: int) -> None:
    n = max(50, n // 3)
    for api_name in ("responses", "chat"):
        with _fake_upstream() as base_url, override_settings(
                BETAASSI_RESPONDER="openai", BETAASSI_UPSTREAM_API=api_name,
                BETAASSI_UPSTREAM_BASE_URL=base_url, BETAASSI_UPSTREAM_API_KEY="bench"):
            timings = asyncio.run(_measure(api_name, base_url, n))
        direct_first, direct_total = timings["direct SDK"]
        for path, (first, total) in timings.items():
            figure = (f"first delta p50 {first.p50_ms:6.1f} ms p99 {first.p99_ms:6.1f} ms; "
                      f"total p50 {total.p50_ms:6.1f} ms p99 {total.p99_ms:6.1f} ms")
            if path == "direct SDK":
                add(NAME, f"{api_name}: {path}", figure)
                continue
            ratio = total.p50_ms / direct_total.p50_ms
            added_first = first.p50_ms - direct_first.p50_ms
            added = (f"; added p50 {added_first:+.1f} ms first, "
                     f"{total.p50_ms - direct_total.p50_ms:+.1f} ms total; first-delta ratio "
                     f"{first.p50_ms / direct_first.p50_ms:.2f}x")
            first_ok = "met" if added_first <= ADDED_FIRST_DELTA_MS else "MISSED"
            add(NAME, f"{api_name}: {path}", figure + added, f"{ratio:.2f}x", verdict(ratio, 1.2)
                + f" (total, p50); added first delta <= {ADDED_FIRST_DELTA_MS:.0f} ms: {first_ok}")
        print(f"bench: openai responder via {api_name}: {n} runs per path", flush=True)
