//! The real [`RecordSink`]: `PutRecords` on a Kinesis stream through the AWS SDK.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::publish::{CallError, RecordResult, RecordSink, StreamRecord};

pub struct KinesisSink {
    client: Client,
    stream_name: String,
}

impl KinesisSink {
    pub fn new(client: Client, stream_name: String) -> Self {
        KinesisSink { client, stream_name }
    }
}

impl RecordSink for KinesisSink {
    async fn put_records(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, CallError> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.to_vec()))
                    .partition_key(&r.partition_key)
                    .build()
                    .map_err(|e| CallError { code: Some("ValidationException".into()), message: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .put_records()
            .stream_name(&self.stream_name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| CallError { code: e.code().map(str::to_owned), message: e.to_string() })?;
        Ok(out
            .records()
            .iter()
            .map(|r| match r.error_code() {
                None => RecordResult::Ok,
                Some(code) => RecordResult::Failed(code.to_owned()),
            })
            .collect())
    }
}
