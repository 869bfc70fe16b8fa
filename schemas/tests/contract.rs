//! Contract tests: Rust validation vs the published JSON Schema, and the lake schema vs Athena's rules.

use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use schemas::{EVENT_JSON_SCHEMA, lake, validate_event};
use serde_json::Value;

fn fixtures() -> Vec<Value> {
    serde_json::from_str(include_str!("fixtures/events.json")).expect("fixtures parse")
}

fn now() -> DateTime<Utc> {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// Invariant: every invalid fixture is rejected naming the field that is wrong; every valid one passes.
#[test]
fn rust_validation_matches_fixtures_and_names_the_field() {
    for fx in fixtures() {
        let name = fx["name"].as_str().unwrap();
        let result = validate_event(&fx["event"], now());
        if fx["valid"].as_bool().unwrap() {
            assert!(result.is_ok(), "{name}: expected valid, got {result:?}");
        } else {
            let err = result.expect_err(name);
            assert_eq!(err.field, fx["field"].as_str().unwrap(), "{name}: {err}");
            assert!(!err.reason.is_empty(), "{name}: empty reason");
        }
    }
}

/// Invariant: clients validating with event.schema.json get the same verdict as the API.
#[test]
fn json_schema_agrees_with_rust_validation() {
    let schema: Value = serde_json::from_str(EVENT_JSON_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::options().build(&schema).expect("schema compiles");
    let mut compared = 0;
    for fx in fixtures() {
        if fx.get("rust_only").is_some() {
            continue;
        }
        let name = fx["name"].as_str().unwrap();
        let rust = validate_event(&fx["event"], now()).is_ok();
        let json_schema = validator.is_valid(&fx["event"]);
        assert_eq!(rust, json_schema, "{name}: rust says {rust}, JSON Schema says {json_schema}");
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} fixtures compared");
}

/// Invariant: the lake schema only uses types Athena engine v3 reads from Parquet.
#[test]
fn arrow_schema_is_athena_safe() {
    let schema = lake::arrow_schema();
    assert_eq!(schema.fields().len(), lake::COLUMNS.len());
    for field in schema.fields() {
        let name = field.name();
        assert_eq!(name, &name.to_lowercase(), "column names must be lower case");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        match field.data_type() {
            DataType::Utf8 | DataType::Boolean | DataType::Int32 | DataType::Int64 | DataType::Float64 => {}
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) => assert_eq!(tz.as_ref(), "UTC", "{name}"),
            other => panic!("{name}: {other:?} is not Athena-safe"),
        }
    }
}

/// Invariant: lake_columns.json (read by the Terraform test) is the Arrow schema, column for column.
#[test]
fn lake_columns_json_matches_arrow_schema() {
    let doc: Value = serde_json::from_str(include_str!("../lake_columns.json")).unwrap();
    let listed: Vec<(String, String)> = doc["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["type"].as_str().unwrap().to_owned()))
        .collect();
    let schema = lake::arrow_schema();
    let from_arrow: Vec<(String, String)> = schema
        .fields()
        .iter()
        .map(|f| {
            let glue = match f.data_type() {
                DataType::Utf8 => "string",
                DataType::Boolean => "boolean",
                DataType::Timestamp(_, _) => "timestamp",
                other => panic!("no Glue type for {other:?}"),
            };
            (f.name().clone(), glue.to_owned())
        })
        .collect();
    assert_eq!(listed, from_arrow);
    let parts: Vec<&str> =
        doc["partition_keys"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(parts, ["dt", "hour"]);
}
