"""Bad input, generated: schemathesis from the served OpenAPI schema, and hypothesis strategies
for tensors and raw bodies. Every answer is a correct 2xx or a 4xx JSON error, never a 5xx,
and the platform keeps serving valid requests afterwards."""

import json
import math
import re
from typing import Any, Protocol, TypeGuard

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Heldout
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
# 29 operations, two modes each: fewer examples per operation than the tensor fuzzers.
FUZZ_SCHEMA = settings(FUZZ, max_examples=20)


class Answer(Protocol):
    """What httpx's and schemathesis' responses both have."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def assert_answer_is_well_formed(response: Answer) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:300]}"
    if status < 400 and response.text.startswith("# HELP"):
        return  # /metrics: Prometheus' text format
    body = response.json()
    if status >= 400:
        assert "error" in body


REGISTRY = "/api/v1/models"


@pytest.fixture(scope="module")
def staff_auth(platform: Platform) -> dict[str, str]:
    """A staff token (DRF's `Token` scheme, as the schema's tokenAuth says) for the registry."""
    out = platform.manage("drf_create_token", "admin").stdout
    match = re.search(r"[0-9a-f]{40}", out)
    assert match, out
    return {"Authorization": f"Token {match.group(0)}"}


def test_every_route_answers_from_its_schema(platform: Platform, staff_auth: dict[str, str]) -> None:
    """schemathesis generates requests (valid and invalid) for each operation of /api/schema,
    the registry's included (with a staff token; its generated model names exist nowhere, so
    nothing is promoted or rolled back on the shared platform)."""
    schema = schemathesis.openapi.from_url(f"{platform.base_url}/api/schema/")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation of the schema is invalid: {result.err()}"
        operations.append(result.ok())
    paths = {operation.path for operation in operations}
    assert {f"{REGISTRY}/{{name}}/promote", "/v2/models/{name}/versions/{version}/infer"} <= paths

    statuses: dict[str, list[int]] = {}
    for operation in operations:
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ_SCHEMA
            def check(case: schemathesis.Case[Any]) -> None:
                if case.path_parameters and case.path_parameters.get("name") == "digits":
                    return  # never switch the shared platform's model
                path = case.operation.path
                headers = staff_auth if path.startswith(REGISTRY) else platform.auth
                response = case.call(base_url=platform.base_url, headers=headers)
                assert_answer_is_well_formed(response)
                statuses.setdefault(path, []).append(response.status_code)

            try:
                check()
            except Unsatisfiable:
                # A route with nothing to break (no parameters, no body) has no negative cases.
                assert mode is schemathesis.GenerationMode.NEGATIVE
    # Both valid calls and rejected ones were exercised, on the data plane and the registry.
    every = [s for codes in statuses.values() for s in codes]
    assert len(every) > 400
    assert any(s < 300 for s in every)
    assert any(400 <= s < 500 for s in every)
    assert set(statuses) == paths
    assert any(s < 300 for s in statuses[REGISTRY])

    # The registry's answers about a real model match the schema's response bodies; digits has
    # no rollout on the shared platform, so one named by id is a 404 in the schema's error shape.
    for operation in operations:
        if operation.path.startswith(REGISTRY) and operation.method.upper() == "GET":
            path_parameters: dict[str, Any] = {"name": "digits"} if "{name}" in operation.path else {}
            expected = 200
            if "{rollout_id}" in operation.path:
                path_parameters["rollout_id"] = 999999
                expected = 404
            case = operation.Case(path_parameters=path_parameters)
            response = case.call(base_url=platform.base_url, headers=staff_auth)
            assert response.status_code == expected, response.text
            case.validate_response(response, checks=[response_schema_conformance])


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0.0, 16.0, 1e39, -1e39, 1e-45]),
)
leaves = st.one_of(numbers, st.text(max_size=5), st.booleans(), st.none())
tensors = st.one_of(
    st.lists(st.lists(numbers, min_size=64, max_size=64), min_size=1, max_size=3),  # right shape
    st.lists(st.lists(numbers, min_size=0, max_size=70), min_size=0, max_size=3),  # wrong widths
    st.recursive(leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=20),  # any rank
    st.lists(st.lists(leaves, min_size=64, max_size=64), min_size=1, max_size=2),  # mixed types
)


def _valid_rows(value: object) -> TypeGuard[list[list[float]]]:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(row, list)
            and len(row) == 64
            and all(
                not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and abs(v) < 3e38
                for v in row
            )
            for row in value
        )
    )


@given(inputs=tensors)
@FUZZ
def test_generated_tensors_get_a_prediction_or_a_400_naming_the_field(
    platform: Platform, inputs: object
) -> None:
    body = json.dumps({"model": "digits", "inputs": inputs}, allow_nan=True)
    with platform.client() as client:
        native = client.post(
            "/api/v1/predictions", content=body, headers={"Content-Type": "application/json"}
        )
        tfs = client.post(
            "/v1/models/digits:predict", content=json.dumps({"instances": inputs}, allow_nan=True)
        )
    for response in (native, tfs):
        assert_answer_is_well_formed(response)
    if _valid_rows(inputs):
        assert native.status_code == 200, native.text
        assert len(native.json()["predictions"]) == len(inputs)
    else:
        assert native.status_code == 400, native.text
        assert native.json()["error"]["field"] in {"inputs", "body"}
        assert tfs.status_code == 400


@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
        st.integers(min_value=1, max_value=3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    ),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/octet-stream",
        ]
    ),
    route=st.sampled_from(["/api/v1/predictions", "/v1/models/digits:predict", "/v2/models/digits/infer"]),
)
@FUZZ
def test_raw_bodies_and_content_types_never_cause_a_server_error(
    platform: Platform, raw: bytes, content_type: str, route: str
) -> None:
    with platform.client() as client:
        response = client.post(route, content=raw, headers={"Content-Type": content_type})
    assert_answer_is_well_formed(response)
    assert response.status_code in {400, 404, 413, 422}


@given(
    shape=st.lists(st.integers(min_value=0, max_value=70), max_size=4),
    datatype=st.sampled_from(["FP32", "FP64", "INT32", "BOOL", "BYTES", "fp32", ""]),
    data=st.lists(numbers, max_size=130),
)
@FUZZ
def test_generated_v2_tensors(
    platform: Platform, shape: list[int], datatype: str, data: list[object]
) -> None:
    body = {"inputs": [{"name": "pixels", "shape": shape, "datatype": datatype, "data": data}]}
    with platform.client() as client:
        response = client.post("/v2/models/digits/infer", content=json.dumps(body, allow_nan=True))
    assert_answer_is_well_formed(response)


def test_still_serving_after_the_fuzzing(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client:
        response = client.post("/api/v1/predictions", json={"model": "digits", "inputs": rows[:20]})
    assert response.status_code == 200
    assert sum(int(a) == b for a, b in zip(response.json()["labels"], labels[:20], strict=True)) >= 18
