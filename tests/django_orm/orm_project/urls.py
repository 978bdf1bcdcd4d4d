from django.urls import path

from . import views

urlpatterns = [
    path("sync/<int:n>", views.sync_view),
    path("async/<int:n>", views.async_view),
    path("forgetful/<int:n>", views.forgetful_view),
]
