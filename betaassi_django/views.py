"""Pages: the user's sessions per assistant (start, change, delete their own), and the chat page of one session.

Every change goes through the assistant's publish queue, as the admin's and the Python API's do: the page
publishes, waits a moment (without holding a worker thread) for the processor's verdict, and says what it was.
"""

from __future__ import annotations

import openai
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from betaassi_django import access
from betaassi_django.client import get_client
from betaassi_django.forms import CHOOSE_ID_PERMISSION, EditSessionForm, StartSessionForm
from betaassi_django.models import Session, all_assistants, find_assistant
from betaassi_django.publishing.events import SESSION_ID
from betaassi_django.publishing.kinds import CHOICES as KIND_WORDS
from betaassi_django.publishing.status import queue_status

#: How long starting, changing or deleting a session waits for the processor to apply it.
APPLY_WAIT_SECONDS = 10.0
#: Reading the pending events only informs the list: no retries, a short timeout.
PENDING_READ = {"max_retries": 0, "timeout": 10.0}
NOT_YET = "is published but not applied yet; is process_publish_queue running?"


@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    assistants = all_assistants()
    form = StartSessionForm(assistants=assistants, may_choose_id=request.user.has_perm(CHOOSE_ID_PERMISSION))
    return render(request, "betaassi_django/sessions.html", _list_context(request, assistants, form))


def _list_context(request: HttpRequest, assistants, form) -> dict:
    mine = Session.objects.filter(owner=request.user).order_by("-touched_at", "-created_at")
    by_assistant = {a.id: [] for a in assistants}
    for session in mine:
        if not SESSION_ID.fullmatch(session.session_id):  # recorded before ids were fully matched: no chat URL
            continue
        by_assistant.setdefault(session.assistant_id, []).append(session)
    pending = _pending_ops(request, [a for a in assistants if by_assistant[a.id]])
    for assistant in assistants:
        for session in by_assistant[assistant.id]:
            ops = pending.get(assistant.id, {}).get(session.session_id, [])
            session.deleting, session.changing = "session.delete" in ops, "session.update" in ops
            session.context_text = context_text(session.kind, session.context_messages)
    return {"assistants": [(a, by_assistant[a.id]) for a in assistants], "form": form}


def _pending_ops(request: HttpRequest, assistants) -> dict[str, dict[str, list[str]]]:
    """assistant id -> session id -> the ops still in its publish queue (``QueueStatus.pending_by_session``,
    as the admin shows them); a backend failure leaves them unknown with one warning."""
    api = get_client().with_options(**PENDING_READ)
    found = {}
    for assistant in assistants:
        try:
            found[assistant.id] = queue_status(assistant, api=api).pending_by_session()
        except ValueError:  # no publish queue: nothing can be pending
            continue
        except openai.APIError:
            messages.warning(request, "Pending changes are unknown for now: the backend did not answer.")
            break
    return found


def context_text(kind: str, count: int | None) -> str:
    """What a session shows its model, in the forms' words (without their explanation)."""
    if kind == "manyshots":
        return f"last {count} messages"
    return dict(KIND_WORDS).get(kind, kind).split(" (")[0]  # "one-shot (last message only)": "one-shot"


def _own_session(user, assistant_id: str, session_id: str) -> tuple[Session, object]:
    """The user's own session and its assistant; anyone else's (whatever their permissions) or a missing one is
    answered alike: 404, so these pages confirm no one's session id."""
    session = Session.objects.filter(assistant_id=assistant_id, session_id=session_id, owner=user).first()
    assistant = find_assistant(assistant_id) if session is not None else None
    if session is None or assistant is None or not SESSION_ID.fullmatch(session_id):
        raise Http404("No such session.")
    return session, assistant


async def _publish(request: HttpRequest, call, *args, **kwargs) -> str | None:
    """``call`` (a publisher of ``assistant.sessions``) without blocking the loop: its event id, or None once the
    user is told the backend did not take it (nothing was published). Its ``ValidationError`` is the caller's."""
    try:
        return await sync_to_async(call)(*args, **kwargs)
    except openai.APIError:
        messages.error(request, "The backend did not answer, so nothing was changed; please try again.")
        return None


async def _still_pending(request: HttpRequest, assistant, session_id: str) -> bool:
    """True, with the user told why, when an earlier change or deletion of the session is still in the queue.

    One pending event per session: the assistant's queue is shared by all its users, so a user posting changes in
    a loop would otherwise delay everyone else's. A queue that cannot be read leaves the decision to the publish
    itself (which then fails with its own message)."""
    def pending() -> list[str]:
        try:
            return queue_status(assistant, api=get_client().with_options(**PENDING_READ)).pending_by_session().get(
                session_id, [])
        except (ValueError, openai.APIError):
            return []

    ops = await sync_to_async(pending)()
    if not ops:
        return False
    waiting = "deletion" if "session.delete" in ops else "change"
    messages.error(request, f"Session {session_id} has a {waiting} that is not applied yet; wait until it is, "
                            "then try again.")
    return True


async def _verdict(assistant, event_id: str) -> tuple[str | None, str]:
    """The processor's (status, reason) for the event, or (None, "") when it did not come in time."""
    try:
        recorded = await assistant.sessions.await_(event_id, APPLY_WAIT_SECONDS)
    except TimeoutError:
        return None, ""
    return recorded.status, recorded.reason


