//! The HTTP surface, shared by Lambda and the local server: routes, CORS, client address, responses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, ORIGIN, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use lambda_http::request::RequestContext;
use schemas::ServerFacts;
use schemas::limits::MAX_REQUEST_BYTES;
use serde::Serialize;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::ingest::{self, PreparedRecord, Rejected};
use crate::intake::Intake;
use crate::publish::{Coalescer, Delivery, RecordSink, publish_with_retry};
use crate::sites::{Credentials, SITE_KEY_HEADER, Sites};

/// How records reach Kinesis: directly per request (Lambda: one request per invocation), or
/// through the coalescer (local server: many concurrent requests share `PutRecords` calls).
pub enum Publisher<S: RecordSink> {
    Direct { sink: Arc<S>, budget: std::time::Duration },
    Coalescing(Coalescer),
}

impl<S: RecordSink> Publisher<S> {
    async fn publish(&self, records: Vec<PreparedRecord>) -> Vec<Delivery> {
        match self {
            Publisher::Direct { sink, budget } => publish_with_retry(sink.as_ref(), &records, *budget).await,
            Publisher::Coalescing(c) => c.publish(records).await,
        }
    }
}

pub struct AppState<S: RecordSink> {
    pub publisher: Publisher<S>,
    /// See `Config::trusted_proxy_hops`.
    pub trusted_proxy_hops: usize,
    /// Who may write: keys, origins (they also drive CORS) and limits.
    pub sites: Arc<Sites>,
    /// The deployment's event rules (age limit, tracking plans).
    pub intake: Arc<Intake>,
}

/// The router: `POST /events`, `GET /health`, CORS for the sites' origins (preflight included).
pub fn router<S: RecordSink>(state: AppState<S>) -> Router {
    let sites = state.sites.clone();
    // API Gateway REST APIs hand lambda_http the path with the stage in front
    // (`/prod/events`); HTTP APIs and the local server do not. Both forms are served.
    let app = Router::new()
        .route("/events", post(post_events::<S>).options(preflight_without_cors))
        .route("/{stage}/events", post(post_events::<S>).options(preflight_without_cors))
        .route("/health", get(health))
        .route("/{stage}/health", get(health))
        .fallback(not_found)
        .with_state(Arc::new(state))
        // A panic in a handler (a bug) is a 500 in the error shape, not a connection cut without
        // an answer (local server) or the gateway's own 502 (Lambda).
        .layer(CatchPanicLayer::custom(panic_response));
    if !sites.has_origins() {
        return with_json_errors(app);
    }
    // A preflight carries no key, so CORS answers for the union of the sites' origins; the
    // request itself is then checked against its own key's origins (403 otherwise).
    with_json_errors(
        app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                    origin.to_str().is_ok_and(|o| sites.any_allows_origin(o))
                }))
                .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
                .allow_headers([CONTENT_TYPE, CONTENT_ENCODING, HeaderName::from_static(SITE_KEY_HEADER)])
                // The tracker reads it to back off on 429/503.
                .expose_headers([RETRY_AFTER])
                .max_age(std::time::Duration::from_secs(86_400)),
        ),
    )
}

/// `router` wrapped so that every error answer of the layers inside it is in the API's error
/// shape (see [`json_errors`]). Applied again outside any layer added later (the local server's
/// timeout), which is harmless: an answer already in the shape passes unchanged.
pub fn with_json_errors(router: Router) -> Router {
    router.layer(axum::middleware::map_response(json_errors))
}

/// Gives an error answer that has no JSON body the API's error body: the 405 of axum's method
/// router, the 408 of the timeout layer, and whatever else a layer answers by itself. Every 4xx
/// and 5xx then reads alike to a client (`{"error": "..."}`, `Content-Type: application/json`,
/// openapi.yaml's `Error`); headers (`Allow`, `Retry-After`, CORS) are kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"application/json");
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(error_body(status)))
}

/// The error body for an answer the API's own code did not write (the layers', or hyper's own:
/// see `server::TimedStream`): `{"error": "..."}` with a message that says what to do.
pub fn error_body(status: StatusCode) -> String {
    json!({ "error": default_message(status) }).to_string()
}

fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "the request is malformed",
        StatusCode::NOT_FOUND => "no such route: the API serves POST /events and GET /health",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route: see the Allow header",
        StatusCode::REQUEST_TIMEOUT => "the request did not arrive in time; resend it",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        StatusCode::URI_TOO_LONG => "the request URI is too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "the request's header fields are too large or too many",
        StatusCode::INTERNAL_SERVER_ERROR => "internal error",
        other => other.canonical_reason().unwrap_or("error"),
    }
}

/// A handler's panic (the panic itself is logged by the panic hook).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Any route the API does not serve.
async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, default_message(StatusCode::NOT_FOUND))
}

