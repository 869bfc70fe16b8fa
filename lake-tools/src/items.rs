//! The events table as the maintenance tools use it: expired items found by a Scan (retention), items looked up and deleted by key (retention, forget), unprocessed keys resent.
//!
//! Both batch calls answer with the keys DynamoDB left unprocessed; [`resend_unprocessed`] is the
//! one loop that resends them (the consumer's write style), for lookups and deletes alike.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, KeysAndAttributes, WriteRequest};
use chrono::{DateTime, Utc};
use schemas::dynamo::{PARTITION_KEY, TTL_ATTRIBUTE};
use service_kit::KitError;
use service_kit::retry::{ErrorClass, RetryPolicy, classify_aws_code};

use crate::ToolError;

/// Most keys in one `BatchWriteItem` (DynamoDB limit).
pub const DYNAMO_BATCH_MAX_ITEMS: usize = 25;
/// Most keys in one `BatchGetItem` (DynamoDB limit).
pub const DYNAMO_GET_MAX_KEYS: usize = 100;
/// Backoff between resends of unprocessed keys: the consumer's `SINK_RETRY` shape.
pub const RESEND_RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2));
/// Resends of one chunk's unprocessed keys before the run gives up on them: the next run finds
/// the same items again, so giving up loses nothing.
pub const RESEND_MAX_ATTEMPTS: u32 = 10;

/// A DynamoDB item's key.
pub type ItemKey = HashMap<String, AttributeValue>;

/// One Scan page: expired items' keys with their `expires_at`, and where the next page starts.
pub type ExpiredPage = (Vec<(ItemKey, Option<String>)>, Option<ItemKey>);

/// The key of the item of event `id` (the table is keyed by the event ID's canonical text, as
/// `schemas::dynamo` writes it).
pub fn event_key(id: u128) -> ItemKey {
    HashMap::from([(PARTITION_KEY.to_owned(), AttributeValue::S(uuid::Uuid::from_u128(id).to_string()))])
}

/// A failed batch call, with whether trying again can help.
#[derive(Debug)]
pub struct CallFailure {
    pub retryable: bool,
    pub message: String,
}

/// What one batch call did with its keys: the keys of the items it found (a lookup; a delete
/// finds nothing) and those it left unprocessed.
#[derive(Debug, Default)]
pub struct Answer {
    pub found: Vec<ItemKey>,
    pub unprocessed: Vec<ItemKey>,
}

/// The two batch calls, with their limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    Get,
    Delete,
}

impl BatchOp {
    fn name(self) -> &'static str {
        match self {
            BatchOp::Get => "BatchGetItem",
            BatchOp::Delete => "BatchWriteItem",
        }
    }

    fn max_keys(self) -> usize {
        match self {
            BatchOp::Get => DYNAMO_GET_MAX_KEYS,
            BatchOp::Delete => DYNAMO_BATCH_MAX_ITEMS,
        }
    }
}

/// The events table.
#[derive(Clone)]
pub struct EventItems {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl EventItems {
    /// `client` must be built with `Retries::Ours`: [`resend_unprocessed`] is the loop.
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        EventItems { client, table }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Deletes the items of `keys` (a missing item is no error); returns how many keys were
    /// processed.
    pub async fn delete(&self, keys: Vec<ItemKey>) -> Result<u64, ToolError> {
        let (done, _) = resend_unprocessed(BatchOp::Delete, &self.table, keys, |k| self.delete_batch(k)).await?;
        Ok(done)
    }

    /// The keys among `keys` whose item exists (strongly consistent reads, so an item written a
    /// moment ago is seen).
    pub async fn existing(&self, keys: Vec<ItemKey>) -> Result<Vec<ItemKey>, ToolError> {
        let (_, found) = resend_unprocessed(BatchOp::Get, &self.table, keys, |k| self.get_batch(k)).await?;
        Ok(found)
    }

    /// One page of a Scan for items whose `expires_at` is before `now`: their keys with their
    /// `expires_at`, and where the next page starts (`None` after the last).
    pub async fn expired_page(&self, now: DateTime<Utc>, start: Option<ItemKey>) -> Result<ExpiredPage, ToolError> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("#ttl < :now")
            .projection_expression("#key, #ttl")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#key", PARTITION_KEY)
            .expression_attribute_values(":now", AttributeValue::N(now.timestamp().to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| KitError::DynamoDb {
                op: "Scan",
                table: self.table.clone(),
                message: DisplayErrorContext(e).to_string(),
            })?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut item| {
                let expires = item.remove(TTL_ATTRIBUTE).and_then(|v| v.as_n().ok().cloned());
                let key = item.remove(PARTITION_KEY)?;
                Some((HashMap::from([(PARTITION_KEY.to_owned(), key)]), expires))
            })
            .collect();
        Ok((items, out.last_evaluated_key.filter(|k| !k.is_empty())))
    }

