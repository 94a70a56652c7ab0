"""The app's configuration: its system checks and the signals that keep open WebSockets in step."""

from django.apps import AppConfig, apps


class BetaassiConfig(AppConfig):
    name = "betaassi_django"
    label = "betaassi_django"
    verbose_name = "Assistants and sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import register

        register()  # model checks (Tags.models) and configuration checks (Tags.compatibility)
        if apps.is_installed("django.contrib.auth"):
            from .access import connect_signals

            connect_signals()  # open WebSockets follow their user's logout, password, activity and permissions
