"""The one retry loop (vlmdata.net.retry.retry): what is retried, how long it waits, when it gives up."""
from __future__ import annotations

import pytest

from vlmdata.net.retry import GaveUp, RetryPolicy, Transient, retry

POLICY = RetryPolicy(attempts=3, base=1.0, cap=4.0, max_retry_after=30.0)


def test_gives_up_after_the_policy_attempts_with_the_last_failure():
    waits, calls = [], []

    def attempt():
        calls.append(1)
        raise Transient(f"HTTP 503 #{len(calls)}")

    with pytest.raises(GaveUp) as e:
        retry(attempt, POLICY, wait=waits.append)
    assert len(calls) == 3 and len(waits) == 2 and e.value.tries == 3
    assert str(e.value.last) == "HTTP 503 #3" and "gave up after 3 tries" in str(e.value)
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # exponential, jittered


def test_retry_after_is_honoured_and_capped():
    waits, answers = [], [Transient("429", retry_after=7.0), Transient("429", retry_after=999.0), "ok"]

    def attempt():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    assert retry(attempt, POLICY, wait=waits.append) == "ok"
    assert waits == [7.0, 30.0]


def test_other_errors_are_not_retried():
    calls = []

    def attempt():
        calls.append(1)
        raise ValueError("404 is not transient")

    with pytest.raises(ValueError):
        retry(attempt, POLICY, wait=lambda s: None)
    assert len(calls) == 1


def test_progress_starts_the_count_again():
    moved = [0]

    def flaky(advancing: int, stalled: int):
        calls = []

        def attempt():
            calls.append(1)
            if len(calls) <= advancing:
                moved[0] += 10  # the try got somewhere before the connection dropped
                raise Transient("dropped")
            if len(calls) <= advancing + stalled:
                raise Transient("dropped, nothing received")
            return "done"
        return attempt, calls

    attempt, calls = flaky(advancing=5, stalled=1)  # a try that advanced counts as the first of a new round
    assert retry(attempt, POLICY, wait=lambda s: None, progress=lambda: moved[0]) == "done"
    assert len(calls) == 7
    attempt, calls = flaky(advancing=5, stalled=2)
    with pytest.raises(GaveUp):
        retry(attempt, POLICY, wait=lambda s: None, progress=lambda: moved[0])
    assert len(calls) == 7


def test_a_wait_that_raises_stops_the_loop():
    class Stop(Exception):
        pass

    def attempt():
        raise Transient("x")

    def wait(seconds):
        raise Stop()

    with pytest.raises(Stop):
        retry(attempt, POLICY, wait=wait)