    /// One `BatchWriteItem` of at most 25 deletes.
    async fn delete_batch(&self, keys: Vec<ItemKey>) -> Result<Answer, CallFailure> {
        let requests = keys
            .into_iter()
            .map(|key| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key))
                    .build()
                    .map_err(|e| CallFailure { retryable: false, message: e.to_string() })?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, CallFailure>>()?;
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|e| call_failure(e.code().map(str::to_owned), DisplayErrorContext(e).to_string()))?;
        let unprocessed = out
            .unprocessed_items
            .and_then(|mut m| m.remove(&self.table))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.delete_request.map(|d| d.key))
            .collect();
        Ok(Answer { found: Vec::new(), unprocessed })
    }

    /// One `BatchGetItem` of at most 100 keys, reading only the key back.
    async fn get_batch(&self, keys: Vec<ItemKey>) -> Result<Answer, CallFailure> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .projection_expression("#k")
            .expression_attribute_names("#k", PARTITION_KEY)
            .consistent_read(true)
            .build()
            .map_err(|e| CallFailure { retryable: false, message: e.to_string() })?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, request)
            .send()
            .await
            .map_err(|e| call_failure(e.code().map(str::to_owned), DisplayErrorContext(e).to_string()))?;
        let found = out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
        let unprocessed =
            out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
        Ok(Answer { found, unprocessed })
    }
}

/// The one retry decision for a whole failed batch call: all but a wrong or forbidden request.
fn call_failure(code: Option<String>, message: String) -> CallFailure {
    CallFailure { retryable: classify_aws_code(code.as_deref()) != ErrorClass::Permanent, message }
}

