"""WebSocket URL patterns of the app; a project routes them under AuthMiddlewareStack."""

from django.urls import re_path

from betaassi_django.consumers import SessionConsumer

websocket_urlpatterns = [
    re_path(r"^ws/assistants/(?P<assistant_id>[A-Za-z0-9_]{1,64})/sessions/(?P<session_id>[A-Za-z0-9_.:-]{1,60})/$",
            SessionConsumer.as_asgi()),
]
