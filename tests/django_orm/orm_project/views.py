"""Each view registers a sync cleanup that writes the request's audit row through the ORM."""

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from asgi_cleanup.django import cleanup_registry

from .models import AuditRow


def write_audit_row(n: int, view: str) -> None:
    AuditRow.objects.create(request=n, view=view)


def write_audit_row_and_forget_autocommit(n: int) -> None:
    # A bug Django guards against between requests: autocommit left off. What this thread
    # writes next stays in a transaction nobody commits, unless the connection is closed.
    transaction.set_autocommit(False)
    AuditRow.objects.create(request=n, view="forgetful")
    transaction.commit()


def sync_view(request: HttpRequest, n: int) -> HttpResponse:
    # Django's own connection: this view's thread, closed when the request finishes.
    seen = AuditRow.objects.filter(request=n).exists()
    cleanup_registry(request).register(write_audit_row, n, "sync")
    return HttpResponse(f"sync {n} {seen}")


async def async_view(request: HttpRequest, n: int) -> HttpResponse:
    cleanup_registry(request).register(write_audit_row, n, "async")
    return HttpResponse(f"async {n}")


async def forgetful_view(request: HttpRequest, n: int) -> HttpResponse:
    cleanup_registry(request).register(write_audit_row_and_forget_autocommit, n)
    return HttpResponse(f"forgetful {n}")
