"""Login and logout for the app's pages: ``path("accounts/", include("betaassi_django.auth_urls"))``.

Django's own views under Django's own names (``login``, ``logout``), with the redirects the pages need, so
a project sets neither LOGIN_REDIRECT_URL nor LOGOUT_REDIRECT_URL: after login the session list (or ``?next=``),
after logout (a POST, as Django 5 requires) the login page. The login template ships in the package
(``registration/login.html``); the password change and reset views of ``django.contrib.auth.urls`` follow.
"""

from django.contrib.auth import views
from django.urls import include, path

urlpatterns = [
    path("login/", views.LoginView.as_view(next_page="betaassi:sessions"), name="login"),
    path("logout/", views.LogoutView.as_view(next_page="login"), name="logout"),
    path("", include("django.contrib.auth.urls")),  # its own login/logout are shadowed by the two above
]
