"""Sessions in the admin: the form, the inline on each assistant's page, and what ``SessionAdmin`` shares.

The registry in the backend is the source of truth and changes only through
the publish queue, so adding, editing and deleting a session here publishes
``session.create`` / ``session.update`` / ``session.delete``; the mirror row
appears, changes or goes once the processor applies the event. Until then the
row (or, for a new session, the list of pending creations) says "pending".
"""

from __future__ import annotations

from functools import partial

import openai
from django import forms
from django.contrib import admin
from django.contrib.admin.checks import InlineModelAdminChecks
from django.core.exceptions import ValidationError
from django.forms.models import BaseModelFormSet, modelformset_factory
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from betaassi_django.client import get_client
from betaassi_django.forms import KINDS
from betaassi_django.models import Session
from betaassi_django.publishing import status as queue
from betaassi_django.publishing.events import Event, Rejected, check_session_args, check_session_id

from .common import INFORMATIVE_READ, BackendFailed, admin_url, informative_reads_failed

SESSION_FIELDS = ("session_id", "owner", "kind", "context_messages", "model")
UNKNOWN = "unknown (backend unreachable)"


def all_assistants():
    from betaassi_django.views import all_assistants as every_assistant

    return every_assistant()



def chat_url(session: Session) -> str | None:
    try:
        return reverse("betaassi:chat", kwargs={"assistant_id": session.assistant_id, "session_id": session.session_id})
    except NoReverseMatch:
        return None


def read_queues(request: HttpRequest, assistants) -> dict[str, queue.QueueStatus]:
    """The pending events of each assistant, from the backend; on a failure, a warning and what was read."""
    api = get_client().with_options(**INFORMATIVE_READ)
    states: dict[str, queue.QueueStatus] = {}
    for assistant in assistants:
        if informative_reads_failed(request):
            break
        try:
            states[assistant.id] = queue.queue_status(assistant, api=api)
        except ValueError:  # no publish queue: nothing can be pending
            continue
        except openai.APIError as error:
            informative_reads_failed(request, error)
    return states


def status_text(session: Session, states: dict[str, queue.QueueStatus]) -> str:
    state = states.get(session.assistant_id)
    if state is None:
        return UNKNOWN
    ops = state.pending_by_session().get(session.session_id)
    return "pending: " + ", ".join(op.removeprefix("session.") for op in ops) if ops else "applied"


def pending_creations(states: dict[str, queue.QueueStatus], names: dict[str, str]) -> list[dict]:
    """Sessions published for creation and not applied yet (they have no mirror row)."""
    rows = []
    for assistant_id, state in states.items():
        for event_id, event in state.pending:
            if isinstance(event, Event) and event.op == "session.create":
                rows.append({"event_id": event_id, "assistant": names.get(assistant_id, assistant_id),
                             "session_id": event.session_id, "kind": event.args.get("kind"),
                             "context_messages": event.args.get("context_messages"),
                             "model": event.args.get("model") or "", "owner": event.args.get("owner")})
    return rows


class SessionForm(forms.ModelForm):
    """A session's settings, checked by the same rules the processor applies (a form error, never a 500)."""

    kind = forms.ChoiceField(choices=KINDS, initial="default")
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
        data = super().clean()
        if data.get("kind") != "manyshots":
            data["context_messages"] = None
        elif not data.get("context_messages") and "context_messages" not in self.errors:
            self.add_error("context_messages", "Say how many messages 'last N messages' keeps.")
        data["model"] = data.get("model") or None
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
        """kind, N and model as ``update_session`` takes them."""
        data = self.cleaned_data
        return {"kind": data["kind"], "context_messages": data.get("context_messages"), "model": data.get("model")}

    def check_limits(self, assistant, creating: bool) -> None:
        """The operator's limits the publisher applies (``betaassi_django.quotas``), as errors on the named
        fields before anything is published: a session's model, the owner's session count."""
        from betaassi_django import quotas

        data = self.cleaned_data
        try:
            if creating:
                owner = data.get("owner")
                quotas.check_create(assistant, getattr(owner, "pk", owner), data.get("model"))
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
            return assistant.create_session(data["session_id"], owner=data["owner"], **form.changes())
        return assistant.update_session(session.session_id, **form.changes())
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
        return assistant.delete_session(session.session_id)
    except openai.APIError as error:
        raise BackendFailed(f"Publishing the deletion of session {session.session_id}", error) from error


