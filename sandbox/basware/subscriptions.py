"""Push notifications: `/v1/subscriptions`, `/v1/tasks` and the webhook emitter (Basware push-notification OpenAPI).

Facts modelled: subscriptions are posted as an array (`Subscription-Input`); on create Basware
sends a `ConnectionTest` notification and needs 200 OK back, else the subscription is refused;
notifications are `{taskId, taskStatus, taskType, taskSubType, documentId, expirationTime}`,
signed with the subscription's `webhookAuthenticationToken`.

Not documented by Basware, so selectable here: the signature encoding of `X-BWAPI-Signature-256`
(`hex` by default, `base64`, or `sha256=`-prefixed hex; HMAC-SHA256 over the raw UTF-8 body,
keyed with the token's UTF-8 bytes), and what a ConnectionTest's `documentId` holds (a fresh
uuid here; the field is required by the callback schema).
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from sandbox import openapi
from sandbox.common import Request, Response

from . import errors as E
from .clock import Clock, after, iso, parse_datetime

TASK_TYPES = ("AccountingDocuments", "ExportedPurchaseRequisitions", "ExportedPurchaseOrders", "RequestStatus",
              "ExportedContracts", "ExportedContractSpends")
TASK_SUB_TYPES = ("WaitingForPrebook", "WaitingForTransfer", "WaitingForPrebookCancelation", "WaitingToBeRemoved",
                  "WaitingToBeReturned", "WaitingToBeCompleted", "WaitingForExport", "Error", "Success", "All")
ENCODINGS = ("hex", "base64", "sha256=")
SIGNATURE_HEADER = "X-BWAPI-Signature-256"


def sign(body: bytes, secret: str, encoding: str = "hex") -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64":
        return base64.b64encode(digest).decode()
    if encoding == "sha256=":
        return "sha256=" + digest.hex()
    raise ValueError(f"signature encoding must be one of {ENCODINGS}")


@dataclass
class Delivery:
    seq: int
    time: float
    url: str
    task_id: str
    task_type: str
    document_id: str
    status: int | None  # HTTP status, None when the endpoint did not answer
    error: str | None
    elapsed_ms: float
    encoding: str
    body: str

    def as_dict(self) -> dict:
        return {"seq": self.seq, "time": self.time, "url": self.url, "taskId": self.task_id,
                "taskType": self.task_type, "documentId": self.document_id, "status": self.status,
                "error": self.error, "elapsedMs": round(self.elapsed_ms, 1), "encoding": self.encoding,
                "body": self.body}


@dataclass
class PushStore:
    clock: Clock
    subscriptions: list[dict] = field(default_factory=list)
    tasks: dict[str, dict] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    _seq: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)


class PushApi:
    def __init__(self, app, store: PushStore) -> None:
        self.app = app
        self.store = store
        self._http = httpx.Client(timeout=app.config.webhook_timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def register(self) -> None:
        self.app.add_route("POST", "/v1/subscriptions", self.create)
        self.app.add_route("GET", "/v1/subscriptions", self.list)
        self.app.add_route("DELETE", "/v1/subscriptions", self.delete)
        self.app.add_route("GET", "/v1/tasks", self.list_tasks)
        self.app.add_route("GET", "/v1/tasks/{taskId}", self.get_task)

    # -- delivery ----------------------------------------------------------------------------------------
    def deliver(self, url: str, payload: dict, secret: str, encoding: str | None = None) -> Delivery:
        encoding = encoding or self.app.config.signature_encoding
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret, encoding),
                   "User-Agent": "Basware-API-Notifications/sandbox"}
        started = time.monotonic()
        status, error = None, None
        try:
            response = self._http.post(url, content=body, headers=headers, timeout=self.app.config.webhook_timeout)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.store._lock:
            self.store._seq += 1
            delivery = Delivery(self.store._seq, self.store.clock.time(), url, payload["taskId"], payload["taskType"],
                                payload["documentId"], status, error, (time.monotonic() - started) * 1000, encoding,
                                body.decode("utf-8"))
            self.store.deliveries.append(delivery)
            if len(self.store.deliveries) > 20000:
                del self.store.deliveries[:10000]
            task = self.store.tasks.get(payload["taskId"])
            if task is not None:
                task["taskHistory"].append({"action": "Notified", "timeStamp": iso(self.store.clock.now()),
                                            "messages": [f"{url} answered {status}" if status else error]})
        return delivery

    def notify(self, document_id: str, *, copies: int = 1, url: str | None = None, secret: str | None = None,
               encoding: str | None = None, task_type: str = "AccountingDocuments",
               task_sub_type: str | None = None, concurrent: bool = False) -> list[Delivery]:
        """One notification (one taskId) about `document_id`, sent `copies` times to every matching
        subscription and to `url` if given (signed with `secret`, default the seed's WEBHOOK_SECRET)."""
        sub_type = task_sub_type or self.app.document_status(document_id) or "WaitingForTransfer"
        with self.store._lock:
            targets = [(s["notificationWebhookURL"], s["webhookAuthenticationToken"])
                       for s in self.store.subscriptions
                       if s["taskType"] in (task_type, "All") and s["taskSubType"] in (sub_type, "All")]
        if url:
            targets.append((url, secret or self.app.webhook_secret))
        payload = {"taskId": str(uuid.uuid4()), "taskStatus": "New", "taskType": task_type, "taskSubType": sub_type,
                   "documentId": document_id, "expirationTime": after(self.app.config.task_expiry, self.store.clock)}
        with self.store._lock:
            self.store.tasks[payload["taskId"]] = {
                **{k: payload[k] for k in ("taskId", "taskStatus", "taskType", "taskSubType", "documentId",
                                           "expirationTime")},
                "externalProcessingTime": None, "isSimulatedTask": False, "lastUpdated": iso(self.store.clock.now()),
                "taskHistory": [{"action": "New", "timeStamp": iso(self.store.clock.now()),
                                 "messages": ["Task Created"]}]}
        jobs = [(u, s) for u, s in targets for _ in range(max(1, int(copies)))]
        if concurrent and len(jobs) > 1:
            with ThreadPoolExecutor(max_workers=min(32, len(jobs))) as pool:
                return list(pool.map(lambda job: self.deliver(job[0], payload, job[1], encoding), jobs))
        return [self.deliver(u, payload, s, encoding) for u, s in jobs]

    # -- /v1/subscriptions ------------------------------------------------------------------------------
    def create(self, req: Request) -> Response:
        rid = self.app.request_id()
        try:
            items = json.loads(req.body.decode("utf-8")) if req.body else None
        except (ValueError, UnicodeDecodeError):
            return E.push_message(422, "UnprocessableEntity: request body is not valid JSON")
        problems = openapi.validate("POST /v1/subscriptions", items, spec="push-notification")
        if problems:
            return E.push_validation(problems, rid)
        if not items:
            return E.push_validation(["(root): at least one subscription is required"], rid)
        messages = []
        for i, item in enumerate(items):
            if item["taskType"] not in TASK_TYPES:
                messages.append(f"[{i}].taskType: '{item['taskType']}' is not supported; use one of "
                                f"{', '.join(TASK_TYPES)}")
            if item.get("taskSubType") is not None and item["taskSubType"] not in TASK_SUB_TYPES:
                messages.append(f"[{i}].taskSubType: '{item['taskSubType']}' is not supported")
            if item["subscriptionType"] != "Webhook":
                messages.append(f"[{i}].subscriptionType: 'Polling' is reserved for later use; use 'Webhook'")
        if messages:
            return E.push_validation(messages, rid)
        # Basware validates each endpoint with a ConnectionTest notification that must answer 200 OK.
        for i, item in enumerate(items):
            test = {"taskId": str(uuid.uuid4()), "taskStatus": "New", "taskType": "ConnectionTest",
                    "taskSubType": item.get("taskSubType") or "All", "documentId": str(uuid.uuid4()),
                    "expirationTime": after(self.app.config.task_expiry, self.store.clock)}
            delivery = self.deliver(item["notificationWebhookURL"], test, item["webhookAuthenticationToken"])
            if delivery.status != 200:
                got = f"answered HTTP {delivery.status}" if delivery.status else f"did not answer ({delivery.error})"
                messages.append(f"[{i}].notificationWebhookURL: endpoint validation failed: the ConnectionTest "
                                f"notification to {item['notificationWebhookURL']} {got}; it must answer 200 OK")
        if messages:
            return E.push_validation(messages, rid)
        out = []
        with self.store._lock:
            for item in items:
                sub_type = item.get("taskSubType") or ("Error" if item["taskType"] == "RequestStatus" else "All")
                record = {"taskType": item["taskType"], "taskSubType": sub_type,
                          "subscriptionType": item["subscriptionType"],
                          "notificationWebhookURL": item["notificationWebhookURL"],
                          "webhookAuthenticationToken": item["webhookAuthenticationToken"],
                          "lastUpdated": iso(self.store.clock.stamp()), "autoResponder": item.get("autoResponder")}
                self.store.subscriptions = [
                    s for s in self.store.subscriptions
                    if (s["taskType"], s["taskSubType"], s["notificationWebhookURL"])
                    != (record["taskType"], record["taskSubType"], record["notificationWebhookURL"])]
                self.store.subscriptions.append(record)
                out.append(copy.deepcopy(record))
        return Response.json(out)

    def list(self, req: Request) -> Response:
        task_type, sub_type, since = req.q("taskType"), req.q("taskSubType"), req.q("lastUpdated")
        try:
            since_dt = parse_datetime(since) if since else None
        except ValueError:
            return E.push_message(422, f"UnprocessableEntity: lastUpdated '{since}' is not a valid date-time")
        with self.store._lock:
            found = [copy.deepcopy(s) for s in self.store.subscriptions
                     if (not task_type or s["taskType"] == task_type)
                     and (not sub_type or s["taskSubType"] == sub_type)
                     and (since_dt is None or parse_datetime(s["lastUpdated"]) > since_dt)]
        if not found:
            return Response.json({"detail": "Not Found"}, 404)
        return Response.json({"subscriptions": found})

    def delete(self, req: Request) -> Response:
        missing = [n for n in ("lastUpdated", "taskType", "taskSubType") if not req.q(n)]
        if missing:
            return Response.json({"message": "UnprocessableEntity", "detail": [
                {"loc": ["query", n], "msg": "field required", "type": "value_error.missing"} for n in missing]}, 422)
        try:
            since = parse_datetime(req.q("lastUpdated"))
        except ValueError:
            return E.push_message(422, f"UnprocessableEntity: lastUpdated '{req.q('lastUpdated')}' is not a valid "
                                       "date-time")
        task_type, sub_type = req.q("taskType"), req.q("taskSubType")
        with self.store._lock:
            keep, gone = [], 0
            for s in self.store.subscriptions:
                if (task_type in ("All", s["taskType"]) and sub_type in ("All", s["taskSubType"])
                        and parse_datetime(s["lastUpdated"]) > since):
                    gone += 1
                else:
                    keep.append(s)
            self.store.subscriptions = keep
        return Response.json({"status": "Deleted successfully", "numberOfRecordsDeleted": gone})

    # -- /v1/tasks ------------------------------------------------------------------------------------
    def _task_view(self, task: dict) -> dict:
        out = copy.deepcopy(task)
        status = self.app.document_status(task["documentId"])
        if task["taskType"] == "AccountingDocuments" and status and status != task["taskSubType"]:
            out["taskStatus"] = "Completed"  # the document moved on (acknowledged, transferred, ...)
        return out

    def get_task(self, req: Request) -> Response:
        with self.store._lock:
            task = self.store.tasks.get(req.params["taskId"])
        if task is None:
            return Response.json({"detail": "Not Found"}, 404)
        return Response.json({"taskStatus": [self._task_view(task)]})

    def list_tasks(self, req: Request) -> Response:
        with self.store._lock:
            tasks = [self._task_view(t) for t in self.store.tasks.values()]
        for name in ("taskType", "taskStatus", "documentId"):
            if req.q(name):
                tasks = [t for t in tasks if t.get(name) == req.q(name)]
        if not tasks:
            return Response.json({"detail": "Not Found"}, 404)
        return Response.json({"taskStatus": tasks})

