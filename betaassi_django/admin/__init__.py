"""The admin of betaassi-django: assistants, their sessions and publish queues.

Register ``AssistantAdmin`` for each of your assistant models, in one line::

    from betaassi_django.admin import AssistantAdmin

    admin.site.register(Support, AssistantAdmin)

The app registers it for its default ``Assistant``, and ``SessionAdmin`` for
the ``Session`` mirror. API keys of the embedded API are in
``betaassi_django.assistants_api.admin``.
"""

from django.contrib import admin

from betaassi_django.models import Assistant, Session

from .assistants import AssistantAdmin, RemoteModelForm
from .common import BackendFailed
from .session_admin import SessionAdmin
from .session_inline import SessionInline

admin.site.register(Assistant, AssistantAdmin)
admin.site.register(Session, SessionAdmin)

__all__ = ["AssistantAdmin", "BackendFailed", "RemoteModelForm", "SessionAdmin", "SessionInline"]