/// Sends `keys` in chunks of `op`'s limit through `call` (one batch call), resending only the
/// unprocessed keys, with [`RESEND_RETRY`] backoff, at most [`RESEND_MAX_ATTEMPTS`] times per
/// chunk. Returns how many keys were processed, and the keys the calls found.
pub async fn resend_unprocessed<F, Fut>(
    op: BatchOp,
    table: &str,
    keys: Vec<ItemKey>,
    call: F,
) -> Result<(u64, Vec<ItemKey>), ToolError>
where
    F: Fn(Vec<ItemKey>) -> Fut,
    Fut: Future<Output = Result<Answer, CallFailure>>,
{
    let error =
        |message: String| ToolError::Kit(KitError::DynamoDb { op: op.name(), table: table.to_owned(), message });
    let (mut processed, mut found) = (0u64, Vec::new());
    for chunk in keys.chunks(op.max_keys()) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        loop {
            let before = pending.len();
            pending = match call(pending.clone()).await {
                Ok(answer) => {
                    found.extend(answer.found);
                    answer.unprocessed
                }
                Err(CallFailure { retryable: true, message }) if attempt < RESEND_MAX_ATTEMPTS => {
                    tracing::warn!(op = op.name(), %message, "batch call failed; retrying");
                    pending
                }
                Err(CallFailure { message, .. }) => return Err(error(message)),
            };
            processed += before.saturating_sub(pending.len()) as u64;
            if pending.is_empty() {
                break;
            }
            if attempt >= RESEND_MAX_ATTEMPTS {
                return Err(error(format!(
                    "{} keys still unprocessed after {RESEND_MAX_ATTEMPTS} resends",
                    pending.len()
                )));
            }
            tokio::time::sleep(RESEND_RETRY.backoff(attempt)).await;
            attempt += 1;
        }
    }
    Ok((processed, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn keys(n: usize) -> Vec<ItemKey> {
        (0..n).map(|i| HashMap::from([("event_id".to_owned(), AttributeValue::S(i.to_string()))])).collect()
    }

    fn number(key: &ItemKey) -> usize {
        key["event_id"].as_s().unwrap().parse().unwrap()
    }

    /// Leaves the last key of a call unprocessed `stingy` times, fails whole calls `failing` times;
    /// "finds" the keys with even numbers.
    struct Fake {
        max: usize,
        stingy: Mutex<u32>,
        failing: Mutex<(u32, bool)>,
        calls: Mutex<Vec<usize>>,
        processed: Mutex<usize>,
    }

    impl Fake {
        fn new(op: BatchOp, stingy: u32, failing: u32, retryable: bool) -> Self {
            Fake {
                max: op.max_keys(),
                stingy: Mutex::new(stingy),
                failing: Mutex::new((failing, retryable)),
                calls: Mutex::new(vec![]),
                processed: Mutex::new(0),
            }
        }

        async fn call(&self, mut keys: Vec<ItemKey>) -> Result<Answer, CallFailure> {
            assert!(keys.len() <= self.max);
            self.calls.lock().unwrap().push(keys.len());
            {
                let mut f = self.failing.lock().unwrap();
                if f.0 > 0 {
                    f.0 -= 1;
                    return Err(CallFailure { retryable: f.1, message: "boom".into() });
                }
            }
            let mut left = self.stingy.lock().unwrap();
            let unprocessed = if *left > 0 && !keys.is_empty() {
                *left -= 1;
                vec![keys.pop().unwrap()]
            } else {
                vec![]
            };
            *self.processed.lock().unwrap() += keys.len();
            let found = keys.into_iter().filter(|k| number(k).is_multiple_of(2)).collect();
            Ok(Answer { found, unprocessed })
        }
    }

    /// Invariant: deletes go 25 a call, and only the unprocessed keys are resent.
    #[tokio::test(start_paused = true)]
    async fn unprocessed_deletes_are_resent_alone() {
        let fake = Fake::new(BatchOp::Delete, 3, 0, true);
        let (n, _) = resend_unprocessed(BatchOp::Delete, "t", keys(60), |k| fake.call(k)).await.unwrap();
        assert_eq!((n, *fake.processed.lock().unwrap()), (60, 60));
        let calls = fake.calls.lock().unwrap();
        assert_eq!(calls.iter().filter(|&&c| c == 25).count(), 2, "{calls:?}");
        assert_eq!(calls.iter().filter(|&&c| c == 1).count(), 3, "three single-key resends: {calls:?}");
    }

    /// Invariant: lookups go 100 a call, and what a resend finds is kept with the rest, once.
    #[tokio::test(start_paused = true)]
    async fn lookups_collect_what_every_call_found() {
        let fake = Fake::new(BatchOp::Get, 2, 0, true);
        let (n, found) = resend_unprocessed(BatchOp::Get, "t", keys(250), |k| fake.call(k)).await.unwrap();
        assert_eq!(n, 250);
        let mut found: Vec<usize> = found.iter().map(number).collect();
        found.sort_unstable();
        assert_eq!(found, (0..250).step_by(2).collect::<Vec<_>>());
        assert_eq!(*fake.calls.lock().unwrap(), [100, 1, 1, 100, 50], "two single-key resends in the first chunk");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_call_failures_are_retried_and_permanent_ones_are_not() {
        let fake = Fake::new(BatchOp::Delete, 0, 2, true);
        assert_eq!(resend_unprocessed(BatchOp::Delete, "t", keys(5), |k| fake.call(k)).await.unwrap().0, 5);
        let fake = Fake::new(BatchOp::Delete, 0, 1, false);
        let err = resend_unprocessed(BatchOp::Delete, "t", keys(5), |k| fake.call(k)).await.unwrap_err();
        assert!(err.to_string().contains("boom") && err.to_string().contains("BatchWriteItem"), "{err}");
        assert_eq!(*fake.processed.lock().unwrap(), 0);
    }

    /// Invariant: a store that never processes a key ends the run with an error, not a hang.
    #[tokio::test(start_paused = true)]
    async fn endless_unprocessed_keys_fail_after_the_attempts() {
        let fake = Fake::new(BatchOp::Get, u32::MAX, 0, true);
        let err = resend_unprocessed(BatchOp::Get, "t", keys(3), |k| fake.call(k)).await.unwrap_err();
        assert!(err.to_string().contains("still unprocessed") && err.to_string().contains("BatchGetItem"), "{err}");
        assert_eq!(*fake.processed.lock().unwrap(), 2);
    }

    #[test]
    fn event_keys_are_the_canonical_uuid_text() {
        let id = uuid::Uuid::parse_str("0190A0B1-C2D3-7E4F-8A5B-6C7D8E9F0A1B").unwrap();
        let key = event_key(id.as_u128());
        assert_eq!(key[PARTITION_KEY].as_s().unwrap(), "0190a0b1-c2d3-7e4f-8a5b-6c7d8e9f0a1b");
    }
}
