"""Admin URLs in tests, built as the admin builds them: ``reverse()`` with the object id quoted.

The admin unquotes ``_XX`` (two upper-case hex digits) in an object id, so a
URL made from a raw id such as ``asst_3ETiIH5...`` names ``asst>TiIH5...``:
about one random embedded id in 15. Never format an admin URL from a raw id.
"""

from __future__ import annotations

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.http import urlencode


def admin_path(model, view: str, object_id=None, **query) -> str:
    """``admin_path(Support, "change", desk.id)`` -> ``/admin/testapp/support/asst_5F.../change/``."""
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}",
                  args=() if object_id is None else (quote(object_id),))
    return f"{url}?{urlencode(query)}" if query else url
