//! Forget's DynamoDB: a visitor's items found through the table's visitor indexes and deleted in `BatchWriteItem`s, unprocessed ones retried.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use schemas::dynamo::PARTITION_KEY;
use schemas::visitors::IdKind;
use service_kit::KitError;
use service_kit::retry::{ErrorClass, RetryPolicy, classify_aws_code};
use tokio::time::Instant;

use crate::ToolError;
use crate::forget::plan::Request;

/// Most requests in one `BatchWriteItem` call (DynamoDB limit).
pub const DYNAMO_BATCH_MAX_ITEMS: usize = 25;
/// How long one visitor's deletes may keep being retried before the run fails (and the next
/// run, finding what is left through the index, goes on).
const DELETE_BUDGET: Duration = Duration::from_secs(120);
const DELETE_RETRY: RetryPolicy = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2));

/// The index over each of the item's visitor attributes (terraform/dynamodb.tf and the local
/// stack's bootstrap create them): sparse, projecting the key and `site`.
pub fn index_name(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Anonymous => "by_anonymous_id",
        IdKind::User => "by_user_id",
    }
}

/// The events table, as forget uses it.
#[derive(Clone)]
pub struct VisitorItems {
    client: Client,
    table: String,
}

impl VisitorItems {
    pub fn new(client: Client, table: String) -> Self {
        VisitorItems { client, table }
    }

    /// Deletes every item of the request's visitor; returns how many it deleted. The index is
    /// eventually consistent: an item written a moment ago may only be found by the next run.
    pub async fn delete_visitor(&self, request: &Request) -> Result<u64, ToolError> {
        let keys = self.keys_of(request).await?;
        for chunk in keys.chunks(DYNAMO_BATCH_MAX_ITEMS) {
            self.delete_all(chunk).await?;
        }
        Ok(keys.len() as u64)
    }

    /// The event IDs of the visitor's items on its site (an empty site: items without one).
    async fn keys_of(&self, request: &Request) -> Result<Vec<String>, ToolError> {
        let attribute = request.kind.as_str();
        let filter = if request.site.is_empty() { "attribute_not_exists(site)" } else { "site = :site" };
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index_name(request.kind))
                .key_condition_expression("#v = :v")
                .filter_expression(filter)
                .projection_expression("#k")
                .expression_attribute_names("#v", attribute)
                .expression_attribute_names("#k", PARTITION_KEY)
                .expression_attribute_values(":v", AttributeValue::S(request.visitor.clone()))
                .set_exclusive_start_key(start);
            if !request.site.is_empty() {
                query = query.expression_attribute_values(":site", AttributeValue::S(request.site.clone()));
            }
            let out = query.send().await.map_err(|e| self.error("Query", DisplayErrorContext(e).to_string()))?;
            keys.extend(out.items().iter().filter_map(|item| item.get(PARTITION_KEY)?.as_s().ok().cloned()));
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Deletes `keys` (at most 25), retrying unprocessed ones and retryable failures.
    async fn delete_all(&self, keys: &[String]) -> Result<(), ToolError> {
        let deadline = Instant::now() + DELETE_BUDGET;
        let mut left: Vec<WriteRequest> = keys
            .iter()
            .map(|k| {
                let delete = DeleteRequest::builder()
                    .key(PARTITION_KEY, AttributeValue::S(k.clone()))
                    .build()
                    .map_err(|e| self.error("BatchWriteItem", e.to_string()))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_, ToolError>>()?;
        let mut attempt = 0;
        while !left.is_empty() {
            match self.client.batch_write_item().request_items(&self.table, left.clone()).send().await {
                Ok(out) => {
                    left = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                }
                Err(e) if retryable(e.code()) => {
                    tracing::warn!(error = %DisplayErrorContext(&e), "BatchWriteItem failed; retrying");
                }
                Err(e) => return Err(self.error("BatchWriteItem", DisplayErrorContext(e).to_string())),
            }
            if left.is_empty() {
                break;
            }
            let Some(wait) = DELETE_RETRY.backoff_within(attempt, deadline) else {
                return Err(self.error("BatchWriteItem", format!("{} deletes still unprocessed", left.len())));
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
        Ok(())
    }

    fn error(&self, op: &'static str, message: String) -> ToolError {
        ToolError::Kit(KitError::DynamoDb { op, table: self.table.clone(), message })
    }
}

/// The one retry decision for a whole failed delete call: all but a wrong or forbidden request.
fn retryable(code: Option<&str>) -> bool {
    classify_aws_code(code) != ErrorClass::Permanent
}
