from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        # Registers the server adapter's start-up check (manage.py check and daphne's start).
        from notifications.server_adapter import checks  # noqa: F401
