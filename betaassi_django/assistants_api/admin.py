"""API keys of the embedded API in the admin: issue (the key is shown once), list, revoke.

Only a key's SHA-256 hash is stored. The raw key is rendered once, in the
response to the form that created it (never through the messages framework,
whose cookie would carry it), and the page is marked not to be cached.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from .models import ApiKey

ISSUED_KEY_ATTR = "_betaassi_issued_key"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "created", "last_used", "revoked")
    list_filter = (("revoked", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix")
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        return ("name",) if obj is None else ("name", "prefix", "created", "last_used", "revoked")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("prefix", "created", "last_used", "revoked")

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        issued, raw = ApiKey.issue(form.cleaned_data["name"])
        obj.pk, obj.prefix, obj.hashed_key, obj.created = issued.pk, issued.prefix, issued.hashed_key, issued.created
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
        active = queryset.filter(revoked__isnull=True)
        names = sorted(active.values_list("name", flat=True))
        count = active.update(revoked=timezone.now())
        if count:
            messages.success(request, f"Revoked {count} key(s): {', '.join(names)}. Requests with them now get 401.")
        else:
            messages.warning(request, "The selected keys were already revoked.")
