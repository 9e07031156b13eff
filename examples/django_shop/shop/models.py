from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=200)
    email = models.CharField(max_length=320)
    receipt_sent = models.BooleanField(default=False)
    receipt_job_id = models.CharField(max_length=36, blank=True, default="")
