"""Vector stores in the admin (registered by ``assistants_api/admin.py``, which imports this module).

Every write goes through the same functions as the API: a new store through ``vector_stores.create_store``, an
added file through ``vector_stores.add_file`` (ingestion runs in the background, as for the API), a deleted store
through ``vector_stores.delete_store``. The admin only adds forms.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import Count, Q, Sum
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html

from betaassi_django.templatetags.betaassi import short_id

from ..errors import ApiError
from ..models import File, VectorStore, VectorStoreFile
from . import files, ingestion, vector_stores
from .admin import size_cell, when_unix


def _file_choices(exclude_store: VectorStore | None = None) -> list[tuple[str, str]]:
    chosen = File.objects.filter(purpose__in=files.SUPPORTED_PURPOSES).order_by("-seq")
    if exclude_store is not None:
        chosen = chosen.exclude(id__in=exclude_store.files.values("file_id"))
    return [(file_id, f"{filename} ({file_id})") for file_id, filename in chosen.values_list("id", "filename")[:500]]


class VectorStoreForm(forms.ModelForm):
    """A store's name, and files to add to it (each ingested in the background)."""

    add_files = forms.MultipleChoiceField(
        required=False, label="Add files", widget=forms.CheckboxSelectMultiple,
        help_text="Uploaded files (the newest 500 not in the store yet): each is parsed, chunked and indexed in the "
                  "background; its status shows below.")

    class Meta:
        model = VectorStore
        fields = ("name",)
        widgets = {"name": forms.TextInput(attrs={"class": "vTextField"})}  # one line, though the column is text

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:  # not on a read-only (view permission) page
            self.fields["name"].required = False
            self.fields["add_files"].choices = _file_choices(self.instance if self.instance.pk else None)


class StoreFilesFormSet(BaseInlineFormSet):
    def add_fields(self, form, index) -> None:
        super().add_fields(form, index)
        if "DELETE" in form.fields:  # a checkbox in a table cell: named for screen readers (its heading is apart)
            form.fields["DELETE"].widget.attrs["aria-label"] = "Take out of the store"

    def delete_existing(self, obj: VectorStoreFile, commit: bool = True) -> None:
        """As the API takes a file out of a store (waiting for an ingestion writing its chunks)."""
        if commit:
            ingestion.delete_files(VectorStoreFile.objects.filter(pk=obj.pk))


class VectorStoreFileInline(admin.TabularInline):
    model = VectorStoreFile
    formset = StoreFilesFormSet
    fields = ("file", "status", "error", "usage", "added")
    readonly_fields = fields
    extra = 0
    can_delete = True
    verbose_name = "file in this store"
    verbose_name_plural = "files in this store (delete one to take it out of the store; the file stays)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # files are added with "Add files" above, through vector_stores.add_file

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    # Rows follow the store's permissions: who may view the store sees its files, who may change it removes them.
    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("assistants_api.view_vectorstore") or self.has_delete_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("assistants_api.change_vectorstore")

    @admin.display(description="file")
    def file(self, obj: VectorStoreFile) -> str:
        found = File.objects.filter(id=obj.file_id).values_list("pk", "filename").first()
        if found is None:
            return short_id(obj.file_id)
        url = reverse("admin:assistants_api_file_change", args=(quote(found[0]),))
        return format_html('<a href="{}">{}</a> {}', url, found[1], short_id(obj.file_id))

    @admin.display(description="last error")
    def error(self, obj: VectorStoreFile) -> str:
        if not obj.last_error:
            return "-"
        return f"{obj.last_error.get('code', '')}: {obj.last_error.get('message', '')}"

    @admin.display(description="usage")
    def usage(self, obj: VectorStoreFile) -> str:
        return size_cell(obj.usage_bytes)

    @admin.display(description="added")
    def added(self, obj: VectorStoreFile) -> str:
        return when_unix(obj.created_at)


@admin.register(VectorStore)
class VectorStoreAdmin(admin.ModelAdmin):
    form = VectorStoreForm
    list_display = ("title", "state", "completed", "in_progress", "failed", "total", "usage", "created", "store_id")
    search_fields = ("name", "id")
    inlines = [VectorStoreFileInline]
    ordering = ("-seq",)

    def get_queryset(self, request):
        files_of = "files__status"
        return super().get_queryset(request).annotate(
            total_files=Count("files"), usage_sum=Sum("files__usage_bytes"),
            **{f"{status}_files": Count("files", filter=Q(**{files_of: status}))
               for status in ("completed", "in_progress", "failed")})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        store = self.get_object(request, object_id)
        if store is not None and store.name:  # headed by its name, as an assistant's page is (its id below)
            extra_context = {**(extra_context or {}), "subtitle": store.name}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # a new store's files are chosen in "Add files"

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "add_files")
        shown = ("store_id", "state", "total", "usage", "created", "last_active", "expires")
        return ("name", "add_files", *shown) if self.has_change_permission(request, obj) else ("name", *shown)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("store_id", "state", "total", "usage", "created", "last_active", "expires")

    @admin.display(description="name", ordering="name")
    def title(self, obj: VectorStore) -> str:
        return obj.name or "(no name)"

    @admin.display(description="id", ordering="seq")
    def store_id(self, obj: VectorStore) -> str:
        return short_id(obj.id)

    @admin.display(description="status")
    def state(self, obj: VectorStore) -> str:
        if vector_stores.is_expired(obj):
            return "expired"
        return "in_progress" if obj.in_progress_files else "completed"

    @admin.display(description="completed", ordering="completed_files")
    def completed(self, obj: VectorStore) -> int:
        return obj.completed_files

    @admin.display(description="in progress", ordering="in_progress_files")
    def in_progress(self, obj: VectorStore) -> int:
        return obj.in_progress_files

    @admin.display(description="failed", ordering="failed_files")
    def failed(self, obj: VectorStore) -> int:
        return obj.failed_files

    @admin.display(description="files", ordering="total_files")
    def total(self, obj: VectorStore) -> int:
        return obj.total_files

    @admin.display(description="usage", ordering="usage_sum")
    def usage(self, obj: VectorStore) -> str:
        return size_cell(obj.usage_sum)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: VectorStore) -> str:
        return when_unix(obj.created_at)

    @admin.display(description="last active")
    def last_active(self, obj: VectorStore) -> str:
        return when_unix(obj.last_active_at)

    @admin.display(description="expires")
    def expires(self, obj: VectorStore) -> str:
        return when_unix(obj.expires_at) if obj.expires_at else "never"

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.save(update_fields=["name"])
            return
        data = form.cleaned_data
        created = vector_stores.create_store({"name": data["name"] or None, "file_ids": data["add_files"]})
        for field in VectorStore._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding, obj._state.db = False, created._state.db

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            return
        added = []
        for file_id in form.cleaned_data["add_files"]:
            try:
                vector_stores.add_file(form.instance, file_id)
            except ApiError as error:
                messages.warning(request, error.message)
            else:
                added.append(file_id)
        if added:
            messages.info(request, f"Added {len(added)} file(s); they are ingested in the background.")

    def delete_model(self, request, obj: VectorStore) -> None:
        vector_stores.delete_store(obj.id)

    def delete_queryset(self, request, queryset) -> None:
        for store_id in list(queryset.values_list("id", flat=True)):
            vector_stores.delete_store(store_id)
