"""WebSocket URL patterns of the app (the session consumer joins in a later release)."""

websocket_urlpatterns: list = []
