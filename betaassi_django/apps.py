"""The app's configuration: its system checks, the signals that keep open WebSockets in step, and the wiring
of the floors (the assistant lookup the quotas need, and the model that keeps queue consumers' positions,
come from the models floor above them)."""

from django.apps import AppConfig, apps


class BetaassiConfig(AppConfig):
    name = "betaassi_django"
    label = "betaassi_django"
    verbose_name = "Assistants and sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import register

        register()  # model checks (Tags.models) and configuration checks (Tags.compatibility)
        from .models import find_assistant
        from .quotas import use_assistant_finder

        use_assistant_finder(find_assistant)  # a session's model is checked against its assistant's allow-list
        from .models import StreamThread
        from .publishing.positions import use_stream_model

        use_stream_model(StreamThread)  # queue consumers keep their positions in it (docs/consumers.md)
        if apps.is_installed("django.contrib.auth"):
            from .access import connect_signals

            connect_signals()  # open WebSockets follow their user's logout, password, activity and permissions
