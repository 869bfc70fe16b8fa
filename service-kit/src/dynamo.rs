//! DynamoDB reads the tools share: a whole table, page by page.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::KitError;

/// One item, as the SDK gives it.
pub type Item = HashMap<String, AttributeValue>;

/// Every item of `table` with only the `projection` attributes (a projection expression),
/// following `LastEvaluatedKey` to the end.
pub async fn scan_all(client: &Client, table: &str, projection: &str) -> Result<Vec<Item>, KitError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .projection_expression(projection)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| KitError::DynamoDb {
                op: "Scan",
                table: table.to_owned(),
                message: aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            })?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}
