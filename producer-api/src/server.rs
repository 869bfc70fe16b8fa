//! The two ways to run the router: as a Lambda function, or as a long-running local server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::http::{AppState, Publisher, router};
use crate::publish::{Coalescer, RecordSink};

/// The router for Lambda: one request per invocation, so records are published directly.
pub fn lambda_app<S: RecordSink>(config: &Config, sink: S) -> Router {
    let state = AppState {
        publisher: Publisher::Direct { sink: Arc::new(sink), budget: config.publish_budget },
        trusted_proxy_hops: 0,
    };
    router(state, &config.cors_allowed_origins)
}

/// The router for the local server or a container behind a load balancer: concurrent
/// requests are coalesced into shared `PutRecords` calls; slow clients get 408.
pub fn server_app<S: RecordSink>(config: &Config, sink: S) -> Router {
    let coalescer = Coalescer::spawn(Arc::new(sink), config.linger, config.publish_budget);
    let state =
        AppState { publisher: Publisher::<S>::Coalescing(coalescer), trusted_proxy_hops: config.trusted_proxy_hops };
    router(state, &config.cors_allowed_origins)
        .layer(TimeoutLayer::with_status_code(http::StatusCode::REQUEST_TIMEOUT, config.request_timeout))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
