"""The session form of the admin and what it publishes: shared by ``SessionInline`` and ``SessionAdmin``.

The registry in the backend is the source of truth and changes only through
the publish queue, so adding, editing and deleting a session here publishes
``session.create`` / ``session.update`` / ``session.delete``; the mirror row
appears, changes or goes once the processor applies the event. Until then the
row (or, for a new session, the list of pending creations) says "pending".
"""

from __future__ import annotations

import openai
from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from betaassi_django.client import get_client
from betaassi_django.forms import check_settings, settings_of
from betaassi_django.models import Session
from betaassi_django.publishing import kinds
from betaassi_django.publishing.events import Event, Rejected, check_session_args, check_session_id
from betaassi_django.publishing.status import QueueStatus, queue_status

from .common import INFORMATIVE_READ, BackendFailed, informative_reads_failed

SESSION_FIELDS = ("session_id", "owner", "kind", "context_messages", "model")
UNKNOWN = "unknown (backend unreachable)"


def chat_url(session: Session) -> str | None:
    try:
        return reverse("betaassi:chat", kwargs={"assistant_id": session.assistant_id, "session_id": session.session_id})
    except NoReverseMatch:
        return None


def read_queues(request: HttpRequest, assistants) -> dict[str, QueueStatus]:
    """The pending events of each assistant, from the backend; on a failure, a warning and what was read."""
    api = get_client().with_options(**INFORMATIVE_READ)
    states: dict[str, QueueStatus] = {}
    for assistant in assistants:
        if informative_reads_failed(request):
            break
        try:
            states[assistant.id] = queue_status(assistant, api=api)
        except ValueError:  # no publish queue: nothing can be pending
            continue
        except openai.APIError as error:
            informative_reads_failed(request, error)
    return states


def status_text(session: Session, states: dict[str, QueueStatus]) -> str:
    state = states.get(session.assistant_id)
    if state is None:
        return UNKNOWN
    ops = state.pending_by_session().get(session.session_id)
    return "pending: " + ", ".join(op.removeprefix("session.") for op in ops) if ops else "applied"


def pending_creations(states: dict[str, QueueStatus], names: dict[str, str]) -> list[dict]:
    """Sessions published for creation and not applied yet (they have no mirror row); owners by username."""
    rows = []
    for assistant_id, state in states.items():
        for event_id, event in state.pending:
            if isinstance(event, Event) and event.op == "session.create":
                rows.append({"event_id": event_id, "assistant": names.get(assistant_id, assistant_id),
                             "session_id": event.session_id, "kind": event.args.get("kind"),
                             "context_messages": event.args.get("context_messages"),
                             "model": event.args.get("model") or "", "owner": event.args.get("owner")})
    users = get_user_model().objects.filter(pk__in={row["owner"] for row in rows if row["owner"] is not None})
    usernames = {str(pk): name for pk, name in users.values_list("pk", get_user_model().USERNAME_FIELD)}
    for row in rows:
        row["owner"] = usernames.get(str(row["owner"]), row["owner"])
    return rows


class SessionForm(forms.ModelForm):
    """A session's settings, checked by the same rules the processor applies (a form error, never a 500)."""

    kind = forms.ChoiceField(choices=kinds.CHOICES, initial="default")
    context_messages = forms.IntegerField(label="N", min_value=1, required=False,
                                          help_text="Messages of context for 'last N messages'.")
    model = forms.CharField(required=False, max_length=100, help_text="Blank: the assistant's model.")

    class Meta:
        model = Session
        fields = SESSION_FIELDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # the registry changes kind, N and model; the id and owner stay
            for name in ("session_id", "owner"):
                if name in self.fields:
                    self.fields[name].disabled = True
        elif "owner" in self.fields:
            self.fields["owner"].required = True

    def clean(self) -> dict:
        data = check_settings(self, super().clean())  # the checks every session form shares
        if not self.instance.pk and data.get("session_id"):
            try:
                check_session_id(data["session_id"])
            except Rejected as exc:
                self.add_error("session_id", str(exc))
        if not self.errors:
            try:
                check_session_args(self.changes(), creating=False)
            except Rejected as exc:
                field = next((f for f in SESSION_FIELDS if str(exc).startswith(f)), None)
                self.add_error(field, str(exc))
        return data

    def changes(self) -> dict:
        return settings_of(self.cleaned_data)

    def check_limits(self, assistant, creating: bool) -> None:
        """The operator's limits the publisher applies (``betaassi_django.quotas``), as errors on the named
        fields before anything is published: a session's model, the owner's session count."""
        from betaassi_django import quotas

        data = self.cleaned_data
        try:
            if creating:
                owner = data.get("owner")
                quotas.check_create(assistant, getattr(owner, "pk", owner), data.get("model"), Session.objects)
            else:
                quotas.check_model(assistant, data.get("model"))
        except ValidationError as error:
            self.add_error(None, error)

    def check_free(self, assistant_id: str) -> None:
        session_id = self.cleaned_data.get("session_id")
        if session_id and Session.objects.filter(assistant_id=assistant_id, session_id=session_id).exists():
            self.add_error("session_id", f"The assistant already has a session {session_id!r}.")


def publish(form: SessionForm, assistant, creating: bool) -> str:
    """Publish the form's change; returns the event id. Raises ``BackendFailed`` (nothing published)."""
    session = form.instance
    try:
        if creating:
            data = form.cleaned_data
            return assistant.sessions.create(data["session_id"], owner=data["owner"], **form.changes())
        return assistant.sessions.update(session.session_id, **form.changes())
    except openai.APIError as error:
        raise BackendFailed(f"Publishing the session {form.cleaned_data.get('session_id') or session.session_id}",
                            error) from error
    except (ValueError, ValidationError) as error:  # no publish queue, or a refusal the form did not foresee
        failure = BackendFailed(f"Publishing the session {form.cleaned_data.get('session_id') or session.session_id}",
                                "; ".join(error.messages if isinstance(error, ValidationError) else [str(error)]))
        # A refusal naming a field (a quota on owner, the model allow-list on model) is shown on that field.
        failure.field = next(iter(getattr(error, "error_dict", {})), None)
        raise failure from error


def publish_delete(assistant, session: Session) -> str:
    try:
        return assistant.sessions.delete(session.session_id)
    except openai.APIError as error:
        raise BackendFailed(f"Publishing the deletion of session {session.session_id}", error) from error
