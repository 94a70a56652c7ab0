"""Files in the admin (registered by ``assistants_api/admin.py``, which imports this module; vector stores are
in ``store_admin``).

Every write goes through the same functions as the API: an upload through ``files.create_file`` (same purposes,
size limit and name rules), a deletion through ``files.delete_file`` (the bytes leave storage, the file leaves
every vector store). The admin only adds forms.
"""

from __future__ import annotations

import datetime

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from betaassi_django.templatetags.betaassi import short_id, when_cell

from ..errors import ApiError
from ..models import File, VectorStoreFile
from . import files


def when_unix(stamp: int | None) -> str:
    """A Unix time (the API's ``*_at``) as the admin shows times."""
    return when_cell(datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)) if stamp else "-"


def size_cell(count: int | None) -> str:
    count = count or 0
    return format_html('<span title="{} bytes">{}</span>', count, filesizeformat(count))


class FileAddForm(forms.ModelForm):
    """An upload, checked as ``POST /v1/files`` checks one."""

    upload = forms.FileField(label="File", help_text="Kept under its name; stored by id in the default storage.")
    purpose = forms.ChoiceField(choices=[(p, p) for p in files.SUPPORTED_PURPOSES], initial="assistants")

    class Meta:
        model = File
        fields = ("purpose",)

    def clean_upload(self):
        upload = self.cleaned_data["upload"]
        try:
            files.check_size(upload.size)
        except ApiError as error:
            raise ValidationError(error.message) from None
        return upload


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ("filename", "purpose", "size", "created", "expires", "file_id")
    list_filter = ("purpose",)
    search_fields = ("filename", "id")
    ordering = ("-seq",)  # newest first, as the API lists them
    readonly_fields = ("id", "filename", "purpose", "size", "created", "expires", "content_type", "download",
                       "stores")

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a file is replaced by uploading another, as with the API

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = FileAddForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ("upload", "purpose") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    @admin.display(description="id", ordering="seq")
    def file_id(self, obj: File) -> str:
        return short_id(obj.id)

    @admin.display(description="bytes", ordering="bytes")
    def size(self, obj: File) -> str:
        return size_cell(obj.bytes)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: File) -> str:
        return when_unix(obj.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: File) -> str:
        return when_unix(obj.expires_at) if obj.expires_at else "never"

    @admin.display(description="content")
    def download(self, obj: File) -> str:
        url = reverse("admin:assistants_api_file_content", args=(quote(obj.pk),))
        return format_html('<a href="{}">Download {}</a>', url, obj.filename)

    @admin.display(description="vector stores")
    def stores(self, obj: File) -> str:
        rows = VectorStoreFile.objects.filter(file_id=obj.id).select_related("vector_store").order_by("seq")
        if not rows:
            return "-"
        return format_html_join(", ", '<a href="{}">{}</a> ({})', (
            (reverse("admin:assistants_api_vectorstore_change", args=(quote(row.vector_store.pk),)),
             row.vector_store.name or row.vector_store.id, row.status) for row in rows))

    def get_urls(self):
        view = self.admin_site.admin_view(self.content_view)
        return [path("<path:object_id>/content/", view, name="assistants_api_file_content"), *super().get_urls()]

    def content_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        """The bytes, as ``GET /v1/files/{id}/content`` serves them, for staff who may view files."""
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_permission(request, obj):
            raise PermissionDenied
        response = FileResponse(files.open_bytes(obj), as_attachment=True, filename=obj.filename,
                                content_type=files.media_type(obj))
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def changelist_view(self, request, extra_context=None):
        files.purge_expired()
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        data = form.cleaned_data
        upload = data["upload"]
        created = files.create_file(upload, data["purpose"], content_type=upload.content_type or "")
        for field in File._meta.concrete_fields:
            setattr(obj, field.attname, getattr(created, field.attname))
        obj._state.adding, obj._state.db = False, created._state.db

    def delete_model(self, request, obj: File) -> None:
        files.delete_file(obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:
            files.delete_file(obj)
