//! Reading what the API acknowledged from k6's console output (JSON or logfmt lines).

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::VerifyError;

/// Acknowledged events: event_id → event_type. The same ID may be acknowledged more than once
/// (client retries re-post a body); it is one event.
pub type Acks = HashMap<Uuid, String>;

/// Parses ack lines `{"ack": "<uuid>", "t": "<event_type>"}`, wrapped by k6 either as a JSON
/// log line (`--log-format=json`, the ack in `msg`) or as logfmt (`msg="{\"ack\":…}"`). Other
/// lines are ignored.
pub fn parse_acks(text: &str, acks: &mut Acks) -> Result<usize, VerifyError> {
    let mut n = 0;
    for line in text.lines() {
        let Some(inner) = ack_payload(line) else { continue };
        let v: serde_json::Value =
            serde_json::from_str(&inner).map_err(|e| VerifyError::Input(format!("bad ack payload {inner:?}: {e}")))?;
        let (Some(id), Some(t)) = (v["ack"].as_str(), v["t"].as_str()) else { continue };
        let id = Uuid::parse_str(id).map_err(|e| VerifyError::Input(format!("bad event id {id:?}: {e}")))?;
        acks.insert(id, t.to_owned());
        n += 1;
    }
    Ok(n)
}

fn ack_payload(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("ack").is_some() {
            return Some(line.to_owned());
        }
        return v["msg"].as_str().filter(|m| m.contains("\"ack\"")).map(str::to_owned);
    }
    // logfmt: msg="{\"ack\":\"…\",\"t\":\"…\"}"
    let start = line.find("msg=\"")? + 5;
    let rest = &line[start..];
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => break,
            c => out.push(c),
        }
    }
    out.contains("\"ack\"").then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_and_logfmt_lines_and_ignores_the_rest() {
        let text = concat!(
            r#"{"level":"info","msg":"{\"ack\":\"24ba3758-6617-4857-85d6-9287ab89a205\",\"t\":\"purchase\"}","time":"2026-11-28T06:41:46Z"}"#,
            "\n",
            r#"time="2026-11-28T06:40:00Z" level=info msg="{\"ack\":\"9cdb75a3-0000-4000-8000-000000000001\",\"t\":\"page_view\"}""#,
            "\n",
            r#"{"level":"warning","msg":"something else"}"#,
            "\n",
            r#"{"level":"info","msg":"{\"ack\":\"24ba3758-6617-4857-85d6-9287ab89a205\",\"t\":\"purchase\"}"}"#,
            "\n",
        );
        let mut acks = Acks::new();
        assert_eq!(parse_acks(text, &mut acks).unwrap(), 3);
        assert_eq!(acks.len(), 2);
        assert_eq!(acks[&Uuid::parse_str("9cdb75a3-0000-4000-8000-000000000001").unwrap()], "page_view");
    }
}
