"""Every service's OpenAPI, fuzzed with schemathesis: no 5xx, responses conform to the schema."""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import refused_for_space

SERVICES = ("upload", "transcoding", "metadata", "streaming", "admin")
# The storage folder of the platform under test (a check takes no fixture): set by the test.
STORAGE: list[Path] = []


@schemathesis.check
def not_a_server_error_but_a_declared_501_or_507(ctx, response, case):  # type: ignore[no-untyped-def]
    """No 5xx, but for a 501 or a 507 the operation declares: oEmbed's answer, by its spec, to
    a format it does not offer (`GET /oembed?format=xml`) is a 501 Not Implemented, not a
    fault; and a 507 that shows the disk cannot hold the size asked for (refused_for_space)."""
    declared = case.operation.definition.raw.get("responses", {})
    if response.status_code == 501 and "501" in declared:
        return None
    # The schema allows 64 GiB; a test machine's disk may have less free.
    if "507" in declared and refused_for_space(response, STORAGE[0]):
        return None
    return not_a_server_error(ctx, response, case)


# What the platform promises for any input: no 5xx, and every answer (errors included) is
# one the schema declares. (Schema-valid input may still be refused with a 4xx that says why:
# an extension, a declaration that does not add up, a job in the wrong state.)
CHECKS = [
    not_a_server_error_but_a_declared_501_or_507,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_fuzzing_finds_no_server_error_or_schema_violation(platform, transcoded, service):
    STORAGE[:] = [platform.storage]
    schema = schemathesis.openapi.from_url(f"{platform.service_url(service)}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            case.call_and_validate(checks=CHECKS, headers=platform.auth)

        fuzz()
