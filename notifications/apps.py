from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        # Register the start-up checks (manage.py check and daphne's start): the live-path
        # settings, and the private server names the adapter needs.
        import livefeed.checks  # noqa: F401
        import notifications.server_adapter.checks  # noqa: F401
