"""Starting one run's execution: queued -> in_progress, and its reply's message and step.

A new run (never started) moves in one conditional UPDATE and writes its reply message and ``message_creation``
step in the same transaction, so its first text delta needs no database work: they are announced there
(``announce``: their created events, stamped with that time, which the end stores), or deleted at the end when
the run stops for its function calls without text. A run queued again after tool outputs starts under a lock
(``start_locked``) and opens its reply at its first delta (``open_message``), as OpenAI creates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models.functions import Now

from . import serializers
from .ids import now
from .models import Message, Run, RunStep
from .prompt import responder_request
from .responders.interface import ResponderRequest, ToolCall


class RunGone(Exception):
    """The run (or its thread) was deleted while executing."""


class RunEnded(Exception):
    """The run was ended by someone else while executing (reaped, expired): write nothing more."""

    def __init__(self, run: Run) -> None:
        super().__init__(run.id)
        self.event = f"thread.run.{run.status}"
        self.data = serializers.run(run, run.thread.id)


#: Statuses in which an execution may still write its run.
WRITABLE = ("in_progress", "cancelling")


def check_writable(run_id: str) -> None:
    """Raise unless this execution still owns the run."""
    run = Run.objects.select_related("thread").filter(id=run_id).first()
    if run is None:
        raise RunGone(run_id)
    if run.status not in WRITABLE:
        raise RunEnded(run)


@dataclass
class Started:
    run: Run
    request: ResponderRequest
    events: list[tuple[str, dict]]
    message: Message | None = None
    step: RunStep | None = None
    calls: list[ToolCall] = field(default_factory=list)
    #: The run's first execution (``start``).
    first: bool = False
    #: The reply message and its step were announced (their created events published).
    opened: bool = False
    #: The run ends ``incomplete`` for this token limit (``incomplete_details.reason``).
    incomplete: str | None = None
    #: file_search results this execution may cite, ``"<call>:<result>"`` -> file id (``knowledge.run_search``).
    citations: dict = field(default_factory=dict)


def start(run_id: str, created: Run | None = None) -> Started | Run | None:
    """queued -> in_progress; or the run if it ended first. A new run with its reply written in one transaction
    (no lock, no read before the conditional UPDATE); anything else (queued again after tool outputs, cancelled
    or gone meanwhile) takes ``start_locked``.

    ``created``: the run as its creation just stored it, on this thread (``execution.started_here``). It is not
    read again: the UPDATE's condition includes its metadata (the one field the API lets anyone change), so
    a run modified (or cancelled) since takes ``start_locked``, which reads it."""
    stamp = now()
    kept = {"metadata": created.metadata} if created is not None else {}
    with transaction.atomic():
        if Run.objects.filter(id=run_id, status="queued", started_at=None, **kept).update(
                status="in_progress", started_at=stamp, heartbeat_at=Now()):
            run = _as_started(created, stamp) if created is not None else Run.objects.select_related("thread").get(
                id=run_id)
            request = responder_request(run, first=True)
            started = Started(run, request, [("thread.run.in_progress", serializers.run(run, run.thread.id))],
                              first=True)
            started.message = new_message(started)
            started.step = new_step(run, "message_creation", {"message_id": started.message.id})
            return started
    return start_locked(run_id)


def _as_started(run: Run, stamp: int) -> Run:
    """The created run as the start's UPDATE left it, its values as a read would give them (floats stored from
    JSON integers read back as floats)."""
    run.status, run.started_at = "in_progress", stamp
    for name in ("temperature", "top_p"):
        value = getattr(run, name)
        if value is not None:
            setattr(run, name, float(value))
    return run


def start_locked(run_id: str) -> Started | Run | None:
    """``start`` of a run queued again (or cancelled, gone), read and moved under the transaction's lock."""
    with transaction.atomic():
        run = Run.objects.select_related("thread").filter(id=run_id).first()
        if run is None:
            return None
        if run.status == "cancelling":
            run.status, run.cancelled_at = "cancelled", now()
            run.save(update_fields=["status", "cancelled_at"])
            return run
        if run.status != "queued":
            return run
        first = run.started_at is None  # no steps yet: nothing of its own to send, no earlier usage to sum
        run.status, run.started_at = "in_progress", run.started_at or now()
        run.save(update_fields=["status", "started_at"])
        request = responder_request(run, first=first)
    return Started(run, request, [("thread.run.in_progress", serializers.run(run, run.thread.id))], first=first)


def new_message(started: Started) -> Message:
    run = started.run
    return Message.objects.create(thread_id=run.thread_id, role="assistant", status="in_progress", content=[],
                                  assistant_id=run.assistant_id, run_id=run.id, attachments=[])


def new_step(run: Run, kind: str, details: dict | list, usage: dict | None = None,
             carried_items: list | None = None) -> RunStep:
    return RunStep.objects.create(run=run, thread_id=run.thread.id, assistant_id=run.assistant_id, type=kind,
                                  status="in_progress", step_details={"type": kind, kind: details}, usage=usage,
                                  carried_items=carried_items)


def open_message(started: Started) -> list[tuple[str, dict]]:
    """The reply message and its step, at the first text delta (of a run not started by ``start``'s first
    execution)."""
    with transaction.atomic():
        if not Run.objects.filter(id=started.run.id, status__in=WRITABLE).exists():  # one light read
            check_writable(started.run.id)  # raises RunGone or RunEnded
        started.message = new_message(started)
        started.step = new_step(started.run, "message_creation", {"message_id": started.message.id})
    return _opened(started)


def announce(started: Started) -> list[tuple[str, dict]]:
    """The events of a reply written with the start, created now (as ``open_message`` would have created it;
    the end stores that time)."""
    started.message.created_at = started.step.created_at = now()
    return _opened(started)


def _opened(started: Started) -> list[tuple[str, dict]]:
    started.opened = True
    thread_id = started.run.thread.id
    step_data = serializers.run_step(started.step, started.run.id)
    message_data = serializers.message(started.message, thread_id)
    return [("thread.run.step.created", step_data), ("thread.run.step.in_progress", step_data),
            ("thread.message.created", message_data), ("thread.message.in_progress", message_data)]
