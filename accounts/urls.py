from django.contrib.auth.views import LogoutView
from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("signup/", views.SignUpView.as_view(), name="signup"),
    path("login/", views.SignInView.as_view(), name="login"),
    # Django's LogoutView takes POST only (a link could sign people out).
    path("logout/", LogoutView.as_view(), name="logout"),
]
