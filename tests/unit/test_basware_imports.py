"""Reading a Basware import's outcome: the one set of rules the master-data import and the
purchase-order sync share (shared/clients/basware_imports.py)."""
from __future__ import annotations

import pytest

from shared.clients.basware_imports import classify, is_final, wait_for_status
from shared.core.errors import TransientError
from shared.models.basware import RequestStatus

pytestmark = pytest.mark.unit


def status(request_status: str, *items: tuple[str, str]) -> RequestStatus:
    return RequestStatus.from_response({"requestStatus": [{"requestId": "r1", "requestStatus": request_status, "systems": [
        {"system": "P2P", "items": [{"externalCode": e, "status": st, "errors": [{"message": f"{e} bad"}]
                                    if st == "Error" else []} for e, st in items]}]}]})


@pytest.mark.parametrize("answer, confirmed, refused, waiting", [
    (None, [], [], ["A", "B"]),
    (status("Success", ("A", "Success"), ("B", "NotProcessed")), ["A", "B"], [], []),
    (status("Error", ("A", "Success"), ("B", "Error")), ["A"], ["B"], []),
    (status("Success", ("A", "Warning"), ("B", "RecordExpired")), ["A"], [], ["B"]),
    (status("Success", ("A", "Unpublished")), ["B"], [], ["A"]),
    (status("InProgress", ("A", "InProgress")), [], [], ["A", "B"]),
    (status("Success"), ["A", "B"], [], []),               # not itemised, the request succeeded
    (status("Error"), [], ["A", "B"], []),
    (status("AcknowledgedSuccess", ("A", "Success")), ["A", "B"], [], []),
    (status("SomethingNew"), [], [], ["A", "B"]),          # a value this code does not know: no verdict
])
def test_only_records_basware_confirmed_count_as_imported(answer, confirmed, refused, waiting):
    outcome = classify(answer, ["A", "B"])
    assert (outcome.confirmed, sorted(outcome.refused), outcome.waiting) == (confirmed, refused, waiting)
    if refused == ["B"]:
        assert outcome.refused["B"] == [{"message": "B bad"}]


@pytest.mark.parametrize("answer, final", [
    (status("Success", ("A", "Success")), True),
    (status("AcknowledgedError", ("A", "Error")), True),
    (status("Success", ("A", "Success"), ("B", "InProgress")), False),  # a system still working
    (status("InProgress"), False),
    (status("Queued"), False),                                          # unknown: not final
])
def test_a_request_is_final_only_on_a_final_status_with_no_item_in_progress(answer, final):
    assert is_final(answer) is final


class Answers:
    """A Basware client whose requestStatus answers come from a list (the unit tier has no server)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.reads = 0

    def request_status(self, request_id):
        self.reads += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_wait_polls_with_doubling_pauses_until_the_status_is_final():
    clock = Clock()
    basware = Answers(TransientError("503"), status("InProgress"), status("Success", ("A", "NotProcessed")))
    got = wait_for_status(basware, "r1", wait=30, first_poll=0.25, max_poll=5, sleep=clock.sleep,
                          clock=lambda: clock.now)
    assert got.request_status == "Success" and basware.reads == 3
    assert clock.sleeps == [0.25, 0.5]


def test_the_wait_gives_up_at_its_deadline_with_the_last_status_read():
    clock = Clock()
    basware = Answers(status("InProgress", ("A", "InProgress")))
    got = wait_for_status(basware, "r1", wait=3, first_poll=0.5, max_poll=1, sleep=clock.sleep,
                          clock=lambda: clock.now)
    assert got.request_status == "InProgress"
    assert sum(clock.sleeps) <= 3 and clock.sleeps[:3] == [0.5, 1, 1]
    assert classify(got, ["A"]).waiting == ["A"]
