"""bench/scale/faults.py: what clients saw, from their attempts (no hosts needed)."""

from bench.scale.faults import Attempt, Request, clients_view, served_again

KILL = 100.0


def request(*attempts: tuple[float, float, str, str | None], done: float | None = None) -> Request:
    made = Request(key="k", value=1, started=attempts[0][0] if attempts else KILL, done=done)
    made.attempts = [Attempt(at=at, outcome=o, sent=sent, retry_after=ra) for sent, at, o, ra in attempts]
    return made


def test_served_again_is_the_first_success_sent_after_the_last_failure() -> None:
    requests = [
        # in flight across the kill, answered late without an error: not "served again" by itself
        request((99.0, 106.0, "200", None), done=106.0),
        request((100.5, 100.6, "503", "1"), (101.0, 104.0, "503", "1"), (104.1, 104.3, "200", None)),
        request((103.9, 104.2, "200", None)),  # sent before the last failure ended
    ]
    assert served_again(requests, ok="200", since=KILL) == 4.3
    assert served_again([request((101.0, 101.5, "503", "1"))], ok="200", since=KILL) is None
    assert served_again([request((101.0, 101.5, "202", None))], ok="202", since=KILL) == 1.5


def test_clients_view_counts_errors_against_the_kind_of_success_and_503s_without_retry_after() -> None:
    requests = [
        request(
            (100.5, 100.6, "503", None), (101.0, 102.0, "503", "1"), (102.1, 102.2, "202", None), done=102.2
        ),
        request((100.0, 100.1, "202", None), done=100.1),
    ]
    view = clients_view(requests, since=KILL, ok="202")
    assert view["attempts"] == {"202": 2, "503": 2}
    assert view["requests_retried"] == 1
    assert (view["errors_from_s"], view["errors_until_s"]) == (0.6, 2.0)
    assert view["503_without_retry_after"] == 1
    assert view["served_again_s"] == 2.2
