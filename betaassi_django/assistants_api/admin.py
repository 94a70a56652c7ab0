"""API keys of the embedded API in the admin: issue with a scope (the key is shown once), list, revoke. Files and
vector stores are in ``knowledge/admin.py`` and ``knowledge/store_admin.py``, registered by the imports below.

Only a key's SHA-256 hash is stored. The raw key is rendered once, in the
response to the form that created it (never through the messages framework,
whose cookie would carry it), and the page is marked not to be cached.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from betaassi_django.templatetags.betaassi import when_cell

from .knowledge import admin as file_admin  # noqa: F401 (registers files)
from .knowledge import store_admin  # noqa: F401 (registers vector stores)
from .models import ApiKey, Assistant

ISSUED_KEY_ATTR = "_betaassi_issued_key"


class ApiKeyAddForm(forms.ModelForm):
    """The scope is chosen when the key is issued: read-only or not, and the assistants it is limited to."""

    assistant_ids = forms.MultipleChoiceField(
        required=False, label="Assistants", widget=forms.CheckboxSelectMultiple,
        help_text="Limit the key to these assistants and their threads. None chosen: every assistant.")

    class Meta:
        model = ApiKey
        fields = ("name", "read_only", "assistant_ids")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["assistant_ids"].choices = [
            (assistant_id, f"{name or '(no name)'} ({assistant_id})")
            for assistant_id, name in Assistant.objects.order_by("seq").values_list("id", "name")]


class RevokedFilter(admin.SimpleListFilter):
    """Keys in use or revoked: what an operator asks, rather than whether the revoked date is empty."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope", "issued", "used", "revoked_at")
    list_filter = (RevokedFilter, "read_only")
    search_fields = ("name", "prefix")
    actions = ["revoke"]

    @admin.display(description="created", ordering="created")
    def issued(self, obj: ApiKey) -> str:
        return when_cell(obj.created)

    @admin.display(description="last used", ordering="last_used")
    def used(self, obj: ApiKey) -> str:
        return when_cell(obj.last_used) if obj.last_used else "never"

    @admin.display(description="revoked", ordering="revoked")
    def revoked_at(self, obj: ApiKey) -> str:
        return when_cell(obj.revoked)

    @admin.display(description="Scope")
    def scope(self, obj: ApiKey) -> str:
        return obj.scope_label

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "read_only", "assistant_ids")
        return ("name", "prefix", "scope", "created", "last_used", "revoked")

    def get_readonly_fields(self, request, obj=None):
        # A key's scope is fixed when it is issued: to change it, issue another key and revoke this one.
        return () if obj is None else ("prefix", "scope", "created", "last_used", "revoked")

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        data = form.cleaned_data
        issued, raw = ApiKey.issue(data["name"], read_only=data["read_only"], assistant_ids=data["assistant_ids"])
        obj.pk, obj.prefix, obj.hashed_key, obj.created = issued.pk, issued.prefix, issued.hashed_key, issued.created
        obj.read_only, obj.assistant_ids = issued.read_only, issued.assistant_ids
        obj._state.adding = False
        setattr(request, ISSUED_KEY_ATTR, raw)

    def response_add(self, request, obj, post_url_continue=None):
        """The one page that ever shows the key."""
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "API key created",
                   "key": obj, "raw_key": getattr(request, ISSUED_KEY_ATTR)}
        response = TemplateResponse(request, "admin/assistants_api/apikey/issued.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(permissions=["change"], description="Revoke selected API keys")
    def revoke(self, request, queryset) -> None:
        active = list(queryset.filter(revoked__isnull=True))
        names = sorted(key.name for key in active)
        count = queryset.filter(pk__in=[key.pk for key in active]).update(revoked=timezone.now())
        for key in active:  # the audit trail: who revoked which key, when
            self.log_change(request, key, "Revoked.")
        if count:
            messages.success(request, f"Revoked {count} key(s): {', '.join(names)}. Requests with them now get 401.")
        else:
            messages.warning(request, "The selected keys were already revoked.")
