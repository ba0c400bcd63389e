"""Schemathesis against the app's own OpenAPI schema: no 5xx and no response that breaks the schema.

Examples per operation are few (the suite must stay fast); the generated world has real ids, so many
requests reach the handlers rather than failing validation. Slow work (the synthetic generator, maps,
extraction) is only queued here, never run.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from .conftest import make_world

CHECKS = [checks.not_a_server_error, checks.response_schema_conformance, checks.status_code_conformance,
          checks.content_type_conformance]
SKIP: set[str] = set()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, make_images):
    from featscope.server import create_app

    world = make_world(tmp_path_factory.mktemp("fuzzed"), make_images, max_upload_bytes=200_000)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(world.settings))


def test_api_conforms_to_its_schema(api_schema):
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 30
    failures = []
    for op in operations:
        if op.path in SKIP:
            continue

        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        @given(case=op.as_strategy())
        def run(case):
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as e:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:1500]}")
    assert not failures, "\n\n".join(failures)
