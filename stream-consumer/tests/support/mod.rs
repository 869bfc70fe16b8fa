//! Test environment on the real local stack: a fresh bucket, table and database per test.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use service_kit::aws::{self, Retries};
use sqlx::Row;
use sqlx::postgres::PgConnectOptions;
use stream_consumer::sinks::dynamo::DynamoItems;
use stream_consumer::sinks::postgres::PgLedger;
use stream_consumer::sinks::s3::S3Lake;
use stream_consumer::{HandlerSettings, Pipeline};
use uuid::Uuid;

pub struct TestEnv {
    pub aws: aws_config::SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub bucket: String,
    pub table: String,
    pub database: String,
    pub ledger: PgLedger,
}

pub fn settings() -> HandlerSettings {
    stream_consumer::testing::settings()
}

fn require_stack() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_S3").is_some(),
        "integration tests need the local stack: run `make test` (or `make up` and `source scripts/env.sh`)"
    );
}

/// A new, empty database (no migrations applied), named `<prefix>_<random hex>`: a superuser
/// pool on it and its connection options. Needs only PostgreSQL, not the AWS emulators.
pub async fn empty_database(prefix: &str) -> (sqlx::PgPool, PgConnectOptions) {
    let name = format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..12]);
    let admin = sqlx::PgPool::connect(&admin_url()).await.expect("connect admin");
    // The prefix is a test's literal and the rest hex from a UUID, so formatting it in is safe.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.expect("create database");
    admin.close().await;
    let options = admin_url().parse::<PgConnectOptions>().unwrap().database(&name);
    (sqlx::PgPool::connect_with(options.clone()).await.unwrap(), options)
}

/// The URL of database `name` on the test server, as a `DATABASE_URL` would name it.
pub fn database_url(name: &str) -> String {
    let admin = admin_url();
    let server = admin.rsplit_once('/').map_or(admin.as_str(), |(server, _)| server);
    format!("{server}/{name}")
}

