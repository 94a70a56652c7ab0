"""``AssistantAdmin``: the admin of an assistant model, registered in one line per subclass.

    admin.site.register(Support, AssistantAdmin)

Saving writes through to the backend (and a new assistant gets its publish
queue), deleting deletes remotely with the queue and the session threads; the
subclass's own fields are validated by the metadata codec, so a value that does
not fit is a form error, not a 500.
"""

from __future__ import annotations

import openai
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join

from betaassi_django.client import get_client
from betaassi_django.metadata import TYPE_KEY
from betaassi_django.models import Session, assistant_models
from betaassi_django.publishing import status
from betaassi_django.templatetags.betaassi import short_id

from . import queue_actions, queue_page
from .audit import CHANGE, log_action, log_each
from .common import (
    INFORMATIVE_READ,
    BackendAdminMixin,
    BackendFailed,
    BackendFormMixin,
    admin_url,
    confirm_then,
    describe,
    informative_reads_failed,
    log_deleted,
)
from .deletion import with_sessions
from .queue_actions import NO_QUEUE
from .session_inline import SessionInline


class RemoteModelForm(BackendFormMixin, forms.ModelForm):
    """A model form that also checks what the backend would refuse: metadata limits, null characters."""

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.errors:
            return
        try:
            self.instance.validate_for_backend()
        except ValidationError as exc:
            self._update_errors(exc)


def failure_text(shown: str, failure) -> str:
    """The warning for an assistant whose queue processing fails."""
    when = f"; next attempt after {failure.retry_at:%H:%M:%S} UTC" if failure.retry_at else ""
    return (f"Processing the publish queue of {shown} failed {failure.failures} time(s) "
            f"in a row: {failure.last_error}{when}. Its events stay pending; other assistants are not held up.")


def warn_failing_queues(request: HttpRequest, model) -> None:
    """One warning per assistant of this type whose publish-queue processing fails (from the local record)."""
    from betaassi_django.publishing.health import failing

    rows = failing(list(model.objects.values_list("pk", flat=True)))
    names = dict(model.objects.filter(pk__in=list(rows)).values_list("pk", "name"))
    for assistant_id, failure in rows.items():
        messages.warning(request, failure_text(names.get(assistant_id) or assistant_id, failure))


