//! forget entry point: flags or the Lambda payload, configuration and clients, then one request or run.
//!
//! Lambda (`AWS_LAMBDA_RUNTIME_API` set): each invocation processes the pending requests, after
//! recording the one in an optional `{"request": {"site": …, "anonymous_id" | "user_id": …}}`.
//! Locally it is a command (`forget --help`). The exit status is 1 when the run failed or left
//! requests pending (run it again: it resumes).

// A command-line tool: its JSON lines on stdout are its output (beside the JSON log lines, which
// carry `level`).
#![allow(clippy::print_stdout)]

use anyhow::bail;
use clap::{ArgGroup, Args as ClapArgs, Parser, Subcommand};
use lake_tools::compact::store::LakeFiles;
use lake_tools::forget::{Forgetter, RunReport};
use lake_tools::items::EventItems;
use lambda_runtime::{LambdaEvent, service_fn};
use schemas::visitors::IdKind;
use service_kit::aws::{self, Retries};
use service_kit::env::{self, FromEnv};
use service_kit::postgres::{self, Database, DatabaseConfig};
use service_kit::telemetry;

/// Erases visitors from the lake and the events table on request (GDPR Art. 17, CCPA), keeping
/// an audit row per request with a hash of the ID, never the ID itself once done.
///
/// Reads LAKE_BUCKET, DYNAMODB_TABLE and the database settings (DATABASE_URL, or
/// DATABASE_SECRET_ARN with DATABASE_HOST/PORT/NAME, and DATABASE_SSL_ROOT_CERT) from the
/// environment, like the consumer.
#[derive(Debug, Parser)]
#[command(name = "forget", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record an erasure request (processed by the next `run`).
    Request(Visitor),
    /// Process every pending request: DynamoDB items, then lake objects; resumable.
    Run,
    /// Print the audit: one JSON line per request, newest first.
    Status,
}

/// Who to forget: one of the event's IDs, on one site.
#[derive(Debug, ClapArgs)]
#[group(skip)]
#[command(group = ArgGroup::new("id").required(true).args(["anonymous_id", "user_id"]))]
struct Visitor {
    /// The site the events were sent to (its id in the sites file; "" for events without one).
    #[arg(long, required = true)]
    site: String,
    /// The visitor's anonymous ID.
    #[arg(long)]
    anonymous_id: Option<String>,
    /// The visitor's user ID.
    #[arg(long)]
    user_id: Option<String>,
}

impl Visitor {
    fn id(&self) -> anyhow::Result<(IdKind, &str)> {
        visitor_id(self.anonymous_id.as_deref(), self.user_id.as_deref())
    }
}

/// The one ID a request names.
fn visitor_id<'a>(anonymous_id: Option<&'a str>, user_id: Option<&'a str>) -> anyhow::Result<(IdKind, &'a str)> {
    match (anonymous_id, user_id) {
        (Some(id), None) if !id.is_empty() => Ok((IdKind::Anonymous, id)),
        (None, Some(id)) if !id.is_empty() => Ok((IdKind::User, id)),
        _ => bail!("name exactly one visitor: a non-empty anonymous_id or user_id"),
    }
}

