"""The app keeps the contract its OpenAPI document states, for every operation and every kind of caller.

Schemathesis reads the document the app serves (built here from `create_app`, so a new route is covered
the moment it exists), generates valid and invalid requests for each operation (the document's examples,
its boundary cases, then random ones), sends them in-process to the running app (conftest.py, bridge.py)
as each identity of world.py, and runs every check it has on each answer. The stateful tests follow the
document's links (and those Schemathesis infers from it): create an asset or an API key, then read,
change or revoke that very object.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation

import app
from app.main import create_app
from tests.contract import hooks
from tests.contract.bridge import BRIDGE
from tests.contract.conftest import contract_settings_for
from tests.contract.world import ADMIN, IDENTITIES, KNOWN_VALUES, USER, World

# Per operation and identity: every example and boundary case of the document, then this many random
# requests (valid and invalid ones). About two minutes for the whole module on a 2-core machine.
MAX_EXAMPLES = 50
# Stateful: scenarios per identity, and calls per scenario.
MAX_SCENARIOS = 40
MAX_STEPS = 8
REQUEST_TIMEOUT_S = 30
STREAMED = "/api/stream/sse"

# Where the document comes from: the app as the contract tests configure it (no connection is made).
UNREACHABLE = {
    "mongodb": "mongodb://127.0.0.1:9",
    "redis": "redis://127.0.0.1:9/0",
    "s3": "http://127.0.0.1:9",
    "chain": "http://127.0.0.1:9",
}
DOCUMENT: dict[str, Any] = create_app(
    contract_settings_for(UNREACHABLE, Path(tempfile.gettempdir()))
).openapi_schema.to_schema()

CONFIG = schemathesis.Config.from_dict(
    {
        "suppress-health-check": ["all"],
        "cache": {"enabled": False},
        # Reproducers print as sent: the credentials are this run's own, and `tokenId` is not a secret.
        "output": {"sanitization": {"enabled": False}},
        "request-timeout": REQUEST_TIMEOUT_S,
        "checks": {"enabled": True},
        "generation": {
            "max-examples": MAX_EXAMPLES,
            # Same requests on every run; nothing written to disk between runs.
            "deterministic": True,
            "database": "none",
            # Credentials are the identity's (world.py), sent as they are: a generated Authorization or
            # X-API-Key header next to them would only ever be refused (or be a 400: two credentials).
            "with-security-parameters": False,
        },
    }
)

load_all_checks()


@schemathesis.python.constants
def dynamicvault_source() -> object:
    """The app's own literals (roles, permissions, error codes, intervals...) for generated values: the
    object Schemathesis calls is the bridge, whose source says nothing about the app."""
    return app


def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> st.SearchStrategy:
    """Valid path and query parameters that name a token, a wallet or an asset type name a seeded one
    (world.KNOWN_VALUES) half of the time: random ones almost never meet an object."""
    choices = {}
    for location, values in (
        (ParameterLocation.PATH, case.path_parameters),
        (ParameterLocation.QUERY, case.query),
    ):
        if not isinstance(values, dict) or (case.meta is not None and case.meta.is_negative_at(location)):
            continue
        for name in values.keys() & KNOWN_VALUES.keys():
            choices[(location, name)] = st.one_of(st.none(), st.sampled_from(KNOWN_VALUES[name]))
    if not choices:
        return st.just(case)
    return st.fixed_dictionaries(choices).map(lambda drawn: with_values(case, drawn))


# Every check Schemathesis registers (its "all", with the one above); `object_level_authorization` acts
# only with WFC peers.
ALL_CHECKS = [check for check in CHECKS.get_all() if not isinstance(check, type)]


def with_values(
    case: schemathesis.Case, drawn: dict[tuple[ParameterLocation, str], Any]
) -> schemathesis.Case:
    path, query = dict(case.path_parameters), dict(case.query)
    for (location, name), value in drawn.items():
        if value is not None:
            (path if location == ParameterLocation.PATH else query)[name] = value
    case.path_parameters, case.query = path, query
    return case


def load_schema() -> schemathesis.BaseSchema:
    """The document as Schemathesis sees it, sending to the app behind the bridge (and, for its own
    follow-up requests such as the auth checks' probes, doing the same)."""
    # The SSE stream answers a valid request with a response that never ends: tests/events/test_stream.py
    # holds it to its document (its 200 media type and its 400 and 429 codes) on real api processes.
    loaded = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=CONFIG).exclude(path=STREAMED)
    loaded.app = BRIDGE
    loaded.hook(flatmap_case)
    return loaded


schema = load_schema()


@pytest.mark.parametrize("identity", IDENTITIES)
@schema.parametrize()
def test_every_operation_keeps_its_contract(case, identity: str, world: World):
    hooks.as_clients_send(case)
    case.call_and_validate(headers=world.headers(identity), checks=ALL_CHECKS)


@pytest.mark.parametrize("identity", [ADMIN, USER])
def test_linked_operations_keep_their_contract(identity: str, new_world: Callable[[], World]):
    """As an admin (who creates assets) and as a signed-in user (who creates API keys)."""
    # A schema of its own: Schemathesis adds the links it infers into the document it is given.
    linked = load_schema()

    class Scenario(linked.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from the same world, so that a failing one replays as it ran.
            self.world = new_world()

        def before_call(self, case) -> None:
            hooks.as_clients_send(case)

        def get_call_kwargs(self, case) -> dict[str, Any]:
            return {"headers": self.world.headers(identity)}

        def validate_response(self, response, case, additional_checks=None, **kwargs: Any) -> None:
            # The headers are passed on so that the auth checks know these credentials were the caller's.
            case.validate_response(
                response,
                checks=ALL_CHECKS,
                additional_checks=additional_checks,
                headers=kwargs.get("headers"),
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    Scenario.run(
        settings=hypothesis.settings(
            max_examples=MAX_SCENARIOS,
            stateful_step_count=MAX_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
    )


def test_all_of_schemathesis_checks_are_on():
    names = {check.__name__ for check in ALL_CHECKS}
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "ignored_auth",
        "use_after_free",
        "error_codes_are_documented",
    } <= names
