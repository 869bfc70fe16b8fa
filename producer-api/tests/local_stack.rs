//! Integration: events posted over HTTP to the local server are on the Kinesis stream
//! (kinesalite), complete and unchanged.

#[path = "support/kinesis.rs"]
mod kinesis;

use service_kit::env::FromEnv;
use std::collections::HashMap;
use std::io::{Read, Write};

use producer_api::Config;
use producer_api::kinesis::KinesisSink;
use producer_api::server::{serve, server_app};
use serde_json::{Value, json};

/// A minimal HTTP/1.1 POST over a raw socket (no HTTP client dependency just for tests).
fn http_post(addr: std::net::SocketAddr, content_type: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nX-Site-Key: pk_local_demo\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status: u16 = raw[9..12].parse().unwrap();
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Invariant: every event acknowledged with 202 is on the stream, with exactly the fields sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_are_on_the_stream_complete_and_unchanged() {
    let client = kinesis::client().await;
    let stream = kinesis::fresh_stream(&client, 2).await;
    let config = Config::from_lookup(|k| match k {
        "STREAM_NAME" => Some(stream.clone()),
        "LINGER_MS" => Some("2".into()),
        "SITES_CONFIG" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json").into()),
        _ => None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server_app(&config, KinesisSink::new(client.clone(), stream.clone()));
    tokio::spawn(serve(listener, app, std::future::pending()));

    let mut sent: HashMap<String, Value> = HashMap::new();
    let batch: Vec<Value> = (0..120)
        .map(|i| {
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "event_type": "page_view", "anonymous_id": format!("a{i}"),
                   "url": format!("https://shop.example/p/{i}"), "properties": {"i": i, "nested": {"ok": true}}})
        })
        .collect();
    let single = json!({"event_id": uuid::Uuid::new_v4().to_string(), "event_type": "signup", "user_id": "u-1"});
    let beacon = json!({"events": [{"event_id": uuid::Uuid::new_v4().to_string(), "event_type": "click"}]});
    let requests = vec![
        ("application/json", Value::Array(batch.clone())),
        ("application/json", single.clone()),
        ("text/plain;charset=UTF-8", beacon.clone()),
    ];
    for e in batch.iter().chain([&single, &beacon["events"][0]]) {
        sent.insert(e["event_id"].as_str().unwrap().to_owned(), e.clone());
    }
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(ct, body)| tokio::task::spawn_blocking(move || http_post(addr, ct, &body.to_string())))
        .collect();
    let mut acked = 0;
    for h in handles {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 202, "{body}");
        acked += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(acked as usize, sent.len());

    let records = kinesis::read_all(&client, &stream).await;
    let events: Vec<&[u8]> = records.iter().flat_map(|r| schemas::record_events(r)).collect();
    assert_eq!(events.len(), sent.len(), "every acknowledged event is on the stream, once");
    assert!(records.len() < events.len(), "events travel packed: {} records", records.len());
    for data in events {
        let event = schemas::decode_record(data).expect("records decode");
        let original = &sent[&event.event_id.to_string()];
        let as_json = serde_json::to_value(&event).unwrap();
        for (field, value) in original.as_object().unwrap() {
            assert_eq!(&as_json[field], value, "field {field} unchanged");
        }
        assert!(event.client_ip.as_deref().is_some_and(|ip| ip.ends_with(".0")), "anonymised: {:?}", event.client_ip);
    }
}
