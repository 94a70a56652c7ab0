"""Pages: the user's sessions per assistant, and the chat page of one session."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from betaassi_django import access
from betaassi_django.forms import CHOOSE_ID_PERMISSION, StartSessionForm
from betaassi_django.models import Session, all_assistants, find_assistant
from betaassi_django.publishing.events import SESSION_ID

#: How long starting a session waits for the processor to apply it.
APPLY_WAIT_SECONDS = 10.0


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
    return {"assistants": [(a, by_assistant[a.id]) for a in assistants], "form": form}


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
            event_id = await sync_to_async(assistant.sessions.create)(
                data["session_id"], owner=user, kind=data["kind"], context_messages=data["context_messages"],
                model=data["model"])
        except ValidationError as exc:
            form.add_refusal(exc)
            refused = True
    if refused:
        context = await sync_to_async(_list_context)(request, assistants, form)
        return await sync_to_async(render)(request, "betaassi_django/sessions.html", context, status=400)
    try:
        recorded = await assistant.sessions.await_(event_id, APPLY_WAIT_SECONDS)
    except TimeoutError:
        status, reason = None, ""
    else:
        status, reason = recorded.status, recorded.reason
    if status == "applied":
        return redirect("betaassi:chat", assistant_id=assistant.id, session_id=data["session_id"])
    if status is None:
        messages.warning(request, f"Session {data['session_id']} is published but not applied yet; "
                                  "is process_publish_queue running?")
    elif status == "rejected":  # the processor's limits (a burst past the quota): about the user's own sessions
        messages.error(request, f"The session was not created: {reason}.")
    elif may_choose_id:  # they may list every session id in the admin: "taken" tells them nothing new
        messages.error(request, f"Session {data['session_id']} was not created ({status}): the id is taken.")
    else:  # a random id: the same answer whatever the reason, so the page confirms no one's session id
        messages.error(request, "The session was not created; please try again.")
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
        "socket_path": f"/ws/assistants/{assistant_id}/sessions/{session_id}/",
        "read_only": not access.may_send(request.user, session), "foreign": session.owner_id != request.user.pk,
    })
