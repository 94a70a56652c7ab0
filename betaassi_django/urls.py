"""The app's pages; a project includes them (the example project at its root)."""

from django.urls import re_path

from betaassi_django import views

app_name = "betaassi"

SESSION = r"(?P<assistant_id>[A-Za-z0-9_]{1,64})/(?P<session_id>[A-Za-z0-9_.:-]{1,60})"

urlpatterns = [
    re_path(r"^$", views.session_list, name="sessions"),
    re_path(r"^sessions/start/$", views.start_session, name="start_session"),
    re_path(rf"^sessions/{SESSION}/edit/$", views.edit_session, name="edit_session"),
    re_path(rf"^sessions/{SESSION}/delete/$", views.delete_session, name="delete_session"),
    re_path(rf"^chat/{SESSION}/$", views.chat, name="chat"),
]
