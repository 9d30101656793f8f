"""``rotation.pacing.Budget``: ARM's buckets as the answers' headers report them, spent and refilled on a test clock."""

from __future__ import annotations

import pytest

from rotation.pacing import BUCKETS, RESERVE, Budget, bucket_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("method", "bucket"),
    [
        ("GET", "reads"),
        ("head", "reads"),
        ("PATCH", "writes"),
        ("PUT", "writes"),
        ("POST", "writes"),
        ("DELETE", "deletes"),
    ],
)
def test_each_method_is_charged_to_its_bucket(method: str, bucket: str) -> None:
    assert bucket_of(method) == bucket


def test_requests_go_unpaced_until_an_answer_reports_the_bucket() -> None:
    budget = Budget(Clock())
    assert [budget.take("reads") for _ in range(1000)] == [0.0] * 1000


def test_above_the_reserve_nothing_waits() -> None:
    budget = Budget(Clock())
    budget.take("reads")
    budget.answered("reads", 100)
    assert [budget.take("reads") for _ in range(int(100 - RESERVE))] == [0.0] * int(100 - RESERVE)


def test_at_the_reserve_each_request_waits_one_refill_interval_more_than_the_one_before() -> None:
    budget = Budget(Clock())
    _, rate = BUCKETS["writes"]
    budget.take("writes")
    budget.answered("writes", int(RESERVE))
    waits = [budget.take("writes") for _ in range(3)]
    assert waits == pytest.approx([1 / rate, 2 / rate, 3 / rate])


def test_the_bucket_refills_at_arms_rate_up_to_its_capacity() -> None:
    clock = Clock()
    budget = Budget(clock)
    capacity, rate = BUCKETS["reads"]
    budget.take("reads")
    budget.answered("reads", 0)
    clock.now += 2.0  # 50 tokens back
    assert budget.take("reads") == 0.0
    assert [budget.take("reads") for _ in range(int(2 * rate - RESERVE) - 1)] == [0.0] * (int(2 * rate - RESERVE) - 1)
    assert budget.take("reads") > 0
    clock.now += 3600.0  # never more than the bucket holds
    assert sum(budget.take("reads") == 0.0 for _ in range(int(capacity) + 10)) == int(capacity - RESERVE)


def test_requests_still_on_their_way_count_against_what_an_answer_reports() -> None:
    budget = Budget(Clock())
    for _ in range(4):
        budget.take("reads")
    budget.answered("reads", int(RESERVE) + 3)  # three others are still out: the header may not count them yet
    assert budget.take("reads") > 0


def test_an_answer_without_the_header_changes_nothing_but_the_count_in_flight() -> None:
    budget = Budget(Clock())
    budget.take("writes")
    budget.answered("writes", None)
    assert budget.take("writes") == 0.0
