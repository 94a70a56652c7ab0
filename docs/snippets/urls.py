from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("betaassi_django.auth_urls")),
    path("v1/", include("betaassi_django.assistants_api.urls")),
    path("", include("betaassi_django.urls")),
]
