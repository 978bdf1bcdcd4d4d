from django.db import models


class AuditRow(models.Model):
    request = models.IntegerField()
    view = models.CharField(max_length=20)

    class Meta:
        db_table = "audit_row"  # created by the tests, without migrations
