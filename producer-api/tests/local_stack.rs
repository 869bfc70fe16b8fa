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
    http_post_with(addr, content_type, "", body)
}

/// [`http_post`] with `extra` header lines (each ending in CRLF).
fn http_post_with(addr: std::net::SocketAddr, content_type: &str, extra: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nX-Site-Key: pk_local_demo\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// The country database the local stack installs (scripts/geoip.sh; scripts/env.sh exports
/// `GEOIP_COUNTRY_DB` when it is there). Required: CI's local stack installs it.
fn country_db() -> String {
    let path = std::env::var("GEOIP_COUNTRY_DB")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../.local/geoip/country.mmdb").into());
    assert!(std::path::Path::new(&path).exists(), "no country database at {path}: run bash scripts/geoip.sh");
    path
}

/// Invariant (#23): the country is looked up in the client's full address, before it is
/// anonymised: an event sent from a known public address (through one trusted proxy, so from
/// `X-Forwarded-For`) is on the stream with that address's country and only the anonymised
/// address; a loopback client gets no country.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_is_looked_up_before_the_address_is_anonymised() {
    // Google's public resolver and www.ripe.net: DB-IP places them here, as every database has
    // for years.
    const KNOWN: [(&str, &str); 2] = [("8.8.8.8", "US"), ("2001:67c:2e8:22::c100:68b", "NL")];
    let client = kinesis::client().await;
    let stream = kinesis::fresh_stream(&client, 1).await;
    let db = country_db();
    let config = Config::from_lookup(|k| match k {
        "STREAM_NAME" => Some(stream.clone()),
        "LINGER_MS" => Some("2".into()),
        "TRUSTED_PROXY_HOPS" => Some("1".into()),
        "GEOIP_COUNTRY_DB" => Some(db.clone()),
        "SITES_CONFIG" => Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sites.json").into()),
        _ => None,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        server_app(&config, KinesisSink::new(client.clone(), stream.clone())),
        std::future::pending(),
    ));

    let mut want: HashMap<uuid::Uuid, (Option<&str>, &str)> = HashMap::new();
    let mut requests = Vec::new();
    for (ip, country) in KNOWN {
        let id = uuid::Uuid::new_v4();
        want.insert(id, (Some(country), ip));
        requests.push((
            format!("X-Forwarded-For: {ip}\r\n"),
            json!({"event_id": id.to_string(), "event_type": "page_view"}),
        ));
    }
    // No header: the TCP peer (loopback) is the client, which no database places.
    let id = uuid::Uuid::new_v4();
    want.insert(id, (None, "127.0.0.1"));
    requests.push((String::new(), json!({"event_id": id.to_string(), "event_type": "page_view"})));
    for (header, body) in requests {
        let (status, answer) =
            tokio::task::spawn_blocking(move || http_post_with(addr, "application/json", &header, &body.to_string()))
                .await
                .unwrap();
        assert_eq!(status, 202, "{answer}");
    }

    let records = kinesis::read_all(&client, &stream).await;
    let events: Vec<&[u8]> = records.iter().flat_map(|r| schemas::record_events(r)).collect();
    assert_eq!(events.len(), want.len());
    for data in events {
        let text = std::str::from_utf8(data).unwrap();
        let event = schemas::decode_record(data).expect("records decode");
        let (country, ip) = want[&event.event_id];
        assert_eq!(event.country.as_deref(), country, "{text}");
        let anonymised = schemas::event::anonymise_ip(ip.parse().unwrap()).to_string();
        assert_eq!(event.client_ip.as_deref(), Some(anonymised.as_str()));
        assert!(!text.contains(ip), "the full address is not in the record: {text}");
    }
}