/// Connections per run: the run's lock, and one partition's lock with its commits.
const POOL_MAX_CONNECTIONS: u32 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Flags first, so `--help` works without any configuration.
    let args = (!telemetry::on_lambda()).then(Args::parse);
    telemetry::init_tracing();
    let env = env::process();
    let bucket = env.required("LAKE_BUCKET")?;
    let table = env.required("DYNAMODB_TABLE")?;
    let database = DatabaseConfig::from_settings(&env)?;
    let sdk = aws::load().await;
    let files = LakeFiles::new(aws::s3(&sdk, Retries::Sdk), bucket);
    let items = EventItems::new(aws::dynamodb(&sdk, Retries::Ours), table);
    let secrets = database.needs_secret().then(|| aws::secrets_manager(&sdk, Retries::Sdk));
    let db = Database::connect(database, secrets, "forget", POOL_MAX_CONNECTIONS).await?;

    let Some(args) = args else {
        let forgetter = std::sync::Arc::new(Forgetter::new(files, items, db));
        let handler = service_fn(move |event: LambdaEvent<serde_json::Value>| {
            let forgetter = forgetter.clone();
            async move {
                if let Some(request) = event.payload.get("request") {
                    let visitor: LambdaRequest = serde_json::from_value(request.clone())?;
                    let (kind, id) = visitor.id()?;
                    forgetter.request(&visitor.site, kind, id).await?;
                }
                let report = forgetter.run().await?;
                summarize(&report).map_err(lambda_runtime::Error::from)
            }
        });
        return lambda_runtime::run(handler).await.map_err(|e| anyhow::anyhow!(e));
    };

    postgres::MIGRATOR.run(db.pool()).await?;
    let forgetter = Forgetter::new(files, items, db);
    match args.command {
        Command::Request(visitor) => {
            let (kind, id) = visitor.id()?;
            let (request, new) = forgetter.request(&visitor.site, kind, id).await?;
            let line =
                serde_json::json!({"request": request, "new": new, "site": visitor.site, "id_kind": kind.as_str()});
            println!("{line}");
        }
        Command::Run => {
            let report = forgetter.run().await?;
            println!("{}", serde_json::to_string(&report)?);
            summarize(&report)?;
        }
        Command::Status => {
            for row in forgetter.status().await? {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
    }
    Ok(())
}

/// The Lambda payload's request: `{"site": …, "anonymous_id": …}` or with `user_id`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LambdaRequest {
    site: String,
    anonymous_id: Option<String>,
    user_id: Option<String>,
}

impl LambdaRequest {
    fn id(&self) -> anyhow::Result<(IdKind, &str)> {
        visitor_id(self.anonymous_id.as_deref(), self.user_id.as_deref())
    }
}

/// The run's summary, or an error saying why requests stay pending.
fn summarize(report: &RunReport) -> anyhow::Result<serde_json::Value> {
    let summary = serde_json::to_value(report)?;
    if report.halted || !report.errors.is_empty() {
        bail!("forget run failed: {}", report.errors.join("; "));
    }
    if !report.partitions_skipped.is_empty() {
        bail!("partitions held by a compactor, requests left pending: {}", report.partitions_skipped.join(", "));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn args(s: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("forget").chain(s.split_whitespace()))
    }

    #[test]
    fn parses_the_command_line() {
        let Command::Request(v) = args("request --site s --anonymous-id a1").unwrap().command else { panic!() };
        assert_eq!(v.id().unwrap(), (IdKind::Anonymous, "a1"));
        let Command::Request(v) = args("request --site s --user-id u1").unwrap().command else { panic!() };
        assert_eq!(v.id().unwrap(), (IdKind::User, "u1"));
        assert!(args("request --site s").is_err(), "a visitor is required");
        assert!(args("request --site s --anonymous-id a --user-id u").is_err(), "one at a time");
        assert!(args("request --anonymous-id a").is_err(), "the site is required");
        assert!(matches!(args("run").unwrap().command, Command::Run));
        assert!(matches!(args("status").unwrap().command, Command::Status));
        Args::command().debug_assert();
    }

    #[test]
    fn lambda_payload_names_one_visitor() {
        let r: LambdaRequest = serde_json::from_value(serde_json::json!({"site": "s", "user_id": "u"})).unwrap();
        assert_eq!(r.id().unwrap(), (IdKind::User, "u"));
        let none: LambdaRequest = serde_json::from_value(serde_json::json!({"site": "s"})).unwrap();
        assert!(none.id().is_err());
        assert!(serde_json::from_value::<LambdaRequest>(serde_json::json!({"site": "s", "email": "x"})).is_err());
    }
}
