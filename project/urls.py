"""URLs of the example project: the admin and the embedded Assistants API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/", include("betaassi_django.assistants_api.urls")),
]
