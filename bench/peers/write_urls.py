from django.urls import path

from bench.peers import write_views

urlpatterns = [path("api/feeds/<slug:slug>/comments/", write_views.comment_insert)]
