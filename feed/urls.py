from django.urls import include, path

from feed import views
from feed.api import api_urlpatterns

app_name = "feed"

urlpatterns = [
    path("", views.feed_index, name="index"),
    path("feeds/<slug:slug>/", views.feed_page, name="page"),
    path("feeds/<slug:slug>/comments/", views.comment_post, name="comment_post"),
    path("feeds/<slug:slug>/comments/<int:comment_id>/remove/", views.comment_remove_post, name="comment_remove"),
    path("api/", include(api_urlpatterns())),
]
