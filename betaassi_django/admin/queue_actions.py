"""What "Apply pending events now", "Sync from backend" and "Sync all from backend" do, as plain functions.

Each returns the message level and the sentence for the operator; the admin
shows it and writes the same sentence to the admin log (``audit``), so the
history says exactly what the operator was told.
"""

from __future__ import annotations

import contextlib
import secrets

import openai
from django.contrib import messages
from django.http import HttpRequest

from betaassi_django.models import PublishLease, Session, assistant_models
from betaassi_django.publishing import status

from .audit import CHANGE, DELETION
from .common import describe

NO_QUEUE = "has no publish queue (it was made outside betaassi-django), so it has no events or sessions"


def apply_now(request: HttpRequest, assistant) -> tuple[int, str]:
    """Apply the assistant's pending events in this request (under the queue's lease)."""
    shown = assistant.name or assistant.id
    try:
        processed = status.apply_now(assistant, holder=f"admin:{request.user.get_username()}:{secrets.token_hex(3)}")
        left = status.queue_status(assistant)
    except ValueError:
        return messages.WARNING, f"{shown} {NO_QUEUE}."
    except openai.APIError as error:
        return messages.ERROR, (f"Applying the queue of {shown} failed: {describe(error)}. "
                                "Events stay pending; what was applied is recorded.")
    failure = status.failure(assistant.id)
    if failure is not None:
        return messages.ERROR, (f"Applying the queue of {shown} failed: {failure.last_error}. {processed} "
                                f"event(s) processed; {left.lag} still pending. The processor retries it "
                                "with back-off.")
    if left.lag:
        holder = PublishLease.objects.filter(assistant_id=assistant.id).values_list("holder", flat=True).first()
        return messages.WARNING, (f"{shown}: {processed} event(s) processed, {left.lag} still pending"
                                  + (f" (the queue is leased to {holder})." if holder else "."))
    return messages.SUCCESS, f"{shown}: {processed} event(s) processed; nothing is pending."


def sync_one(assistant) -> tuple[int, str, int]:
    """Re-read the assistant and its sessions; the third value is the log's action flag (gone: a deletion)."""
    shown, assistant_id = assistant.name or assistant.id, assistant.id
    try:
        assistant.refresh_from_backend()
        count, dropped = status.sync_sessions(assistant)
    except ValueError:
        return messages.SUCCESS, f"{assistant.name or assistant.id} synced from the backend; it {NO_QUEUE}.", CHANGE
    except openai.NotFoundError:
        assistant.forget()
        status.forget_assistant(assistant_id)
        return messages.WARNING, f"{shown} is gone from the backend: its mirror and sessions were removed.", DELETION
    except openai.APIError as error:
        return messages.ERROR, f"Syncing {shown} failed: {describe(error)}. The mirror was kept as it was.", CHANGE
    return messages.SUCCESS, (f"{assistant.name or assistant.id} synced from the backend: {count} session(s)"
                              + (f", {dropped} stale mirror row(s) removed." if dropped else ".")), CHANGE


def sync_all() -> tuple[int, str]:
    """Every assistant of every type re-read from the backend (new ones mirrored, gone ones dropped),
    then each one's sessions from its registry."""
    from betaassi_django.sync import sync_assistants

    try:
        counts = sync_assistants()
        synced = 0
        for model in assistant_models():
            for assistant in model.objects.all():
                with contextlib.suppress(ValueError):  # no publish queue: no sessions
                    status.sync_sessions(assistant)
                synced += 1
    except openai.APIError as error:
        return messages.ERROR, (f"Syncing from the backend failed: {describe(error)}. "
                                "What was read before the failure is mirrored; the rest is as it was.")
    mirrored = {a for m in assistant_models() for a in m.objects.values_list("pk", flat=True)}
    stale, _ = Session.objects.exclude(assistant_id__in=mirrored).delete()
    summary = ", ".join(f"{what}: {count}" for what, count in sorted(counts.items())) or "no assistants"
    return messages.SUCCESS, (f"Synced from the backend ({summary}); sessions of {synced} assistant(s) re-read, "
                              f"{stale} session row(s) of vanished assistants removed.")
