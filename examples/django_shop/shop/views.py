"""``POST /orders`` places an order; ``GET /orders/<id>/receipt?wait=N`` answers once its
receipt job finished (or after N seconds, at most 30)."""

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from shop.bridge import call
from shop.models import Order
from shop.orders import place_order
from shop.tasks import app


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body or b"{}")
    item, email = body.get("item"), body.get("email")
    if not (isinstance(item, str) and 1 <= len(item) <= 200):
        return JsonResponse({"field": "item", "reason": "must be 1-200 characters"}, status=422)
    if not (isinstance(email, str) and 3 <= len(email) <= 320):
        return JsonResponse({"field": "email", "reason": "must be 3-320 characters"}, status=422)
    order = place_order(item, email)
    return JsonResponse({"order_id": order.id}, status=201)


@require_GET
def receipt(request: HttpRequest, order_id: int) -> HttpResponse:
    try:
        wait = float(request.GET.get("wait", "0"))
    except ValueError:
        wait = -1
    if not 0 <= wait <= 30:
        return JsonResponse({"field": "wait", "reason": "must be 0-30 seconds"}, status=422)
    order = Order.objects.filter(id=order_id).first()
    if order is None:
        return JsonResponse({"reason": "no such order"}, status=404)
    if not order.receipt_job_id:
        return JsonResponse({"status": "not scheduled", "result": None})
    try:
        job = call(app.wait(order.receipt_job_id, timeout=wait), timeout=wait + 10)
    except TimeoutError:
        job = call(app.get(order.receipt_job_id))
    return JsonResponse({"status": job.status.value, "result": job.result})
