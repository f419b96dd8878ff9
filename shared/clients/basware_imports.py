"""One Basware import: POST a batch, read its `x-amzn-RequestId`, poll `requestStatus`, classify
each record's outcome. Used by the master-data import and the purchase-order sync alike.

Basware's import APIs (P2P API: POST /v1/vendors, /v1/accounts, /v1/matchingOrders, ...) accept a
batch at once and process it asynchronously; `GET /v1/requestStatus/{requestId}` reports on it:
- request status `InProgress | Success | Error | AcknowledgedSuccess | AcknowledgedError`; only the
  last four are final, and only while no item is still `InProgress`. Any other value (one a newer
  API version may add) is read as not final: waiting longer is the safe side, since a record not
  confirmed is simply sent again.
- item status `InProgress | NotProcessed | Warning | Success | Error | RecordExpired | Unpublished`.
  `NotProcessed` is Basware skipping a byte-identical resend of what it already holds, so it counts
  as confirmed; `RecordExpired` (a newer version of the record overtook this one) and `Unpublished`
  confirm nothing.
A 400/409 refuses the whole request and names the records in its ResponseEntityList.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from shared.clients.basware import MAX_REQUEST_BYTES, dumps, parse_json
from shared.core.errors import PermanentError, TransientError
from shared.models.basware import RequestStatus

OK_ITEM_STATUSES = frozenset({"Success", "NotProcessed", "Warning"})
FINAL_REQUEST_STATUSES = frozenset({"Success", "Error", "AcknowledgedSuccess", "AcknowledgedError"})
_REQUEST_OK = frozenset({"Success", "AcknowledgedSuccess"})
_REQUEST_ERROR = frozenset({"Error", "AcknowledgedError"})


@dataclass
class Posted:
    """What the POST answered: a request id to follow, or the whole request refused."""
    request_id: str | None
    status: int = 200
    errors: list[dict] | None = None  # set when Basware refused the whole request (400/409)


@dataclass
class Outcome:
    """Per externalCode, what Basware made of one request."""
    confirmed: list[str] = field(default_factory=list)
    refused: dict[str, list[dict]] = field(default_factory=dict)  # code -> Basware's errors
    waiting: list[str] = field(default_factory=list)              # no verdict yet: send again later


def post_batch(basware, path: str, records: list[dict]) -> Posted:
    """POST one batch. A 400/409 refuses the whole request; its body names the records, so it is
    returned rather than raised. Other failures raise as the client classifies them."""
    body = dumps(records)
    if len(body) > MAX_REQUEST_BYTES:
        raise ValueError(f"batch of {len(records)} records is {len(body)} bytes, over Basware's 6 MB limit")
    response = basware.request("POST", path, content=body, headers={"Content-Type": "application/json"},
                               ok=(400, 409))
    request_id = response.headers.get("x-amzn-requestid")
    if response.status_code not in (400, 409):
        return Posted(request_id)
    try:
        parsed = parse_json(response)
    except ValueError:
        parsed = None
    parsed = parsed if isinstance(parsed, dict) else {}
    errors = [e for e in parsed.get("errors") or [] if isinstance(e, dict)]
    return Posted(request_id or parsed.get("requestId"), response.status_code,
                  errors or [{"message": (response.text or response.reason_phrase)[:500]}])


def is_final(status: RequestStatus) -> bool:
    return status.request_status in FINAL_REQUEST_STATUSES and not any(i.status == "InProgress"
                                                                        for i in status.items)


def wait_for_status(basware, request_id: str, *, wait: float, first_poll: float = 0.25, max_poll: float = 5.0,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> RequestStatus | None:
    """Poll requestStatus until it is final or `wait` seconds have passed (doubling the pause up to
    `max_poll`); the last status read, or None when none could be read."""
    deadline = clock() + wait
    delay = first_poll
    status = None
    while True:
        try:
            status = basware.request_status(request_id) or status
        except TransientError:
            pass
        except PermanentError:
            return status
        if status is not None and is_final(status):
            return status
        if clock() + delay > deadline:
            return status
        sleep(delay)
        delay = min(delay * 2, max_poll)


def classify(status: RequestStatus | None, codes: Iterable[str]) -> Outcome:
    """Each record's outcome in one request. A record is confirmed when every system reports
    Success, NotProcessed or Warning for it, or when it is not itemised and the request as a whole
    succeeded; refused when any system reports Error (or the request failed without itemising it)."""
    outcome = Outcome()
    if status is None:
        outcome.waiting.extend(codes)
        return outcome
    by_code: dict[str, list] = {}
    for item in status.items:
        by_code.setdefault(item.external_code or "", []).append(item)
    for code in codes:
        reported = by_code.get(code)
        if not reported:
            if status.request_status in _REQUEST_OK:
                outcome.confirmed.append(code)
            elif status.request_status in _REQUEST_ERROR:
                outcome.refused[code] = [{"message": f"request {status.request_status} without a record status"}]
            else:
                outcome.waiting.append(code)
            continue
        statuses = {i.status for i in reported}
        if "Error" in statuses:
            outcome.refused[code] = [e for i in reported for e in (i.errors or [])]
        elif statuses <= OK_ITEM_STATUSES:
            outcome.confirmed.append(code)
        else:  # InProgress, RecordExpired, Unpublished, or a value this code does not know
            outcome.waiting.append(code)
    return outcome
