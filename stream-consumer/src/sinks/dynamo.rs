//! DynamoDB: `BatchWriteItem` in chunks of 25 with bounded concurrency, `UnprocessedItems` retried with backoff.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::{StreamExt, TryStreamExt};
use schemas::dynamo::ItemValue;
use service_kit::retry::{ErrorClass, classify_aws_code};
use tokio::time::Instant;

use crate::error::ConsumerError;
use crate::sinks::SINK_RETRY;

/// Most items in one `BatchWriteItem` call (DynamoDB limit).
pub const DYNAMO_BATCH_MAX_ITEMS: usize = 25;

pub type Item = HashMap<String, AttributeValue>;

/// Converts the pure layout from `schemas::dynamo` into SDK attribute values.
pub fn to_item(fields: Vec<(&'static str, ItemValue)>) -> Item {
    fields
        .into_iter()
        .map(|(name, v)| {
            let value = match v {
                ItemValue::S(s) => AttributeValue::S(s),
                ItemValue::N(n) => AttributeValue::N(n),
                ItemValue::Bool(b) => AttributeValue::Bool(b),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// What the handler needs from the item store.
pub trait ItemStore: Send + Sync + 'static {
    /// Writes at most [`DYNAMO_BATCH_MAX_ITEMS`] items; returns those left unprocessed.
    fn write_batch(&self, items: Vec<Item>) -> impl Future<Output = Result<Vec<Item>, CallFailure>> + Send;
}

/// A failed `BatchWriteItem` call, with whether trying again can help.
#[derive(Debug)]
pub struct CallFailure {
    pub retryable: bool,
    pub message: String,
}

/// The one retry decision for whole-call failures: everything but a request that is wrong or
/// not allowed (`ErrorClass::Permanent`) is retried.
pub fn is_retryable(code: Option<&str>) -> bool {
    classify_aws_code(code) != ErrorClass::Permanent
}

pub struct DynamoItems {
    client: Client,
    table: String,
}

impl DynamoItems {
    pub fn new(client: Client, table: String) -> Self {
        DynamoItems { client, table }
    }
}

impl ItemStore for DynamoItems {
    async fn write_batch(&self, items: Vec<Item>) -> Result<Vec<Item>, CallFailure> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "dynamodb").increment(1);
        let requests = items
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| CallFailure { retryable: false, message: e.to_string() })?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>, CallFailure>>()?;
        let out = self.client.batch_write_item().request_items(&self.table, requests).send().await.map_err(|e| {
            CallFailure {
                retryable: is_retryable(e.code()),
                message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            }
        })?;
        Ok(out
            .unprocessed_items
            .and_then(|mut m| m.remove(&self.table))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.put_request.map(|p| p.item))
            .collect())
    }
}

/// Writes every item: chunks of 25, `concurrency` calls in flight, unprocessed items and
/// retryable failures retried with backoff until done or `deadline`, after which the batch fails
/// (and is retried as a whole — idempotent, since items are keyed by `event_id`).
pub async fn write_all<S: ItemStore>(
    store: &S,
    items: Vec<Item>,
    concurrency: usize,
    deadline: Instant,
) -> Result<(), ConsumerError> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(DYNAMO_BATCH_MAX_ITEMS));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(DYNAMO_BATCH_MAX_ITEMS).collect::<Vec<_>>());
    }
    futures::stream::iter(chunks)
        .map(|chunk| write_chunk(store, chunk, deadline))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn write_chunk<S: ItemStore>(store: &S, mut pending: Vec<Item>, deadline: Instant) -> Result<(), ConsumerError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        pending = match store.write_batch(pending.clone()).await {
            Ok(unprocessed) => unprocessed,
            Err(CallFailure { retryable: false, message }) => return Err(ConsumerError::Dynamo(message)),
            Err(CallFailure { retryable: true, message }) => {
                tracing::warn!(%message, "BatchWriteItem failed; retrying");
                pending
            }
        };
        if pending.is_empty() {
            return Ok(());
        }
        let Some(wait) = SINK_RETRY.backoff_within(attempt, deadline) else {
            return Err(ConsumerError::DynamoBudget {
                remaining: pending.len(),
                budget_ms: (deadline - started).as_millis(),
            });
        };
        metrics::counter!("consumer_dynamodb_unprocessed_retries_total").increment(1);
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Leaves the last item of every call unprocessed `times` times in total.
    struct Stingy {
        left: Mutex<u32>,
        calls: Mutex<Vec<usize>>,
        written: Mutex<Vec<Item>>,
    }

    impl ItemStore for Stingy {
        async fn write_batch(&self, mut items: Vec<Item>) -> Result<Vec<Item>, CallFailure> {
            assert!(items.len() <= DYNAMO_BATCH_MAX_ITEMS);
            self.calls.lock().unwrap().push(items.len());
            let mut left = self.left.lock().unwrap();
            let unprocessed = if *left > 0 && !items.is_empty() {
                *left -= 1;
                vec![items.pop().unwrap()]
            } else {
                vec![]
            };
            self.written.lock().unwrap().extend(items);
            Ok(unprocessed)
        }
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n).map(|i| HashMap::from([("event_id".to_owned(), AttributeValue::S(i.to_string()))])).collect()
    }

    /// Invariant: UnprocessedItems are retried until every item is written, and only they are resent.
    #[tokio::test(start_paused = true)]
    async fn unprocessed_items_are_retried_until_written() {
        let store = Stingy { left: Mutex::new(3), calls: Mutex::new(vec![]), written: Mutex::new(vec![]) };
        write_all(&store, items(60), 4, Instant::now() + Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.written.lock().unwrap().len(), 60);
        let calls = store.calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|n| **n == 1).count(), 3, "three single-item resends: {calls:?}");
    }

    /// Invariant: when the budget runs out the batch fails instead of hanging or dropping items.
    #[tokio::test(start_paused = true)]
    async fn budget_exhaustion_fails_the_batch() {
        let store = Stingy { left: Mutex::new(u32::MAX), calls: Mutex::new(vec![]), written: Mutex::new(vec![]) };
        let err = write_all(&store, items(5), 1, Instant::now() + Duration::from_millis(500)).await.unwrap_err();
        assert!(matches!(err, ConsumerError::DynamoBudget { remaining: 1, .. }), "{err}");
    }
}
