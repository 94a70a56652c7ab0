"""URLs of the example project: the pages, login/logout, the admin and the embedded Assistants API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("v1/", include("betaassi_django.assistants_api.urls")),
    path("", include("betaassi_django.urls")),
]