class AssistantTypeFilter(admin.SimpleListFilter):
    """Every assistant type in this admin; each one's assistants are that type's own changelist."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        site = model_admin.admin_site
        return [(m.type_label(), m.type_label()) for m in assistant_models() if site.is_registered(m)]

    def queryset(self, request, queryset):
        return queryset.filter(**{f"metadata__{TYPE_KEY}": self.value()}) if self.value() else queryset

    def choices(self, changelist):
        current = changelist.model.type_label()
        for model in assistant_models():
            url = admin_url(model, "changelist")
            if url is None:
                continue
            yield {"selected": model.type_label() == current, "query_string": url,
                   "display": f"{model.type_label()} ({model.objects.count()})"}


class AssistantAdmin(BackendAdminMixin, admin.ModelAdmin):
    """The admin of any ``BaseAssistant`` subclass. Register it for each of yours."""

    form = RemoteModelForm
    list_display = ("display_name", "type_label", "model", "session_count", "queue_lag", "backend_id")
    list_display_links = ("display_name",)
    search_fields = ("name", "id")
    list_filter = (AssistantTypeFilter, "model")
    list_per_page = 25  # each row's lag is read from the backend
    inlines = [SessionInline]
    actions = ["delete_selected", "apply_pending_now", "sync_from_backend"]
    change_form_template = "admin/betaassi_django/assistant/change_form.html"
    change_list_template = "admin/betaassi_django/assistant/change_list.html"
    readonly_fields = ("id", "betaassi_type", "created_at", "synced_at", "metadata_table", "queue_summary")

    # -- the changelist ---------------------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        extra = {"has_change_permission": self.has_change_permission(request), **(extra_context or {})}
        if request.method == "GET":
            warn_failing_queues(request, self.model)
        return super().changelist_view(request, extra)

    def get_queryset(self, request):
        sessions = Session.objects.filter(assistant_id=OuterRef("pk")).values("assistant_id").annotate(
            n=Count("pk")).values("n")
        return super().get_queryset(request).annotate(
            sessions_count=Coalesce(Subquery(sessions, output_field=IntegerField()), Value(0)))

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        if request.method == "GET":
            self._read_lags(request, changelist.result_list)
        return changelist

    def _read_lags(self, request: HttpRequest, assistants) -> None:
        """Each listed assistant's pending events, from the backend; the first failure stops the reads."""
        api = get_client().with_options(**INFORMATIVE_READ)
        for assistant in assistants:
            if informative_reads_failed(request):
                return
            try:
                state = status.queue_status(assistant, api=api)
            except openai.APIError as error:
                informative_reads_failed(request, error)
                return
            except ValueError:  # no publish queue (an assistant made outside betaassi)
                assistant.queue_lag_text = "no queue"
                continue
            assistant.queue_lag_text = f"{state.lag}{'' if state.complete else '+'}"

    @admin.display(description="name", ordering="name")
    def display_name(self, obj) -> str:
        return obj.name or "(no name)"

    @admin.display(description="type")
    def type_label(self, obj) -> str:
        return (obj.metadata or {}).get(TYPE_KEY) or obj.type_label()

    @admin.display(description="sessions", ordering="sessions_count")
    def session_count(self, obj) -> int:
        return getattr(obj, "sessions_count", 0)

    @admin.display(description="id", ordering="id")
    def backend_id(self, obj) -> str:
        return short_id(obj.id)

    @admin.display(description="queue lag")
    def queue_lag(self, obj) -> str:
        url = admin_url(type(obj), "queue", obj.pk)
        return format_html('<a href="{}">{}</a>', url, getattr(obj, "queue_lag_text", "unknown"))

    # -- the change form --------------------------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        model = self.model
        own = [f.name for f in model.metadata_fields() if f.editable]
        fieldsets = [(None, {"fields": list(model.writable_fields)})]
        if own:
            fieldsets.append((f"{model.__name__} fields (kept in the assistant's metadata)", {"fields": own}))
        if obj is not None:
            fieldsets.append(("Backend", {"fields": list(self.readonly_fields)}))
        return fieldsets

    @admin.display(description="betaassi_type")
    def betaassi_type(self, obj) -> str:
        return self.type_label(obj)

    @admin.display(description="metadata (as last read)")
    def metadata_table(self, obj) -> str:
        rows = sorted((obj.metadata or {}).items())
        return format_html("<table>{}</table>", format_html_join(
            "", "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>", rows)) if rows else "-"

    @admin.display(description="publish queue")
    def queue_summary(self, obj) -> str:
        return format_html('<a href="{}">events, high water mark and lag</a>', admin_url(type(obj), "queue", obj.pk))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """The page's title names the assistant (its id when it has no name), as its breadcrumb does."""
        if obj is not None:
            context["subtitle"] = obj.name or obj.id
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change) -> None:
        try:
            obj.save()
        except openai.APIError as error:
            raise BackendFailed(f"Saving {obj.name or 'the assistant'} in the backend", error) from error

    def delete_model(self, request, obj) -> None:
        try:
            obj.delete()
        except openai.APIError as error:
            raise BackendFailed(f"Deleting {obj.name or obj.id} in the backend", error) from error

    def get_deleted_objects(self, objs, request):
        """Django's, with each assistant's sessions (linked by id, so the collector does not see them)."""
        return with_sessions(objs, request, super().get_deleted_objects)

    def save_formset(self, request, form, formset, change) -> None:
        formset.save()
        for message in getattr(formset, "published", []):
            messages.info(request, message)
        for message in getattr(formset, "failures", []):
            messages.error(request, message)

    # -- actions --------------------------------------------------------------------------------------

    @confirm_then("delete_selected")
    def delete_selected(self, request, queryset):
        """Delete selected %(verbose_name_plural)s (in the backend too)"""
        deleted = 0
        for obj in queryset:
            shown, object_id = str(obj.name or obj.id), obj.pk
            try:
                obj.delete()
            except openai.APIError as error:
                messages.error(request, f"Deleting {shown} failed: {describe(error)}. It was kept; "
                                        f"{deleted} deleted before it.")
                return None
            log_deleted(request, self.model, object_id, shown)
            deleted += 1
        messages.success(request, f"Deleted {deleted} assistant(s) with their publish queues and session threads.")
        return None

    @admin.action(permissions=["change"], description="Apply pending events now")
    def apply_pending_now(self, request, queryset) -> None:
        for assistant in queryset:
            self._apply_now(request, assistant)

    @admin.action(permissions=["change"], description="Sync from backend")
    def sync_from_backend(self, request, queryset) -> None:
        for assistant in queryset:
            self._sync(request, assistant)

    def _report(self, request: HttpRequest, assistant_id: str, shown: str, level: int, text: str,
                flag: int = CHANGE) -> None:
        """Tell the operator what an action did, and write the same sentence to the assistant's history."""
        messages.add_message(request, level, text)
        log_action(request, self.model, assistant_id, shown, text, flag)

    def _apply_now(self, request: HttpRequest, assistant) -> None:
        shown = assistant.name or assistant.id
        self._report(request, assistant.id, shown, *queue_actions.apply_now(request, assistant))

    def _sync(self, request: HttpRequest, assistant) -> None:
        # Read the id and name first: a vanished assistant's mirror is deleted, and its pk with it.
        assistant_id, shown = assistant.id, assistant.name or assistant.id
        self._report(request, assistant_id, shown, *queue_actions.sync_one(assistant))

    # -- the publish-queue page -------------------------------------------------------------------------

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [path("sync/", self.admin_site.admin_view(self.sync_all_view), name="{}_{}_sync".format(*info)),
                path("<path:object_id>/queue/", self.admin_site.admin_view(self.queue_view),
                     name="{}_{}_queue".format(*info)), *super().get_urls()]

    def sync_all_view(self, request: HttpRequest):
        """Every assistant of every type re-read from the backend, then each one's sessions from its registry."""
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied
        level, text = queue_actions.sync_all()
        messages.add_message(request, level, text)
        # One entry for the whole sync (the recent actions list), and one in each mirrored assistant's history.
        log_action(request, self.model, None, "Sync all from backend", text)
        log_each(request, [a for m in assistant_models() for a in m.objects.all()], f"Sync all from backend: {text}")
        return HttpResponseRedirect(admin_url(self.model, "changelist"))

    def queue_view(self, request: HttpRequest, object_id: str):
        """One assistant's publish queue: its events and their status; apply now; sync from the backend."""
        object_id = unquote(object_id)  # the URL carries the id quoted, as every admin URL does
        assistant = self.get_object(request, object_id)
        if assistant is None:
            raise Http404(f"No {self.model._meta.verbose_name} {object_id}.")
        if not self.has_view_permission(request, assistant):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_change_permission(request, assistant):
                raise PermissionDenied
            if "apply" in request.POST:
                self._apply_now(request, assistant)
            elif "sync" in request.POST:
                self._sync(request, assistant)
                if not type(assistant).objects.filter(pk=assistant.pk).exists():
                    return HttpResponseRedirect(admin_url(self.model, "changelist"))
            return HttpResponseRedirect(admin_url(self.model, "queue", assistant.pk))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": assistant,
                   "title": f"Publish queue of {assistant.name or assistant.id}",
                   "has_change_permission": self.has_change_permission(request, assistant),
                   "change_url": admin_url(self.model, "change", assistant.pk),
                   "failure": status.failure(assistant.id), **queue_page.local_context(assistant)}
        if context["failure"] is not None:
            messages.warning(request, failure_text(assistant.name or assistant.id, context["failure"]))
        try:
            context.update(queue_page.queue_context(request, assistant))
        except openai.APIError as error:
            context["backend_error"] = describe(error)
            messages.error(request, f"The publish queue cannot be read: {describe(error)}.")
        except ValueError:
            context["backend_error"] = f"this assistant {NO_QUEUE}"
            messages.warning(request, f"{assistant.name or assistant.id} {NO_QUEUE}.")
        return TemplateResponse(request, "admin/betaassi_django/assistant/publish_queue.html", context)