@login_required
async def start_session(request: HttpRequest) -> HttpResponse:
    """Publish ``session.create`` and wait (without holding a worker thread) until it is applied."""
    if request.method != "POST":
        return redirect("betaassi:sessions")
    user = await request.auser()
    assistants = await sync_to_async(all_assistants)()
    may_choose_id = await sync_to_async(user.has_perm)(CHOOSE_ID_PERMISSION)
    form = StartSessionForm(request.POST, assistants=assistants, may_choose_id=may_choose_id)
    refused = not await sync_to_async(form.is_valid)()
    if not refused:
        data = form.cleaned_data
        assistant = next(a for a in assistants if a.id == data["assistant"])
        try:  # the quotas and the model allow-list (betaassi_django.quotas), before any backend call
            event_id = await _publish(request, assistant.sessions.create, data["session_id"], owner=user,
                                      kind=data["kind"], context_messages=data["context_messages"],
                                      model=data["model"])
        except ValidationError as exc:
            form.add_refusal(exc)
            refused = True
    if refused:
        context = await sync_to_async(_list_context)(request, assistants, form)
        return await sync_to_async(render)(request, "betaassi_django/sessions.html", context, status=400)
    if event_id is None:
        return redirect("betaassi:sessions")
    status, reason = await _verdict(assistant, event_id)
    if status == "applied":
        return redirect("betaassi:chat", assistant_id=assistant.id, session_id=data["session_id"])
    if status is None:
        messages.warning(request, f"Session {data['session_id']} {NOT_YET}")
    elif status == "rejected":  # the processor's limits (a burst past the quota): about the user's own sessions
        messages.error(request, f"The session was not created: {reason}.")
    elif may_choose_id:  # they may list every session id in the admin: "taken" tells them nothing new
        messages.error(request, f"Session {data['session_id']} was not created ({status}): the id is taken.")
    else:  # a random id: the same answer whatever the reason, so the page confirms no one's session id
        messages.error(request, "The session was not created; please try again.")
    return redirect("betaassi:sessions")


@login_required
async def edit_session(request: HttpRequest, assistant_id: str, session_id: str) -> HttpResponse:
    """The owner changes kind, N and model: ``session.update`` through the queue, then the list says how it went."""
    user = await request.auser()
    session, assistant = await sync_to_async(_own_session)(user, assistant_id, session_id)
    if request.method != "POST":
        form = EditSessionForm(session=session, assistant=assistant)
        return await sync_to_async(_render_edit)(request, form)
    form = EditSessionForm(request.POST, session=session, assistant=assistant)
    refused = not await sync_to_async(form.is_valid)()
    if not refused:
        changes = form.changes()
        if (changes["kind"], changes["context_messages"], changes["model"]) == (
                session.kind, session.context_messages, session.model or None):
            messages.info(request, f"Session {session_id} already has these settings; nothing changed.")
            return redirect("betaassi:sessions")
        if await _still_pending(request, assistant, session_id):
            return redirect("betaassi:sessions")
        try:
            event_id = await _publish(request, assistant.sessions.update, session_id, **changes)
        except ValidationError as exc:
            form.add_refusal(exc)
            refused = True
    if refused:
        return await sync_to_async(_render_edit)(request, form, status=400)
    if event_id is None:
        return redirect("betaassi:sessions")
    status, reason = await _verdict(assistant, event_id)
    if status == "applied":
        kept, model = context_text(changes["kind"], changes["context_messages"]), changes["model"] or "the assistant's"
        messages.success(request, f"Session {session_id} changed: {kept}, model {model}.")
    elif status is None:
        messages.warning(request, f"The change of session {session_id} {NOT_YET}")
    else:  # rejected (an allow-list changed meanwhile), or noop (deleted meanwhile)
        messages.error(request, f"Session {session_id} was not changed: {reason or status}.")
    return redirect("betaassi:sessions")


def _render_edit(request: HttpRequest, form: EditSessionForm, status: int = 200) -> HttpResponse:
    return render(request, "betaassi_django/session_edit.html", {
        "form": form, "session": form.session, "assistant": form.assistant}, status=status)


@login_required
async def delete_session(request: HttpRequest, assistant_id: str, session_id: str) -> HttpResponse:
    """GET: the confirmation (works without JavaScript); POST: ``session.delete`` through the queue. Until the
    processor applies it, the list shows the session as "Deleting…"."""
    user = await request.auser()
    session, assistant = await sync_to_async(_own_session)(user, assistant_id, session_id)
    if request.method != "POST":
        return await sync_to_async(render)(request, "betaassi_django/session_delete.html", {
            "session": session, "assistant": assistant,
            "context_text": context_text(session.kind, session.context_messages)})
    if await _still_pending(request, assistant, session_id):
        return redirect("betaassi:sessions")
    event_id = await _publish(request, assistant.sessions.delete, session_id)
    if event_id is None:
        return redirect("betaassi:sessions")
    status, reason = await _verdict(assistant, event_id)
    if status == "applied":
        messages.success(request, f"Session {session_id} was deleted.")
    elif status is None:
        messages.warning(request, f"The deletion of session {session_id} {NOT_YET}")
    elif status == "noop":
        messages.info(request, f"Session {session_id} was already deleted.")
    else:
        messages.error(request, f"Session {session_id} was not deleted: {reason}.")
    return redirect("betaassi:sessions")


@login_required
def chat(request: HttpRequest, assistant_id: str, session_id: str) -> HttpResponse:
    """The owner's chat; another user's only with view_session (read-only) or change_session (may send).
    A session the user may not read is answered exactly as one that does not exist."""
    session = access.readable_session(request.user, assistant_id, session_id)
    if session is None:
        raise Http404("No such session.")
    assistant = find_assistant(assistant_id)
    return render(request, "betaassi_django/chat.html", {
        "session": session, "assistant": assistant, "sessions_url": reverse("betaassi:sessions"),
        "context_text": context_text(session.kind, session.context_messages),
        "socket_path": f"/ws/assistants/{assistant_id}/sessions/{session_id}/",
        "read_only": not access.may_send(request.user, session), "foreign": session.owner_id != request.user.pk,
    })
