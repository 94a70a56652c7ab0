"""The peer's side of ``python -m bench turns``: django-ai-assistant turns, measured inside this process.

Run by ``bench/turns.py`` as ``.venv-peer/bin/python bench/peer/driver.py`` (the peer's virtualenv: its
LangChain stack is not ours), with ``DATABASE_URL`` (a scratch database of the kind ours uses, configured as
``project/settings.py`` configures ours) and ``BENCH_UPSTREAM`` (the fake Chat Completions upstream's base URL).
A minimal Django project: auth, contenttypes and ``django_ai_assistant``, two ``AIAssistant`` subclasses whose
``ChatOpenAI`` points at the fake, one streaming from it and one not (the peer's default). A turn is the peer's
own use case, ``use_cases.create_message`` (permission checks, history read, the graph, the messages saved) in
one of the worker's conversation ``Thread``.

The pipe speaks JSON lines. In: ``{"setup": workers}``, then
``{"turns": "streaming" | "default", "workers": [i, ...]}`` (one turn on each of these workers at once). Out, one
line each: ``{"version": ...}``, then ``{"walls": [s, ...], "cpu": s, "sql": n, "opened": n, "created": n}``
(process CPU, statements, connections opened to the server and ``connection_created`` over the batch:
``counting.Counters``). Errors go out as ``{"error": ...}``; anything else printed goes to stderr, so the pipe
carries only the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from importlib import metadata

MODEL = "bench-model"


def _settings() -> None:
    import environ
    from django.conf import settings

    database = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    database["CONN_MAX_AGE"] = 0  # as project/settings.py has it
    if database["ENGINE"] == "django.db.backends.postgresql":
        database.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": 20, "timeout": 30}
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE",
                                                   "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL"})
    settings.configure(
        DEBUG=False, SECRET_KEY="bench-peer", USE_TZ=True, DATABASES={"default": database},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_ai_assistant"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")


def _assistants() -> None:
    """The two peers, registered by subclassing (``AIAssistant.__init_subclass__``)."""
    from django_ai_assistant import AIAssistant
    from langchain_openai import ChatOpenAI

    upstream = os.environ["BENCH_UPSTREAM"]

    class Streaming(AIAssistant):
        id = "bench_streaming"
        name = "Bench (streaming LLM)"
        instructions = "Be quick."
        model = MODEL

        def get_llm(self):
            return ChatOpenAI(model=MODEL, base_url=upstream, api_key="bench", max_retries=0, streaming=True)

    class Default(AIAssistant):
        id = "bench_default"
        name = "Bench (default)"
        instructions = "Be quick."
        model = MODEL

        def get_llm(self):
            return ChatOpenAI(model=MODEL, base_url=upstream, api_key="bench", max_retries=0)


class Peer:
    def __init__(self, workers: int) -> None:
        from counting import Counters, Workers
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django_ai_assistant.helpers import use_cases

        self.counters = Counters()
        self.counters.install()
        call_command("migrate", verbosity=0)
        self.users = [get_user_model().objects.create_user(f"peer-{index}") for index in range(workers)]
        self.threads = {path: [use_cases.create_thread(f"{path}-{index}", user, f"bench_{path}")
                               for index, user in enumerate(self.users)] for path in ("streaming", "default")}
        self.workers = Workers(workers)
        self.use_cases = use_cases

    def turns(self, path: str, indices: list[int]) -> dict:
        def turn(index: int) -> None:
            reply = self.use_cases.create_message(f"bench_{path}", self.threads[path][index], self.users[index],
                                                  "hi")
            if not reply["output"]:
                raise RuntimeError(f"an empty reply: {reply}")

        before = self.counters.snapshot()
        cpu = time.process_time()
        walls = self.workers.batch(turn, indices)
        cpu = time.process_time() - cpu
        return {"walls": walls, "cpu": cpu, **self.counters.delta(before)}


def main() -> None:
    protocol, sys.stdout = sys.stdout, sys.stderr
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ.pop("LANGCHAIN_TRACING_V2", None)
    os.environ.pop("LANGSMITH_TRACING", None)
    peer = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if "setup" in command:
                import django

                _settings()
                django.setup()
                _assistants()
                peer = Peer(command["setup"])
                answer = {"version": metadata.version("django-ai-assistant"),
                          "langchain_openai": metadata.version("langchain-openai")}
            else:
                answer = peer.turns(command["turns"], command["workers"])
        except Exception as error:
            traceback.print_exc()
            answer = {"error": f"{type(error).__name__}: {error}"[:500]}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()
    if peer is not None:
        peer.workers.close()


if __name__ == "__main__":
    main()
