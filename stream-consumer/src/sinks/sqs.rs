//! The on-failure queue: descriptors of batches given up on, sent by the local runner (Lambda's
//! event source mapping sends its own) and read, then deleted, by `replay`.

use aws_sdk_sqs::Client;

use crate::error::ConsumerError;

/// Most messages one `ReceiveMessage` call returns (an SQS limit).
pub const SQS_RECEIVE_MAX: i32 = 10;

/// One received message: its body, and the handle that deletes or releases it.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
    pub receipt: String,
}

/// An SQS queue of on-failure records.
#[derive(Clone)]
pub struct FailureQueue {
    client: Client,
    url: String,
}

impl FailureQueue {
    pub fn new(client: Client, url: String) -> Self {
        FailureQueue { client, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn err<E: std::error::Error + 'static>(
        &self,
        op: &'static str,
        e: aws_sdk_sqs::error::SdkError<E>,
    ) -> ConsumerError {
        ConsumerError::Sqs {
            op,
            queue: self.url.clone(),
            message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// Sends one on-failure record.
    pub async fn send(&self, body: String) -> Result<(), ConsumerError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| self.err("SendMessage", e))?;
        Ok(())
    }

    /// Up to [`SQS_RECEIVE_MAX`] messages, hidden from other readers for `hide_seconds` (a replay
    /// in progress must not be picked up by a second one); none once the queue is empty.
    pub async fn receive(&self, hide_seconds: i32) -> Result<Vec<QueueMessage>, ConsumerError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(SQS_RECEIVE_MAX)
            .visibility_timeout(hide_seconds)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| self.err("ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    id: m.message_id()?.to_owned(),
                    body: m.body()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                })
            })
            .collect())
    }

    /// Deletes a message whose batch has been replayed.
    pub async fn delete(&self, message: &QueueMessage) -> Result<(), ConsumerError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .send()
            .await
            .map_err(|e| self.err("DeleteMessage", e))?;
        Ok(())
    }

    /// Makes a message visible again at once (a dry run looked at it; a replay that failed
    /// leaves it for the next run).
    pub async fn release(&self, message: &QueueMessage) -> Result<(), ConsumerError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| self.err("ChangeMessageVisibility", e))?;
        Ok(())
    }
}
