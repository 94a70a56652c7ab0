"""What every betaassi admin shares: backend failures become admin messages and form errors, never a 500.

A model admin that writes to the backend raises ``BackendFailed`` from
``save_model`` / ``delete_model``. Django's change form runs inside a database
transaction, so the local side of the attempt is rolled back; the mixin then
shows the error and renders the form again with what the operator typed.
"""

from __future__ import annotations

import openai
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

#: Reads that only inform a page (queue lag, pending sessions) must not hold it up: no retries, a short timeout.
INFORMATIVE_READ = {"max_retries": 0, "timeout": 10.0}


def describe(error: openai.APIError) -> str:
    """An operator's sentence for a backend failure."""
    if isinstance(error, openai.APITimeoutError):
        return "the backend did not answer in time"
    if isinstance(error, openai.APIConnectionError):
        return f"the backend is unreachable ({str(error.__cause__ or error).rstrip('.')})"
    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        return f"the backend answered {error.status_code}: {(body.get('message') or error.message).rstrip('.')}"
    return f"the backend failed: {error}"


class BackendFailed(Exception):
    """A backend call of an admin action failed; nothing was changed (the message says what)."""

    def __init__(self, what: str, error: openai.APIError | str) -> None:
        self.error = error
        reason = error if isinstance(error, str) else describe(error)
        self.message = f"{what} failed: {reason.rstrip('.')}. Nothing was changed."
        # A 400 from the API names the offending parameter ("tools[0].type"): put the error on that field.
        param = getattr(error, "param", None) if isinstance(error, openai.BadRequestError) else None
        self.field = param.split("[")[0].split(".")[0] if isinstance(param, str) else None
        super().__init__(self.message)


BACKEND_ERROR_ATTR = "_betaassi_backend_failure"
UNREACHABLE_ATTR = "_betaassi_backend_unreachable"


def informative_reads_failed(request: HttpRequest, error: openai.APIError | None = None) -> bool:
    """Whether an informative read already failed in this request (then the page skips the others).

    With ``error``, records the failure and shows one warning for the whole page.
    """
    if error is not None and not getattr(request, UNREACHABLE_ATTR, False):
        setattr(request, UNREACHABLE_ATTR, True)
        messages.warning(request, f"Pending events and queue lag are unknown: {describe(error)}.")
    return getattr(request, UNREACHABLE_ATTR, False)


class BackendFormMixin:
    """Model-form mixin: shows the backend failure of the previous attempt as a form error."""

    backend_failure: BackendFailed | None = None

    def _post_clean(self) -> None:
        super()._post_clean()
        failure = self.backend_failure
        if failure is not None:
            field = failure.field if failure.field in self.fields else None
            self.add_error(field, failure.message)


class BackendAdminMixin:
    """ModelAdmin mixin: a ``BackendFailed`` from save or delete shows as an error, the form comes back."""

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        failure = getattr(request, BACKEND_ERROR_ATTR, None)
        if failure is None:
            return form
        bases = (form,) if issubclass(form, BackendFormMixin) else (BackendFormMixin, form)
        return type(form.__name__, bases, {"backend_failure": failure})

    def changeform_view(self, request: HttpRequest, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except BackendFailed as failure:
            messages.error(request, failure.message)
            setattr(request, BACKEND_ERROR_ATTR, failure)
            # Again, with the failure as a form error: the form is shown with what was typed, nothing saved.
            return super().changeform_view(request, object_id, form_url, extra_context)

    def delete_view(self, request: HttpRequest, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except BackendFailed as failure:
            messages.error(request, failure.message)
            return HttpResponseRedirect(request.path)


def log_deleted(request: HttpRequest, model, object_id, shown: str) -> None:
    """Record a deletion in the admin's history, after it happened (a failed one is not logged)."""
    from django.contrib.admin.models import DELETION, LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.create(user_id=request.user.pk, content_type_id=ContentType.objects.get_for_model(model).pk,
                            object_id=str(object_id), object_repr=shown[:200], action_flag=DELETION)


def admin_url(model, view: str, object_id=None, **query: str) -> str | None:
    """The URL of a model's admin view, or None when that model is not in the admin.

    The object id is quoted as the admin quotes it (``_`` becomes ``_5F``): the admin's views unquote
    ``_XX``, so a raw ``asst_3Exyz`` would be read as ``asst>xyz``. ``query`` is the URL's query string.
    """
    try:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}",
                      args=() if object_id is None else (quote(object_id),))
    except NoReverseMatch:
        return None
    return f"{url}?{urlencode(query)}" if query else url


def confirm_then(action_name: str):
    """Django's delete confirmation page for our own delete action (the page posts ``post=yes`` back to it)."""
    from django.contrib.admin.actions import delete_selected

    def decorator(apply):
        def action(modeladmin, request, queryset):
            if request.POST.get("post"):
                # As Django's delete_selected: related objects the user may not delete refuse the whole delete.
                _, _, perms_needed, protected = modeladmin.get_deleted_objects(queryset, request)
                if perms_needed and not protected:
                    raise PermissionDenied
                if not protected:
                    return apply(modeladmin, request, queryset)
            return delete_selected(modeladmin, request, queryset)

        action.__name__ = action_name
        return admin.action(permissions=["delete"], description=apply.__doc__.strip())(action)

    return decorator
