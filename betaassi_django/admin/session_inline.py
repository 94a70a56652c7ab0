"""The sessions of one assistant on its admin page: the inline and its formset, which publish instead of saving.

Each added, edited or deleted row publishes ``session.create`` / ``session.update`` / ``session.delete`` (see
``session_forms``); the row changes once the processor applies the event.
"""

from __future__ import annotations

from functools import partial

from django.contrib import admin
from django.contrib.admin.checks import InlineModelAdminChecks
from django.core.exceptions import ValidationError
from django.forms.models import BaseModelFormSet, modelformset_factory
from django.utils.html import format_html

from betaassi_django.models import Session
from betaassi_django.publishing.status import QueueStatus
from betaassi_django.templatetags.betaassi import when_cell

from . import session_forms
from .common import BackendFailed, admin_url


class SessionFormSet(BaseModelFormSet):
    """The sessions of one assistant (``instance``); saving publishes events instead of writing rows."""

    states: dict[str, QueueStatus] = {}
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
            session.status_text = session_forms.status_text(session, self.states)
        return rows

    def add_fields(self, form, index) -> None:
        super().add_fields(form, index)
        if "DELETE" in form.fields:  # a checkbox in a table cell: named for screen readers (its heading is apart)
            form.fields["DELETE"].widget.attrs["aria-label"] = "Delete"

    def pending_creations(self) -> list[dict]:
        return session_forms.pending_creations(self.states, {})

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
                    event_id = session_forms.publish_delete(assistant, session)
                    self.deleted_objects.append(session)
                    self.published.append(f"Published session.delete for {session.session_id} (event {event_id}).")
                elif form.has_changed():
                    event_id = session_forms.publish(form, assistant, creating=False)
                    self.changed_objects.append((session, form.changed_data))
                    self.published.append(f"Published session.update for {session.session_id} (event {event_id}).")
            except BackendFailed as failure:
                self.failures.append(failure.message)
        for form in self.extra_forms:
            if not form.has_changed() or self._should_delete_form(form):
                continue
            try:
                event_id = session_forms.publish(form, assistant, creating=True)
            except BackendFailed as failure:
                self.failures.append(failure.message)
                continue
            self.new_objects.append(form.instance)
            self.published.append(f"Published session.create for {form.cleaned_data['session_id']} "
                                  f"(event {event_id}); it is listed once the processor applies it.")
        return self.new_objects


def guarded_form(form: type[session_forms.SessionForm], *, can_add: bool,
                 can_change: bool) -> type[session_forms.SessionForm]:
    """The form as Django's inlines guard it: a row the user may not add or change never "has changed"."""

    class PermissionGuardedForm(form):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # A table's cells have their column's heading, not a <label>: name each control for screen readers.
            for field in self.fields.values():
                field.widget.attrs.setdefault("aria-label", str(field.label))

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
    form = session_forms.SessionForm
    template = "admin/betaassi_django/assistant/sessions_inline.html"
    fields = (*session_forms.SESSION_FIELDS, "status", "last_used", "chat")
    readonly_fields = ("status", "last_used", "chat")
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
            formset=SessionFormSet, fields=session_forms.SESSION_FIELDS, extra=self.get_extra(request, obj),
            min_num=self.get_min_num(request, obj), max_num=self.get_max_num(request, obj),
            can_delete=self.can_delete and self.has_delete_permission(request, obj),
            formfield_callback=partial(self.formfield_for_dbfield, request=request))
        formset.states = session_forms.read_queues(request, [obj]) if obj is not None and obj.pk else {}
        return formset

    @admin.display(description="status")
    def status(self, obj) -> str:
        return getattr(obj, "status_text", "") if obj.pk else ""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        """The owner as a plain select: the add/change/view icons of each row would widen the table."""
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "owner" and field is not None and hasattr(field.widget, "widget"):
            field.widget = field.widget.widget
        return field

    @admin.display(description="last used")
    def last_used(self, obj) -> str:
        return when_cell(obj.touched_at) if obj.pk else ""

    @admin.display(description="chat")
    def chat(self, obj) -> str:
        url = session_forms.chat_url(obj) if obj.pk else None
        return format_html('<a href="{}">open</a>', url) if url else ""
