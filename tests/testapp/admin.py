"""What a developer writes to manage their own assistant subclasses in the admin: one line each."""

from django.contrib import admin

from betaassi_django.admin import AssistantAdmin
from tests.testapp.models import Kitchen, Support

admin.site.register(Support, AssistantAdmin)
admin.site.register(Kitchen, AssistantAdmin)
