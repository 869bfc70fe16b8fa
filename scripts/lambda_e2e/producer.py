"""The producer's cases: each request sent as a REST (v1) and an HTTP API (v2) proxy event to the
producer Lambda; 4xx bodies compared with what the same binary answers as the local server."""

from __future__ import annotations

import gzip
import json
import random
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

from . import events

TYPES = ["page_view", "click", "search", "add_to_cart", "purchase"]
# The local stack's site (config/sites.json); the sendBeacon case sends it in the body instead.
SITE_KEY = "pk_local_demo"
JSON = {"Content-Type": "application/json", "User-Agent": events.USER_AGENT, "X-Site-Key": SITE_KEY}


def event(rng: random.Random, with_id: bool = True) -> dict:
    t = rng.choice(TYPES)
    e = {
        "event_type": t,
        "anonymous_id": f"anon-{rng.randrange(10_000)}",
        "session_id": f"s-{rng.randrange(1_000)}",
        "url": f"https://shop.example/{t}/{rng.randrange(100)}",
        "properties": {"n": rng.randrange(1000), "tag": rng.choice(["a", "b", "c"])},
    }
    if t == "purchase":  # what schemas/tracking-plan/purchase.json requires (enforced)
        e["properties"] |= {"amount": rng.randrange(100, 10_000) / 100, "currency": "EUR"}
    if with_id:
        e["event_id"] = str(uuid.uuid4())
    return e


@dataclass
class Case:
    """One HTTP request and what must come back."""

    name: str
    headers: dict[str, str]
    body: bytes
    status: int
    sent: list[dict] | None = None  # the events, for 202s: to map event_ids to types
    base64: bool = False
    method: str = "POST"
    path: str = "/events"
    compare_local: bool = False  # 4xx: the local server must answer the same JSON body


def cases(rng: random.Random) -> list[Case]:
    single = event(rng)
    batch = [event(rng, with_id=i % 10 != 0) for i in range(500)]
    zipped = [event(rng) for _ in range(20)]
    beacon = [event(rng, with_id=False) for _ in range(5)]
    partial = [event(rng) for _ in range(3)] + [{"event_type": "Not Valid"}]
    too_many = [event(rng) for _ in range(501)]
    big = [event(rng)]
    big[0]["properties"] = {"pad": "x" * 8000}
    oversized = json.dumps(big * 140).encode()  # > 1 MiB of otherwise valid JSON
    assert len(oversized) > 1024 * 1024
    bomb = gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]")
    return [
        Case("single event", JSON, json.dumps(single).encode(), 202, [single]),
        Case("500-event batch", JSON, json.dumps(batch).encode(), 202, batch),
        Case("gzip body (base64)", {**JSON, "Content-Encoding": "gzip"},
             gzip.compress(json.dumps({"events": zipped}).encode()), 202, zipped, base64=True),
        Case("sendBeacon text/plain", {"Content-Type": "text/plain;charset=UTF-8", "User-Agent": events.USER_AGENT},
             json.dumps({"site_key": SITE_KEY, "events": beacon}).encode(), 202, beacon),
        Case("one invalid of four", JSON, json.dumps(partial).encode(), 202, partial),
        Case("health", {"User-Agent": events.USER_AGENT}, b"", 200, method="GET", path="/health"),
        Case("400 not JSON", JSON, b"this is not json {", 400, compare_local=True),
        Case("400 no valid event", JSON, json.dumps([{"event_type": "Not Valid"}]).encode(), 400, compare_local=True),
        Case("400 gzip header, plain body", {**JSON, "Content-Encoding": "gzip"}, json.dumps(single).encode(), 400,
             compare_local=True),
        Case("413 501 events", JSON, json.dumps(too_many).encode(), 413, compare_local=True),
        Case("413 body over 1 MiB", JSON, oversized, 413, compare_local=True),
        Case("413 gzip inflating past 1 MiB", {**JSON, "Content-Encoding": "gzip"}, bomb, 413, base64=True,
             compare_local=True),
        Case("415 content type", {"Content-Type": "application/xml", "User-Agent": events.USER_AGENT, "X-Site-Key": SITE_KEY},
             json.dumps(single).encode(), 415, compare_local=True),
        Case("415 content encoding", {**JSON, "Content-Encoding": "br"}, json.dumps(single).encode(), 415,
             compare_local=True),
    ]


def proxy_event(version: int, case: Case) -> dict:
    build = events.api_gateway_v1 if version == 1 else events.api_gateway_v2
    body = case.body if case.method == "POST" else None
    return build(case.method, case.path, case.headers, body, base64_encoded=case.base64)


def local_request(port: int, case: Case) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{case.path}", data=case.body if case.method == "POST" else None,
                                     method=case.method, headers=case.headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def acked_types(case: Case, body: dict) -> dict[str, str]:
    """event_id -> event_type for a 202: the accepted events are the sent ones minus the rejected
    indexes, in order; client-chosen IDs must come back unchanged."""
    rejected = {r["index"] for r in body["rejected"]}
    accepted = [e for i, e in enumerate(case.sent) if i not in rejected]
    ids = body["event_ids"]
    if len(ids) != len(accepted) or body["accepted"] != len(accepted):
        raise AssertionError(f"{case.name}: {len(accepted)} valid events sent, 202 says {body['accepted']} / {len(ids)} ids")
    out = {}
    for e, event_id in zip(accepted, ids):
        if "event_id" in e and e["event_id"] != event_id:
            raise AssertionError(f"{case.name}: client event_id {e['event_id']} came back as {event_id}")
        out[event_id] = e["event_type"]
    return out
