"""``SessionAdmin``: every session of every assistant, as mirrored; adding, editing and deleting publish events.

Its form is ``session_forms.SessionForm`` with the assistant to choose; the same form serves the inline on each
assistant's page (``session_inline``).
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponseRedirect
from django.utils.html import format_html

from betaassi_django.models import Session
from betaassi_django.models.lookup import all_assistants, find_assistant
from betaassi_django.templatetags.betaassi import short_id, shorten, when_cell

from .common import BackendAdminMixin, BackendFailed, admin_url, confirm_then, log_deleted
from .session_forms import (
    SESSION_FIELDS,
    SessionForm,
    chat_url,
    pending_creations,
    publish,
    publish_delete,
    read_queues,
    status_text,
)


class AssistantFilter(admin.SimpleListFilter):
    title = "assistant"
    parameter_name = "assistant"

    def lookups(self, request, model_admin):
        return [(a.id, a.name or shorten(a.id)) for a in all_assistants()]

    def queryset(self, request, queryset):
        return queryset.filter(assistant_id=self.value()) if self.value() else queryset


class SessionAdminForm(SessionForm):
    assistant = forms.ChoiceField(help_text="The assistant that holds the session.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            del self.fields["assistant"]
        else:
            self.fields["assistant"].choices = [(a.id, f"{a.name or a.id} ({a.type_label()})")
                                                for a in all_assistants()]

    def clean(self) -> dict:
        data = super().clean()
        if not self.instance.pk and data.get("assistant"):
            self.check_free(data["assistant"])
        assistant = find_assistant(data.get("assistant") or self.instance.assistant_id)
        if assistant is not None and not self.errors:
            self.check_limits(assistant, creating=not self.instance.pk)
        return data


class SessionAdmin(BackendAdminMixin, admin.ModelAdmin):
    """Every session of every assistant, as mirrored; changes publish events."""

    form = SessionAdminForm
    # Kind, N and model share a column so that status and chat stay on screen at 1280 px beside the filters.
    list_display = ("session_id", "assistant_link", "owner", "settings", "last_used", "status", "chat_link")
    list_filter = ("kind", AssistantFilter)
    search_fields = ("session_id", "assistant_id", "owner__username")
    list_select_related = ("owner",)
    ordering = ("assistant_id", "session_id")
    actions = ["delete_selected"]
    registry_fields = ("thread_id", "created_at", "touched_at", "revision", "status", "chat_link")

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ["assistant", *SESSION_FIELDS]})]
        return [(None, {"fields": ["assistant_link", *SESSION_FIELDS]}), ("Registry", {"fields": self.registry_fields})]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("assistant_link", "session_id", "owner", *self.registry_fields)

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        if request.method == "GET":
            # The queues of the assistants on this page and of the one filtered by: two reads each, whatever
            # the number of assistants in the backend.
            wanted = {s.assistant_id for s in changelist.result_list} | {request.GET.get("assistant")}
            assistants = [a for a in all_assistants() if a.id in wanted]
            states = read_queues(request, assistants)
            by_id = {a.id: a for a in assistants}
            for session in changelist.result_list:
                session.status_text = status_text(session, states)
                session.assistant_obj = by_id.get(session.assistant_id)
            changelist.pending_creations = pending_creations(states, {a.id: a.name or a.id for a in assistants})
        return changelist

    def get_object(self, request, object_id, from_field=None):
        session = super().get_object(request, object_id, from_field)
        if session is not None and request.method == "GET":
            assistant = find_assistant(session.assistant_id)
            session.assistant_obj = assistant
            session.status_text = status_text(session, read_queues(request, [assistant] if assistant else []))
        return session

    @admin.display(description="assistant", ordering="assistant_id")
    def assistant_link(self, obj) -> str:
        assistant = getattr(obj, "assistant_obj", None)
        if assistant is None:
            return format_html("{} (not mirrored)", short_id(obj.assistant_id))
        url = admin_url(type(assistant), "change", assistant.pk)
        shown = assistant.name or short_id(assistant.id)
        return format_html('<a href="{}">{}</a>', url, shown) if url else shown

    @admin.display(description="last used", ordering="touched_at")
    def last_used(self, obj) -> str:
        return when_cell(obj.touched_at)

    @admin.display(description="kind, N, model", ordering="kind")
    def settings(self, obj) -> str:
        """``manyshots, N=2`` and the model below it when the session has its own."""
        kind = f"{obj.kind}, N={obj.context_messages}" if obj.context_messages is not None else obj.kind
        return format_html('<span class="kind">{}</span><br><code class="model">{}</code>', kind, obj.model) \
            if obj.model else kind

    @admin.display(description="status")
    def status(self, obj) -> str:
        return getattr(obj, "status_text", "")

    @admin.display(description="chat")
    def chat_link(self, obj) -> str:
        url = chat_url(obj)
        return format_html('<a class="chat-link" href="{}">open</a>', url) if url else "-"

    # -- publishing instead of saving -------------------------------------------------------------

    def save_model(self, request, obj, form, change) -> None:
        assistant = find_assistant(form.cleaned_data["assistant"] if not change else obj.assistant_id)
        if assistant is None:
            raise BackendFailed("Publishing the session", "the assistant is not mirrored here; sync it first")
        obj.assistant_id = assistant.id
        obj.published_event = publish(form, assistant, creating=not change)

    def log_addition(self, request, obj, message):
        """The session has no row yet (it is only published): log it by name."""
        return LogEntry.objects.create(
            user_id=request.user.pk, content_type_id=ContentType.objects.get_for_model(Session).pk,
            object_id=None, object_repr=f"{obj.session_id} on {obj.assistant_id} (published)"[:200],
            action_flag=ADDITION, change_message=json.dumps(message) if isinstance(message, list) else message)

    def response_add(self, request, obj, post_url_continue=None):
        messages.success(request, f"Published session.create for {obj.session_id} (event {obj.published_event}); "
                                  "it is listed as applied once the processor applies it.")
        return HttpResponseRedirect(admin_url(Session, "changelist", assistant=obj.assistant_id))

    def response_change(self, request, obj):
        messages.success(request, f"Published session.update for {obj.session_id} (event {obj.published_event}); "
                                  "the row changes once the processor applies it.")
        if "_continue" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(admin_url(Session, "changelist"))

    def delete_model(self, request, obj) -> None:
        assistant = find_assistant(obj.assistant_id)
        if assistant is None:  # the assistant is gone: the row is a leftover mirror, nothing to publish
            obj.delete()
            request.betaassi_deleted = f"Removed the mirror of session {obj.session_id} (its assistant is gone)."
            return
        event_id = publish_delete(assistant, obj)
        request.betaassi_deleted = (f"Published session.delete for {obj.session_id} (event {event_id}); "
                                    "the row goes once the processor applies it.")

    def response_delete(self, request, obj_display, obj_id):
        messages.success(request, request.betaassi_deleted)
        return HttpResponseRedirect(admin_url(Session, "changelist"))

    @confirm_then("delete_selected")
    def delete_selected(self, request, queryset):
        """Delete selected sessions (publishes session.delete)"""
        published = 0
        for session in queryset:
            assistant = find_assistant(session.assistant_id)
            try:
                if assistant is None:
                    session.delete()
                else:
                    publish_delete(assistant, session)
            except BackendFailed as failure:
                messages.error(request, f"{failure.message} {published} deletion(s) published before it.")
                return None
            log_deleted(request, Session, session.pk, str(session))
            published += 1
        messages.success(request, f"Published session.delete for {published} session(s); "
                                  "they go once the processor applies them.")
        return None
