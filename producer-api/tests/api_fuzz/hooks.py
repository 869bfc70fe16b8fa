"""Schemathesis extensions for producer-api/openapi.yaml (loaded by producer-api/tests/schemathesis_api.rs).

Two things about POST /events are true by design and cannot be written in OpenAPI 3.0, the
dialect API Gateway imports. These hooks teach schemathesis exactly those two and nothing more,
so every other disagreement between the server and the spec still fails the run:

1. A batch is checked event by event: a schema-violating event is listed in `rejected` and the
   valid ones are accepted (202). A negative request answered 202 is forgiven only when the
   response names a rejected event.
2. A few rules depend on more than one value or on the clock: the event is at most 32 KiB and
   `properties` at most 8 KiB of compact JSON, the body at most 1 MiB, `occurred_at` (corrected
   by `sent_at`) from 31 days before to 10 minutes after the receive time, and property keys at most 128 characters (OpenAPI 3.0 has no
   `propertyNames`). A schema-valid event rejected for one of these reasons is forgiven; one
   rejected for any other reason fails the run, in a batch too (the check below).
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _json(response: Any) -> dict:
    try:
        body = response.json()
    except Exception:  # not JSON: nothing to forgive
        return {}
    return body if isinstance(body, dict) else {}


def _unexpressible(entry: Any) -> bool:
    """Whether a `rejected` entry names one of the rules of point 2 (reasons from schemas/src/event.rs)."""
    if not isinstance(entry, dict):
        return False
    field, reason = str(entry.get("field", "")), str(entry.get("reason", ""))
    if field == "occurred_at":
        return "in the future" in reason or "in the past" in reason
    if field.startswith("/properties") and "(tracking plan " in reason:
        return True  # the event type's plan (schemas/tracking-plan/), which the spec cannot carry
    if field in ("", "properties") and "bytes, the limit is" in reason:
        return True
    return (field == "properties" or field.startswith("properties.")) and "has a key longer than" in reason


def _rejected_only_for_unexpressible_rules(response: Any) -> bool:
    body = _json(response)
    if response.status_code == 413:
        # The body is over 1 MiB: a size the schema cannot bound (500 events of up to 32 KiB).
        return "bytes" in str(body.get("error", ""))
    rejected = body.get("rejected")
    return response.status_code == 400 and bool(rejected) and all(_unexpressible(r) for r in rejected)


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    """Keep a failure unless it is one of the two designed behaviours above."""
    if response is None:
        return True
    if failure.code == "ST201" and response.status_code == 202:
        return not _json(response).get("rejected")
    if failure.code == "ST202":
        return not _rejected_only_for_unexpressible_rules(response)
    return True


@schemathesis.check
def valid_events_are_not_rejected(ctx, response, case):
    """A schema-valid batch answered 202 may only list events rejected for a rule of point 2.

    positive_data_acceptance passes any 202, so without this a server that wrongly rejected valid
    events inside a batch would go unnoticed.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 202:
        return None
    wrong = [r for r in _json(response).get("rejected") or [] if not _unexpressible(r)]
    if wrong:
        raise AssertionError(f"schema-valid events were rejected: {wrong[:3]}")
    return None
