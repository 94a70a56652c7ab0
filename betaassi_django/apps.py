from django.apps import AppConfig


class BetaassiConfig(AppConfig):
    name = "betaassi_django"
    label = "betaassi_django"
    verbose_name = "Assistants and sessions"
    default_auto_field = "django.db.models.BigAutoField"
