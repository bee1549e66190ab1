from django.urls import path

from bench.peers import views

urlpatterns = [
    path("api/feeds/", views.feeds),
    path("api/feeds/<slug:slug>/comments/", views.comment_post),
]
