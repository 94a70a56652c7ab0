from django.apps import AppConfig


class AssistantsApiConfig(AppConfig):
    """The embedded Assistants-compatible API: store, /v1 views, run engine."""

    name = "betaassi_django.assistants_api"
    label = "assistants_api"
    verbose_name = "Embedded Assistants API"
    default_auto_field = "django.db.models.BigAutoField"