fn admin_url() -> String {
    std::env::var("TEST_ADMIN_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestEnv {
    /// A fresh, uniquely named bucket, table and database, so tests can run in parallel.
    pub async fn new() -> TestEnv {
        require_stack();
        // The clients the consumer's `main` builds, with the same retry owners.
        let aws = aws::load().await;
        let s3 = aws::s3(&aws, Retries::Sdk);
        let dynamo = aws::dynamodb(&aws, Retries::Ours);
        let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let bucket = format!("test-lake-{suffix}");
        let table = format!("test-events-{suffix}");
        let database = format!("test_{suffix}");
        s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        // The table as terraform/dynamodb.tf and the local bootstrap make it: keyed by event, no
        // index (forget finds a visitor's items through the lake rows it erases).
        let string_key = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().unwrap()
        };
        let hash_key =
            |name: &str| KeySchemaElement::builder().attribute_name(name).key_type(KeyType::Hash).build().unwrap();
        let create = dynamo
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_key("event_id"))
            .key_schema(hash_key("event_id"));
        create.send().await.expect("create table");
        for _ in 0..100 {
            let d = dynamo.describe_table().table_name(&table).send().await.unwrap();
            if d.table().and_then(|t| t.table_status()).is_some_and(|s| s.as_str() == "ACTIVE") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let admin = sqlx::PgPool::connect(&admin_url()).await.expect("connect admin");
        // The name is ours (hex from a UUID), never input, so formatting it in is safe.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let options: PgConnectOptions = admin_url().parse::<PgConnectOptions>().unwrap().database(&database);
        let ledger = PgLedger::connect(options);
        ledger.migrate().await.expect("migrate");
        TestEnv { aws, s3, dynamo, bucket, table, database, ledger }
    }

    pub fn pipeline(&self) -> Pipeline<S3Lake, DynamoItems, PgLedger> {
        self.pipeline_with(DynamoItems::new(self.dynamo.clone(), self.table.clone()))
    }

    pub fn pipeline_with<D: stream_consumer::sinks::dynamo::ItemStore>(
        &self,
        items: D,
    ) -> Pipeline<S3Lake, D, PgLedger> {
        Pipeline::new(S3Lake::new(self.s3.clone(), self.bucket.clone()), items, self.ledger.clone(), settings())
    }

    pub fn dynamo_items(&self) -> DynamoItems {
        DynamoItems::new(self.dynamo.clone(), self.table.clone())
    }

    /// Keys under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            keys.extend(page.unwrap().contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        }
        keys.sort();
        keys
    }

    pub async fn object(&self, key: &str) -> Bytes {
        let out = self.s3.get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        out.body.collect().await.unwrap().into_bytes()
    }

    /// Every event_id in every Parquet file of the lake (with repeats, to catch duplicates).
    pub async fn lake_event_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for key in self.keys("events/").await {
            let reader = ParquetRecordBatchReaderBuilder::try_new(self.object(&key).await).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name("event_id").unwrap();
                let col = col.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
                ids.extend(col.iter().map(|v| v.unwrap().to_owned()));
            }
        }
        ids
    }

    /// Every `site` in every Parquet file of the lake (None for null), with repeats.
    pub async fn lake_sites(&self) -> Vec<Option<String>> {
        self.lake_text_column("site").await
    }

    /// Every value of the text column `name` in every Parquet file of the lake (None for null),
    /// with repeats.
    pub async fn lake_text_column(&self, name: &str) -> Vec<Option<String>> {
        let mut values = Vec::new();
        for key in self.keys("events/").await {
            let reader = ParquetRecordBatchReaderBuilder::try_new(self.object(&key).await).unwrap().build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name(name).unwrap();
                let col = col.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
                values.extend(col.iter().map(|v| v.map(str::to_owned)));
            }
        }
        values
    }

    /// Every item's `site` attribute (None when absent), with repeats.
    pub async fn dynamo_sites(&self) -> Vec<Option<String>> {
        self.dynamo_text_attribute("site").await
    }

    /// Every item's string attribute `name` (None when absent), with repeats.
    pub async fn dynamo_text_attribute(&self, name: &str) -> Vec<Option<String>> {
        let projection = format!("event_id, {name}");
        let items = service_kit::dynamo::scan_all(&self.dynamo, &self.table, &projection).await.unwrap();
        items.iter().map(|i| i.get(name).and_then(|v| v.as_s().ok()).cloned()).collect()
    }

    /// `site_daily_country_stats` rows as (site, day, country, events, visitors), sorted.
    pub async fn site_country_stats(&self) -> Vec<(String, chrono::NaiveDate, String, i64, i64)> {
        let rows = sqlx::query(
            "SELECT site, day, country, events, visitors FROM site_daily_country_stats ORDER BY site, day, country",
        )
        .fetch_all(self.ledger.pool())
        .await
        .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
    }

    /// `event_type_counts` rows as (site, event type, count), sorted.
    pub async fn site_counts(&self) -> Vec<(String, String, i64)> {
        let rows = sqlx::query("SELECT site, event_type, event_count FROM event_type_counts ORDER BY site, event_type")
            .fetch_all(self.ledger.pool())
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    }

    pub async fn dynamo_count(&self) -> usize {
        service_kit::dynamo::scan_all(&self.dynamo, &self.table, "event_id").await.unwrap().len()
    }

    pub async fn counts(&self) -> HashMap<String, i64> {
        self.ledger.counts().await.unwrap().into_iter().collect()
    }

    pub async fn hourly_total(&self) -> i64 {
        sqlx::query("SELECT COALESCE(SUM(event_count), 0)::int8 FROM event_type_hourly_counts")
            .fetch_one(self.ledger.pool())
            .await
            .unwrap()
            .get(0)
    }

    /// `site_hourly_stats` rows as (site, event type, hour, events, visitors), sorted.
    pub async fn site_hourly_stats(&self) -> Vec<(String, String, chrono::DateTime<chrono::Utc>, i64, i64)> {
        let rows = sqlx::query(
            "SELECT site, event_type, hour, events, visitors FROM site_hourly_stats ORDER BY site, event_type, hour",
        )
        .fetch_all(self.ledger.pool())
        .await
        .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
    }

    /// `site_daily_page_stats` rows as (site, day, path, events, views, visitors), sorted.
    pub async fn site_page_stats(&self) -> Vec<(String, chrono::NaiveDate, String, i64, i64, i64)> {
        let rows = sqlx::query(
            "SELECT site, day, path, events, views, visitors FROM site_daily_page_stats ORDER BY site, day, path",
        )
        .fetch_all(self.ledger.pool())
        .await
        .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
    }

    /// Distinct visitors of `site` over all its `site_hourly` rows: the union of the sketches,
    /// as dashboards compute a visitor count over several rows.
    pub async fn site_visitors(&self, site: &str) -> i64 {
        sqlx::query(
            "SELECT coalesce(hll_cardinality(hll_union_agg(visitors)), 0)::int8 FROM site_hourly WHERE site = $1",
        )
        .bind(site)
        .fetch_one(self.ledger.pool())
        .await
        .unwrap()
        .get(0)
    }
}
