"""Runs outlive their process: heartbeats, and ending the runs of a process that died.

A run executes in the process that created it (or that was handed its tool
outputs). While it is ``queued``, ``in_progress`` or ``cancelling`` that
process stamps its ``heartbeat_at`` with the database's clock. When the
process dies (SIGKILL, OOM, a deploy) the stamps stop, and any other process
ends the run, so that its thread takes the next run.

Timing, with the defaults (``BETAASSI_RUN_HEARTBEAT_SECONDS`` = 5,
``BETAASSI_RUN_STALE_SECONDS`` = 15; the heartbeat must be at most half the
staleness):

- every process that runs the engine stamps all the runs it executes with one
  UPDATE every 5 s (``heartbeat``), and in the same beat sweeps (``sweep``);
- a run not stamped for 15 s is abandoned: the sweep ends it ``failed`` with
  ``last_error = {"code": "server_error", "message": ABANDONED}`` (a run that
  was ``cancelling`` ends ``cancelled``), its reply message ``incomplete`` and
  its step ``failed``;
- creating a run or adding a message on its thread ends it at once
  (``reap_thread``, before the "thread has an active run" check);
- worst case: the process dies right after a stamp at t, the run is stale at
  t + 15 s and the next sweep of a live process ends it by t + 20 s (at t + 15 s
  when a client is already asking for the next run): within 30 s.

Which processes sweep: daphne serving the project's ASGI application (from its
first connection), ``process_publish_queue``, and any process using the engine
or the in-process client (a worker, a shell), from their first use. When every
process died, the first to start again ends the stale runs at its first beat.
Stamps and staleness use the database's clock, so servers' clocks may differ.

``requires_action`` runs wait for the client, not for a process: they carry no
heartbeat and the sweep expires them at ``expires_at``
(``BETAASSI_RUN_EXPIRES_SECONDS``, 600 s), their tool-call step ``expired``.

Every end is one conditional UPDATE (status, and staleness, in its WHERE), so
two sweepers cannot both end a run, and a run whose process still stamps it is
never ended; an executor that finds its run ended elsewhere stops writing
(``execution.RunEnded``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from betaassi_django import conf

from .ids import now
from .models import EXECUTING_RUN_STATUSES, Message, Run, RunStep

logger = logging.getLogger("betaassi_django.engine")

#: ``last_error.message`` of a run whose process stopped heartbeating.
ABANDONED = "The server process executing this run stopped before the run finished."
#: ``last_error.message`` of a run whose execution raised (a bug, a database error).
FAILED = "The run stopped on an internal server error."
#: Runs ended per sweep at most (the rest on the next beat).
SWEEP_BATCH = 100


def _stale() -> Q:
    cutoff = Now() - timedelta(seconds=conf.get().run_stale_seconds)
    return Q(status__in=EXECUTING_RUN_STATUSES, heartbeat_at__lt=cutoff)


def heartbeat(run_ids: Iterable[str]) -> int:
    """Stamp the runs this process executes (one UPDATE); the number still executing."""
    run_ids = list(run_ids)
    if not run_ids:
        return 0
    return Run.objects.filter(id__in=run_ids, status__in=EXECUTING_RUN_STATUSES).update(heartbeat_at=Now())


def end_run(run_id: str, message: str, *, only_if_stale: bool = False) -> Run | None:
    """End a run that will never finish: ``failed`` with ``server_error`` (``cancelled`` when it was
    cancelling), with its open message and step. None when it was not executing (or not stale)."""
    stamp = now()
    error = {"code": "server_error", "message": message}
    with transaction.atomic():
        runs = Run.objects.filter(id=run_id)
        if only_if_stale:
            runs = runs.filter(_stale())
        if runs.filter(status="cancelling").update(status="cancelled", cancelled_at=stamp):
            Message.objects.filter(run_id=run_id, status="in_progress").update(
                status="incomplete", incomplete_at=stamp, incomplete_details={"reason": "run_cancelled"})
            RunStep.objects.filter(run__id=run_id, status="in_progress").update(status="cancelled",
                                                                                cancelled_at=stamp)
        elif runs.filter(status__in=("queued", "in_progress")).update(status="failed", failed_at=stamp,
                                                                       last_error=error):
            Message.objects.filter(run_id=run_id, status="in_progress").update(
                status="incomplete", incomplete_at=stamp, incomplete_details={"reason": "run_failed"})
            RunStep.objects.filter(run__id=run_id, status="in_progress").update(status="failed", failed_at=stamp,
                                                                                last_error=error)
        else:
            return None
    return Run.objects.select_related("thread").get(id=run_id)


def _expire(run_id: str) -> bool:
    """A ``requires_action`` run past ``expires_at`` -> ``expired``, its tool-call step too."""
    stamp = now()
    with transaction.atomic():
        if not Run.objects.filter(id=run_id, status="requires_action", expires_at__lt=stamp).update(
                status="expired"):
            return False
        RunStep.objects.filter(run__id=run_id, status="in_progress").update(status="expired", expired_at=stamp)
    return True


def sweep(executing: Iterable[str] = ()) -> list[str]:
    """End every abandoned run (except this process's own) and expire waiting runs past their time."""
    ended = []
    stale = Run.objects.filter(_stale()).exclude(id__in=list(executing)).values_list("id", flat=True)
    for run_id in list(stale[:SWEEP_BATCH]):
        if end_run(run_id, ABANDONED, only_if_stale=True) is not None:
            logger.warning("run %s ended: its process stopped heartbeating", run_id)
            ended.append(run_id)
    waiting = Run.objects.filter(status="requires_action", expires_at__lt=now()).values_list("id", flat=True)
    for run_id in list(waiting[:SWEEP_BATCH]):
        if _expire(run_id):
            logger.info("run %s expired waiting for tool outputs", run_id)
            ended.append(run_id)
    return ended


def reap_thread(thread_id: int) -> None:
    """End the thread's abandoned run now (``thread_id`` is the thread's primary key), so a new run or
    message need not wait for the next sweep."""
    for run_id in Run.objects.filter(_stale(), thread_id=thread_id).values_list("id", flat=True):
        if end_run(run_id, ABANDONED, only_if_stale=True) is not None:
            logger.warning("run %s ended: its process stopped heartbeating", run_id)