class SessionFormSet(BaseModelFormSet):
    """The sessions of one assistant (``instance``); saving publishes events instead of writing rows."""

    states: dict[str, queue.QueueStatus] = {}
    #: Sessions shown at most (an assistant may hold 10,000); the rest are in the sessions changelist.
    limit = 50

    def __init__(self, data=None, files=None, instance=None, save_as_new=False, prefix=None, queryset=None,
                 **kwargs) -> None:
        self.instance = instance
        rows = Session.objects.filter(assistant_id=instance.pk) if instance is not None and instance.pk else None
        rows = (rows if rows is not None else Session.objects.none()).order_by("session_id")
        self.total = rows.count()
        self.all_sessions_url = admin_url(Session, "changelist", assistant=instance.pk) if self.total else ""
        super().__init__(data, files, prefix=prefix, queryset=rows[: self.limit], **kwargs)

    @classmethod
    def get_default_prefix(cls) -> str:
        return "sessions"

    def get_queryset(self):
        rows = super().get_queryset()
        for session in rows:  # evaluated once and cached: the forms get these very instances
            session.status_text = status_text(session, self.states)
        return rows

    def pending_creations(self) -> list[dict]:
        return pending_creations(self.states, {})

    def clean(self) -> None:
        super().clean()
        wanted = [f.cleaned_data.get("session_id") for f in self.extra_forms
                  if f.has_changed() and not self._should_delete_form(f) and f.cleaned_data]
        for form in self.extra_forms:
            if self.instance is not None and self.instance.pk and form.has_changed() and form.cleaned_data:
                form.check_free(self.instance.pk)
        for form in self.forms:
            if (self.instance is not None and self.instance.pk and form.has_changed() and not form.errors
                    and not self._should_delete_form(form)):
                form.check_limits(self.instance, creating=form.instance._state.adding)
        if len(wanted) != len(set(wanted)):
            raise ValidationError("Two new sessions have the same id.")

    def save(self, commit: bool = True) -> list:
        """Publish one event per change; ``published`` and ``failures`` say what happened to each."""
        assistant = self.instance
        self.new_objects, self.changed_objects, self.deleted_objects = [], [], []
        self.published, self.failures = [], []
        for form in self.initial_forms:
            session = form.instance
            if session.pk is None:  # no longer among the rows shown (applied changes moved it meanwhile)
                self.failures.append("A session changed while the form was open; nothing was published for it.")
                continue
            try:
                if self._should_delete_form(form):
                    event_id = publish_delete(assistant, session)
                    self.deleted_objects.append(session)
                    self.published.append(f"Published session.delete for {session.session_id} (event {event_id}).")
                elif form.has_changed():
                    event_id = publish(form, assistant, creating=False)
                    self.changed_objects.append((session, form.changed_data))
                    self.published.append(f"Published session.update for {session.session_id} (event {event_id}).")
            except BackendFailed as failure:
                self.failures.append(failure.message)
        for form in self.extra_forms:
            if not form.has_changed() or self._should_delete_form(form):
                continue
            try:
                event_id = publish(form, assistant, creating=True)
            except BackendFailed as failure:
                self.failures.append(failure.message)
                continue
            self.new_objects.append(form.instance)
            self.published.append(f"Published session.create for {form.cleaned_data['session_id']} "
                                  f"(event {event_id}); it is listed once the processor applies it.")
        return self.new_objects


def guarded_form(form: type[SessionForm], *, can_add: bool, can_change: bool) -> type[SessionForm]:
    """The form as Django's inlines guard it: a row the user may not add or change never "has changed"."""

    class PermissionGuardedForm(form):
        def has_changed(self) -> bool:
            if self.instance._state.adding and not can_add:
                return False
            if not self.instance._state.adding and not can_change:
                return False
            return super().has_changed()

    PermissionGuardedForm.__name__ = form.__name__
    return PermissionGuardedForm


class SessionInlineChecks(InlineModelAdminChecks):
    """Sessions point at their assistant by id (any assistant model), not by a foreign key."""

    def _check_relation(self, obj, parent_model):
        return []

    def _check_exclude_of_parent_model(self, obj, parent_model):
        return []


class SessionInline(admin.TabularInline):
    """The assistant's sessions on its page: edit kind, N and model, add and delete (each publishes an event)."""

    model = Session
    checks_class = SessionInlineChecks
    form = SessionForm
    template = "admin/betaassi_django/assistant/sessions_inline.html"
    fields = (*SESSION_FIELDS, "status", "touched_at", "chat")
    readonly_fields = ("status", "touched_at", "chat")
    extra = 1
    verbose_name_plural = "sessions (changes are published to the queue)"

    def get_formset(self, request, obj=None, **kwargs):
        """Django's ``InlineModelAdmin.get_formset`` permission rules, over a formset of rows linked by id.

        Without add permission a new row, without change permission an edited row, counts as unchanged (so
        nothing is published for it); without delete permission the formset has no DELETE field at all.
        """
        formset = modelformset_factory(
            Session, form=guarded_form(self.form, can_add=self.has_add_permission(request, obj),
                                       can_change=self.has_change_permission(request, obj)),
            formset=SessionFormSet, fields=SESSION_FIELDS, extra=self.get_extra(request, obj),
            min_num=self.get_min_num(request, obj), max_num=self.get_max_num(request, obj),
            can_delete=self.can_delete and self.has_delete_permission(request, obj),
            formfield_callback=partial(self.formfield_for_dbfield, request=request))
        formset.states = read_queues(request, [obj]) if obj is not None and obj.pk else {}
        return formset

    @admin.display(description="status")
    def status(self, obj) -> str:
        return getattr(obj, "status_text", "") if obj.pk else ""

    @admin.display(description="chat")
    def chat(self, obj) -> str:
        url = chat_url(obj) if obj.pk else None
        return format_html('<a href="{}">open</a>', url) if url else ""
