//! The lake store: S3 `PutObject` of whole files and `HeadObject` existence checks.

use std::future::Future;

use aws_sdk_s3::Client;
use bytes::Bytes;
use service_kit::s3::Bucket;

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

/// The lake bucket, as the consumer writes it.
pub struct S3Lake {
    bucket: Bucket,
}

impl S3Lake {
    pub fn new(client: Client, bucket: String) -> Self {
        S3Lake { bucket: Bucket::new(client, bucket) }
    }

    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }
}

impl ObjectStore for S3Lake {
    async fn put(&self, key: &str, body: Bytes, content_type: &'static str) -> Result<(), ConsumerError> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "s3").increment(1);
        Ok(self.bucket.put(key, body, content_type).await?)
    }

    async fn exists(&self, key: &str) -> Result<bool, ConsumerError> {
        metrics::counter!("consumer_sink_requests_total", "sink" => "s3").increment(1);
        Ok(self.bucket.exists(key).await?)
    }
}
