//! A Lambda Runtime API on loopback (next / response / error), so tests drive a function binary
//! through the real `lambda_runtime` loop, as the Lambda service would.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response(serde_json::Value),
    Error(serde_json::Value),
}

#[derive(Default)]
struct Inner {
    queue: Mutex<VecDeque<(String, serde_json::Value)>>,
    outcomes: Mutex<HashMap<String, Outcome>>,
    queued: Notify,
    settled: Notify,
}

pub struct RuntimeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi { addr, inner }
    }

    /// Queues an invocation; returns its request id.
    pub fn invoke(&self, event: serde_json::Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.inner.queue.lock().unwrap().push_back((id.clone(), event));
        self.inner.queued.notify_one();
        id
    }

    /// Waits for the function's answer to `id`.
    pub async fn outcome(&self, id: &str, timeout: Duration) -> Outcome {
        tokio::time::timeout(timeout, async {
            loop {
                let settled = self.inner.settled.notified();
                if let Some(o) = self.inner.outcomes.lock().unwrap().get(id) {
                    return o.clone();
                }
                settled.await;
            }
        })
        .await
        .expect("the function answered in time")
    }

    /// Starts `binary` in Lambda mode against this Runtime API, with `env` added.
    pub fn spawn_function(&self, binary: &str, env: &[(&str, String)]) -> FunctionProcess {
        let mut cmd = Command::new(binary);
        cmd.env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "test-function")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "test-group")
            .stderr(Stdio::inherit());
        let stdout_path = std::env::temp_dir().join(format!("lambda-{}.out", uuid::Uuid::new_v4()));
        cmd.stdout(std::fs::File::create(&stdout_path).expect("stdout file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        FunctionProcess { child: cmd.spawn().expect("start the function binary"), stdout_path }
    }
}

/// Kills the function process when the test ends; its stdout (logs, EMF lines) is kept in a file.
pub struct FunctionProcess {
    child: Child,
    pub stdout_path: std::path::PathBuf,
}

impl FunctionProcess {
    /// Lines the function wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stdout_path);
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> Response {
    loop {
        let queued = inner.queued.notified();
        if let Some((id, event)) = inner.queue.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_str(&id).unwrap());
            let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            headers.insert("lambda-runtime-deadline-ms", HeaderValue::from_str(&deadline.to_string()).unwrap());
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:test-function"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, event.to_string()).into_response();
        }
        queued.await;
    }
}

fn settle(inner: &Inner, id: String, outcome: Outcome) -> StatusCode {
    inner.outcomes.lock().unwrap().insert(id, outcome);
    inner.settled.notify_waiters();
    StatusCode::ACCEPTED
}

async fn response(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    settle(&inner, id, Outcome::Response(value))
}

async fn error(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    settle(&inner, id, Outcome::Error(value))
}

async fn init_error(body: Bytes) -> StatusCode {
    panic!("function failed to initialise: {}", String::from_utf8_lossy(&body));
}
