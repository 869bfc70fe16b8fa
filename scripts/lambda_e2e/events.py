"""The events AWS hands our functions, built the way AWS builds them.

  api_gateway_v1 / api_gateway_v2   API Gateway REST (payload 1.0) and HTTP API (payload 2.0)
                                    proxy events for one HTTP request
  kinesis_event                     the event source mapping's KinesisEvent for a batch of
                                    records read from a stream (GetRecords output)
  scheduled_event                   EventBridge's "Scheduled Event"
  parse_proxy_response              a lambda_http response (statusCode, headers, body) back into
                                    (status, headers, body bytes)
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone

ACCOUNT = "123456789012"
API_ID = "e2eapi0001"
STAGE = "prod"
SOURCE_IP = "203.0.113.77"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) lambda-e2e"


def _now() -> tuple[str, int]:
    now = datetime.now(timezone.utc)
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000"), int(now.timestamp() * 1000)


def _body(body: bytes, base64_encoded: bool) -> str:
    return base64.b64encode(body).decode() if base64_encoded else body.decode()


def api_gateway_v1(method: str, path: str, headers: dict[str, str], body: bytes | None, base64_encoded: bool = False) -> dict:
    """A REST API proxy integration event (payload format 1.0), stage `prod`, as API Gateway sends
    it: `path` without the stage, `requestContext.path` with it, headers in both shapes."""
    request_time, epoch = _now()
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": API_ID,
            "extendedRequestId": request_id[:16],
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": SOURCE_IP,
                "user": None,
                "userAgent": headers.get("User-Agent", USER_AGENT),
                "userArn": None,
            },
            "path": f"/{STAGE}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": request_time,
            "requestTimeEpoch": epoch,
            "resourceId": "abc123",
            "resourcePath": path,
            "stage": STAGE,
        },
        "body": None if body is None else _body(body, base64_encoded),
        "isBase64Encoded": base64_encoded,
    }


def api_gateway_v2(method: str, path: str, headers: dict[str, str], body: bytes | None, base64_encoded: bool = False) -> dict:
    """An HTTP API proxy event (payload format 2.0), `$default` stage: lower-case header names,
    routeKey, requestContext.http."""
    request_time, epoch = _now()
    request_id = str(uuid.uuid4())
    lower = {k.lower(): v for k, v in headers.items()}
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": lower,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": f"{API_ID}.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": lower.get("user-agent", USER_AGENT),
            },
            "requestId": request_id[:16],
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": request_time,
            "timeEpoch": epoch,
        },
        **({} if body is None else {"body": _body(body, base64_encoded)}),
        "isBase64Encoded": base64_encoded,
    }


def parse_proxy_response(payload: dict) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body bytes) of a proxy integration response."""
    headers = {k.lower(): v for k, v in (payload.get("headers") or {}).items()}
    for k, values in (payload.get("multiValueHeaders") or {}).items():
        headers.setdefault(k.lower(), ",".join(values))
    body = payload.get("body") or ""
    raw = base64.b64decode(body) if payload.get("isBase64Encoded") else body.encode()
    return int(payload["statusCode"]), headers, raw


def stream_arn(stream: str, region: str = "us-east-1") -> str:
    return f"arn:aws:kinesis:{region}:{ACCOUNT}:stream/{stream}"


def kinesis_record(shard_id: str, record: dict, stream: str, region: str = "us-east-1") -> dict:
    """One KinesisEventRecord as the event source mapping writes it, from one GetRecords record
    (boto3 shape: SequenceNumber, ApproximateArrivalTimestamp as datetime, Data as bytes,
    PartitionKey)."""
    arrival = record["ApproximateArrivalTimestamp"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode(),
            # Seconds since the epoch with milliseconds, a JSON number.
            "approximateArrivalTimestamp": round(arrival.timestamp(), 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/analytics-consumer",
        "awsRegion": region,
        "eventSourceARN": stream_arn(stream, region),
    }


def kinesis_event(records: list[dict]) -> dict:
    """The invocation payload for a batch of KinesisEventRecords."""
    return {"Records": records}


def scheduled_event(rule: str = "analytics-compactor", region: str = "us-east-1") -> dict:
    """EventBridge's event for a schedule rule target without a constant `input`."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def payload_size(event: dict) -> int:
    return len(json.dumps(event, separators=(",", ":")).encode())
