//! The lake store: S3 `PutObject` of whole files and `HeadObject` existence checks.

use std::future::Future;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::error::ConsumerError;

/// What the handler needs from the lake (implemented by S3, and by memory in unit tests).
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes (or overwrites) one whole object.
    fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: &'static str,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;
    /// Whether an object exists.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool, ConsumerError>> + Send;
}

pub struct S3Lake {
    client: Client,
    bucket: String,
}

impl S3Lake {
    pub fn new(client: Client, bucket: String) -> Self {
        S3Lake { client, bucket }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl ObjectStore for S3Lake {
    async fn put(&self, key: &str, body: Bytes, content_type: &'static str) -> Result<(), ConsumerError> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "s3").increment(1);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| ConsumerError::S3 {
                op: "PutObject",
                key: key.to_owned(),
                message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, ConsumerError> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "s3").increment(1);
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(ConsumerError::S3 {
                op: "HeadObject",
                key: key.to_owned(),
                message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            }),
        }
    }
}
