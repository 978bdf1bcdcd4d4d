from django.urls import path

from . import views

urlpatterns = [
    path("", views.home),
    path("sync", views.sync_home),
    path("error", views.error),
]
