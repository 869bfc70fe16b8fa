//! Reading every store back: the stream, the lake, DynamoDB, PostgreSQL and dead-letter rows.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use service_kit::dynamo::scan_all;
use service_kit::s3::Bucket;
use sqlx::Row;
use uuid::Uuid;

use crate::error::VerifyError;
use crate::reconcile::{SitePages, StoreView};

/// Records per `GetRecords` call. Kinesis answers at most 10 MB per call; kinesalite has no such
/// cap, and 10,000 packed records (up to 64 KiB each) in one JSON answer crash it. 150 full packs
/// stay under 10 MB.
const GET_RECORDS_PAGE: i32 = 150;

/// Where the stores are (the same environment variables as the pipeline's).
pub struct Stores {
    pub kinesis: aws_sdk_kinesis::Client,
    /// The lake bucket.
    pub lake: Bucket,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub pg: sqlx::PgPool,
    pub stream: String,
    pub table: String,
}

fn err<E: std::fmt::Display>(store: &'static str) -> impl FnOnce(E) -> VerifyError {
    move |e| VerifyError::Store { store, message: e.to_string() }
}

impl Stores {
    /// Every record on every shard (open and closed), decoded.
    pub async fn stream_view(&self) -> Result<StoreView, VerifyError> {
        let mut view = StoreView::new("kinesis stream");
        let shards = self.kinesis.list_shards().stream_name(&self.stream).send().await.map_err(err("kinesis"))?;
        for shard in shards.shards() {
            let mut it = self
                .kinesis
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(err("kinesis"))?
                .shard_iterator;
            while let Some(i) = it.take() {
                let out = self
                    .kinesis
                    .get_records()
                    .shard_iterator(i)
                    .limit(GET_RECORDS_PAGE)
                    .send()
                    .await
                    .map_err(err("kinesis"))?;
                for r in out.records() {
                    for data in schemas::record_events(r.data().as_ref()) {
                        if let Ok(e) = schemas::decode_record(data) {
                            view.add(e.event_id, &e.event_type);
                        }
                    }
                }
                let caught_up = out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0;
                it = if caught_up { None } else { out.next_shard_iterator().map(str::to_owned) };
            }
        }
        Ok(view)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, VerifyError> {
        Ok(self.lake.list(prefix).await.map_err(err("s3"))?.into_iter().map(|(key, _)| key).collect())
    }

    async fn get(&self, key: &str) -> Result<Bytes, VerifyError> {
        self.lake.get(key).await.map_err(err("s3"))
    }

    /// Every row of every Parquet file (event_id and event_type only), and the file count.
    pub async fn lake_view(&self) -> Result<(StoreView, usize), VerifyError> {
        let mut view = StoreView::new("parquet lake");
        let keys = self.keys("events/").await?;
        for key in &keys {
            let builder = ParquetRecordBatchReaderBuilder::try_new(self.get(key).await?).map_err(err("parquet"))?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["event_id", "event_type"]);
            for batch in builder.with_projection(mask).build().map_err(err("parquet"))? {
                let batch = batch.map_err(err("parquet"))?;
                let col = |name| {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>().cloned())
                };
                let (Some(ids), Some(types)) = (col("event_id"), col("event_type")) else {
                    return Err(VerifyError::Store { store: "parquet", message: format!("{key}: missing columns") });
                };
                for (id, t) in ids.iter().zip(types.iter()) {
                    if let (Some(id), Some(t)) = (id.and_then(|s| Uuid::parse_str(s).ok()), t) {
                        view.add(id, t);
                    }
                }
            }
        }
        Ok((view, keys.len()))
    }

    pub async fn dynamo_view(&self) -> Result<StoreView, VerifyError> {
        let mut view = StoreView::new("dynamodb");
        for item in scan_all(&self.dynamo, &self.table, "event_id, event_type").await.map_err(err("dynamodb"))? {
            let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
            if let (Some(id), Some(t)) = (s("event_id").and_then(|i| Uuid::parse_str(&i).ok()), s("event_type")) {
                view.add(id, &t);
            }
        }
        Ok(view)
    }

    /// Counts per event type over every site (the table has a row per site and type since
    /// migration 0004_site.sql; one run's events are all one site's, older rows are site '').
    pub async fn pg_counts(&self) -> Result<BTreeMap<String, i64>, VerifyError> {
        let rows = sqlx::query("SELECT event_type, SUM(event_count)::int8 FROM event_type_counts GROUP BY event_type")
            .fetch_all(&self.pg)
            .await
            .map_err(err("postgres"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `site_hourly` events per event type, over every site and hour.
    pub async fn site_hourly(&self) -> Result<BTreeMap<String, i64>, VerifyError> {
        let rows = sqlx::query("SELECT event_type, SUM(events)::int8 FROM site_hourly GROUP BY event_type")
            .fetch_all(&self.pg)
            .await
            .map_err(err("postgres"))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `site_daily_pages` events and page views, over every site, day and page.
    pub async fn site_pages(&self) -> Result<SitePages, VerifyError> {
        let row =
            sqlx::query("SELECT COALESCE(SUM(events), 0)::int8, COALESCE(SUM(views), 0)::int8 FROM site_daily_pages")
                .fetch_one(&self.pg)
                .await
                .map_err(err("postgres"))?;
        Ok(SitePages { events: row.get(0), views: row.get(1) })
    }

    /// `site_daily_countries` events, over every site, day and country ('' included).
    pub async fn site_countries(&self) -> Result<i64, VerifyError> {
        let row = sqlx::query("SELECT COALESCE(SUM(events), 0)::int8 FROM site_daily_countries")
            .fetch_one(&self.pg)
            .await
            .map_err(err("postgres"))?;
        Ok(row.get(0))
    }

    /// How many of `ids` the consumer has claimed: the cheap "has it caught up?" probe.
    pub async fn claimed(&self, ids: &[Uuid]) -> Result<usize, VerifyError> {
        let n: i64 = sqlx::query("SELECT count(*) FROM seen_events WHERE event_id = ANY($1)")
            .bind(ids)
            .fetch_one(&self.pg)
            .await
            .map_err(err("postgres"))?
            .get(0);
        Ok(n as usize)
    }

    /// Dead-letter rows by reason, each (shard, sequence number) once.
    pub async fn quarantined(&self) -> Result<BTreeMap<String, u64>, VerifyError> {
        let mut seen = HashSet::new();
        let mut by_reason = BTreeMap::new();
        for key in self.keys("dead-letter/").await? {
            let body = self.get(&key).await?;
            for line in String::from_utf8_lossy(&body).lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                // Records pack events: a position is the shard, the record and the line in it
                // (absent in rows from before packing: a record was one event then).
                let position = format!(
                    "{}/{}/{}",
                    v["shard_id"].as_str().unwrap_or(""),
                    v["sequence_number"].as_str().unwrap_or(""),
                    v["line"].as_u64().unwrap_or(0)
                );
                if seen.insert(position) {
                    *by_reason.entry(v["reason_code"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                }
            }
        }
        Ok(by_reason)
    }
}