/// `OPTIONS /events` when no origin is allowed. The CORS layer, when configured, answers every
/// preflight before routing; without it the route would be a 405 that openapi.yaml (and so API
/// Gateway's route table) does not describe. Answer like the layer does for an origin it does not
/// allow: 200 with no `Access-Control-*` header, which a browser reads as "not allowed".
async fn preflight_without_cors() -> StatusCode {
    StatusCode::OK
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Unaccepted {
    index: usize,
    event_id: Uuid,
}

async fn post_events<S: RecordSink>(State(state): State<Arc<AppState<S>>>, request: Request) -> Response {
    let started = Instant::now();
    let received_at = Utc::now();
    let (parts, body) = request.into_parts();
    let facts = ServerFacts {
        received_at,
        client_ip: client_ip(&parts.headers, &parts.extensions, state.trusted_proxy_hops),
        user_agent: parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
    };
    let response = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Err(e) if is_length_limit(&e) => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, &format!("body exceeds {MAX_REQUEST_BYTES} bytes"))
        }
        // A malformed chunked body or a client gone mid-upload is not "too large".
        Err(_) => error_response(StatusCode::BAD_REQUEST, "the request body could not be read"),
        Ok(bytes) => {
            let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
            let who = Credentials {
                header_key: header(HeaderName::from_static(SITE_KEY_HEADER)),
                body_key: None,
                origin: header(ORIGIN),
                client_ip: facts.client_ip,
            };
            match ingest::prepare_for_site(
                bytes,
                header(CONTENT_TYPE),
                header(CONTENT_ENCODING),
                &facts,
                &state.sites,
                who,
                &state.intake,
            ) {
                Err(e) => e.into_response(),
                Ok(prepared) => publish_and_respond(&state.publisher, prepared.records, prepared.rejected).await,
            }
        }
    };
    metrics::counter!("producer_requests_total", "status" => response.status().as_str().to_owned()).increment(1);
    metrics::histogram!("producer_request_duration_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// Whether reading the body failed on the size limit (somewhere in the error's source chain),
/// rather than on the connection or the framing.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

async fn publish_and_respond<S: RecordSink>(
    publisher: &Publisher<S>,
    records: Vec<PreparedRecord>,
    rejected: Vec<Rejected>,
) -> Response {
    metrics::counter!("producer_events_total", "outcome" => "rejected").increment(rejected.len() as u64);
    if records.is_empty() {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "no valid events", "rejected": rejected}));
    }
    let ids: Vec<(usize, Uuid)> = records.iter().map(|r| (r.index, r.event_id)).collect();
    let deliveries = publisher.publish(records).await;
    let mut accepted = Vec::with_capacity(ids.len());
    let mut unaccepted = Vec::new();
    let mut throttled = false;
    for ((index, event_id), delivery) in ids.into_iter().zip(deliveries) {
        match delivery {
            Delivery::Acked => accepted.push(event_id),
            Delivery::Failed { throttled: t } => {
                throttled |= t;
                unaccepted.push(Unaccepted { index, event_id });
            }
        }
    }
    metrics::counter!("producer_events_total", "outcome" => "accepted").increment(accepted.len() as u64);
    if unaccepted.is_empty() {
        return json_response(
            StatusCode::ACCEPTED,
            &json!({"accepted": accepted.len(), "event_ids": accepted, "rejected": rejected}),
        );
    }
    metrics::counter!("producer_events_total", "outcome" => "unaccepted").increment(unaccepted.len() as u64);
    // Never 202 while any event is not on the stream: the client must resend the unaccepted
    // ones (same event_id, so a resend of an event that did land is deduplicated downstream).
    let (status, message) = if throttled {
        (StatusCode::TOO_MANY_REQUESTS, "the stream is throttling; resend the unaccepted events later")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the stream is unavailable; resend the unaccepted events later")
    };
    let mut response = json_response(
        status,
        &json!({
            "error": message,
            "accepted": accepted.len(),
            "event_ids": accepted,
            "unaccepted": unaccepted,
            "rejected": rejected,
        }),
    );
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The client address: from API Gateway's request context on Lambda, else from
/// `X-Forwarded-For` when `trusted_hops` proxies are in front, else the TCP peer.
/// Taking the entry `trusted_hops` from the right (not the left-most) means a client cannot
/// choose its recorded address by sending its own header.
pub fn client_ip(headers: &HeaderMap, extensions: &http::Extensions, trusted_hops: usize) -> Option<IpAddr> {
    if let Some(ctx) = extensions.get::<RequestContext>() {
        let source = match ctx {
            RequestContext::ApiGatewayV1(c) => c.identity.source_ip.as_deref(),
            RequestContext::ApiGatewayV2(c) => c.http.source_ip.as_deref(),
            _ => None,
        };
        return source.and_then(|s| s.parse().ok());
    }
    if trusted_hops > 0 {
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if chain.len() >= trusted_hops
            && let Ok(ip) = chain[chain.len() - trusted_hops].parse()
        {
            return Some(ip);
        }
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

impl IntoResponse for crate::error::IngestError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status(), &self.to_string());
        if let crate::error::IngestError::RateLimited { retry_after_secs, .. } = self {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        response
    }
}
