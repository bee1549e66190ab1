from django.urls import path

from ops import views

app_name = "ops"

urlpatterns = [
    path("", views.ops_page, name="page"),
]
