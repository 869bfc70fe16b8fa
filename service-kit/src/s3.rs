//! One bucket of S3, as every tool uses it: whole-object puts, gets, heads, listings and batch
//! deletes, with errors that name the operation and the key.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use bytes::Bytes;

use crate::KitError;

/// Most keys in one `DeleteObjects` call (S3 limit).
pub const DELETE_MAX_KEYS: usize = 1000;

fn s3_error(op: &'static str, key: &str, e: impl std::error::Error) -> KitError {
    KitError::S3 { op, key: key.to_owned(), message: aws_sdk_s3::error::DisplayErrorContext(e).to_string() }
}

/// A bucket and the client that reaches it (see [`crate::aws::s3`] for who retries).
#[derive(Clone)]
pub struct Bucket {
    client: Client,
    name: String,
}

impl Bucket {
    pub fn new(client: Client, name: String) -> Self {
        Bucket { client, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes (or overwrites) one whole object.
    pub async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), KitError> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", key, e))?;
        Ok(())
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, KitError> {
        match self.client.head_object().bucket(&self.name).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(s3_error("HeadObject", key, e)),
        }
    }

    /// One whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes, KitError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", key, e))?;
        let body = out.body.collect().await.map_err(|e| s3_error("GetObject", key, e))?;
        Ok(body.into_bytes())
    }

    /// Every object under `prefix`, as (key, size in bytes).
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, KitError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.name).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", prefix, e))?;
            out.extend(
                page.contents().iter().filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0).max(0) as u64))),
            );
        }
        Ok(out)
    }

    /// Deletes `keys` (a missing key is not an error: deleting is idempotent, as a re-run needs).
    pub async fn delete(&self, keys: &[String]) -> Result<(), KitError> {
        for batch in keys.chunks(DELETE_MAX_KEYS) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", &batch[0], e))?;
            if let Some(failed) = out.errors().first() {
                return Err(KitError::S3 {
                    op: "DeleteObjects",
                    key: failed.key().unwrap_or_default().to_owned(),
                    message: format!(
                        "{} ({} keys not deleted)",
                        failed.message().unwrap_or_default(),
                        out.errors().len()
                    ),
                });
            }
        }
        Ok(())
    }
}
