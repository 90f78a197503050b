"""Canary routing: a routing key's side is fixed within a rollout, the shares follow the weight,
and the keys on the candidate at a small weight stay on it as the weight grows."""

from apps.predictions.selectors import Route, ServedModel, canary_bucket

SIGNATURE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}], "outputs": []}
LIVE, CANDIDATE = ServedModel("digits", 1, SIGNATURE), ServedModel("digits", 2, SIGNATURE)
KEYS = [f"client-{i}" for i in range(20_000)]


def _route(weight: int, rollout: int = 7) -> Route:
    return Route(LIVE, candidate=CANDIDATE, weight=weight, rollout=rollout)


def test_the_candidates_share_follows_the_weight_within_one_point() -> None:
    for weight in (5, 25, 50):
        share = sum(_route(weight).pick(key) == CANDIDATE for key in KEYS) / len(KEYS)
        assert abs(share * 100 - weight) < 1.0, (weight, share)
    assert all(_route(100).pick(key) == CANDIDATE for key in KEYS[:1000])


def test_routing_is_sticky_and_grows_without_moving_keys_back() -> None:
    at_5 = {key for key in KEYS if _route(5).pick(key) == CANDIDATE}
    at_25 = {key for key in KEYS if _route(25).pick(key) == CANDIDATE}
    assert at_5 < at_25
    assert all(_route(25).pick(key) == _route(25).pick(key) for key in KEYS[:500])
    # Another rollout draws its own keys.
    other = {key for key in KEYS if canary_bucket(rollout=8, routing_key=key) < 5}
    assert len(other & at_5) < len(at_5) / 2


def test_without_a_candidate_or_a_key_the_live_version_serves() -> None:
    assert Route(LIVE).pick("client-1") == LIVE
    assert _route(50).pick(None) == LIVE
    assert _route(0).pick("client-1") == LIVE


def test_a_shadow_gets_a_copy_of_its_share_of_the_live_answers_only() -> None:
    route = Route(LIVE, shadow=CANDIDATE, mirror_percent=30, rollout=7)
    copies = sum(route.mirror(LIVE) == CANDIDATE for _ in range(20_000))
    assert abs(copies / 200 - 30) < 2.0, copies
    assert all(
        Route(LIVE, shadow=CANDIDATE, mirror_percent=100).mirror(LIVE) == CANDIDATE for _ in range(100)
    )
    # A pinned or fallback answer (another version) is not mirrored, nor anything without a shadow.
    assert route.mirror(CANDIDATE) is None
    assert Route(LIVE).mirror(LIVE) is None
    # The shadow never takes a client's request.
    assert all(route.pick(key) == LIVE for key in KEYS[:1000])
