//! The PostgreSQL connection every tool shares: where credentials come from (a URL or a Secrets
//! Manager secret), TLS, the pool, the embedded migrations, and which errors are outages.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

use crate::KitError;
use crate::env::{Env, FromEnv};

/// The migrations from `schemas/migrations`, embedded in every binary that may apply them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../schemas/migrations");

/// How long a batch waits for a pooled connection before it fails (and is retried whole).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where PostgreSQL credentials come from. `Debug` redacts the URL, which may hold a password.
#[derive(Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL`, used as given (its `sslmode`/`sslrootcert` parameters apply).
    Url(String),
    /// `DATABASE_SECRET_ARN` (username/password, RDS-managed) plus `DATABASE_HOST`,
    /// `DATABASE_PORT` and `DATABASE_NAME` (any of which the secret may also carry).
    Secret { arn: String, host: Option<String>, port: Option<u16>, name: Option<String> },
}

impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseSource::Url(_) => f.write_str("Url(<redacted>)"),
            DatabaseSource::Secret { arn, host, port, name } => f
                .debug_struct("Secret")
                .field("arn", arn)
                .field("host", host)
                .field("port", port)
                .field("name", name)
                .finish(),
        }
    }
}

/// The database settings every binary reads the same way.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL` or `DATABASE_SECRET_ARN` (+ host/port/name).
    pub source: DatabaseSource,
    /// `DATABASE_SSL_ROOT_CERT`: CA bundle path; when set, TLS is required and verified
    /// (verify-full). Without it, TLS is used with the system/webpki roots when offered.
    pub ssl_root_cert: Option<String>,
}

impl FromEnv for DatabaseConfig {
    fn from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, KitError> {
        Self::from_vars(env, "DATABASE_URL", "DATABASE_SECRET_ARN")?
            .ok_or_else(|| KitError::MissingEnv { name: "DATABASE_URL or DATABASE_SECRET_ARN".into() })
    }
}

impl DatabaseConfig {
    /// The migrator's credentials, when they differ from the application's:
    /// `DATABASE_MIGRATOR_URL`, or `DATABASE_MIGRATOR_SECRET_ARN` with the application's host,
    /// port, database name and CA bundle. `None` when neither is set: the application's
    /// credentials then apply the migrations (the local stack).
    pub fn migrator_from_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Option<Self>, KitError> {
        Self::from_vars(env, "DATABASE_MIGRATOR_URL", "DATABASE_MIGRATOR_SECRET_ARN")
    }

    /// The credentials in `url_var`, or else the secret in `arn_var` with the shared
    /// `DATABASE_HOST`/`PORT`/`NAME`; `None` when neither is set.
    fn from_vars<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
        url_var: &str,
        arn_var: &str,
    ) -> Result<Option<Self>, KitError> {
        let source = match (env.get(url_var), env.get(arn_var)) {
            (Some(url), _) => DatabaseSource::Url(url),
            (None, Some(arn)) => DatabaseSource::Secret {
                arn,
                host: env.get("DATABASE_HOST"),
                port: env.parse_opt("DATABASE_PORT")?,
                name: env.get("DATABASE_NAME"),
            },
            (None, None) => return Ok(None),
        };
        Ok(Some(DatabaseConfig { source, ssl_root_cert: env.get("DATABASE_SSL_ROOT_CERT") }))
    }

    /// Whether connecting needs a Secrets Manager client.
    pub fn needs_secret(&self) -> bool {
        matches!(self.source, DatabaseSource::Secret { .. })
    }
}

/// Credentials in the Secrets Manager secret (RDS-managed secrets carry only the first two).
#[derive(serde::Deserialize)]
struct SecretFields {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
}

/// Connection options from the config, reading the secret when one is configured. With a secret
/// or a CA bundle, TLS is required and the certificate and host verified (verify-full; without a
/// bundle against the built-in web roots, which RDS's CA is not among, so deployments set
/// `DATABASE_SSL_ROOT_CERT` to the bundle shipped in the package). A plain `DATABASE_URL` keeps
/// its own `sslmode`.
pub async fn connect_options(
    config: &DatabaseConfig,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
    application_name: &str,
) -> Result<PgConnectOptions, KitError> {
    let mut options = match &config.source {
        DatabaseSource::Url(url) => PgConnectOptions::from_str(url).map_err(|e| KitError::InvalidEnv {
            name: "DATABASE_URL".into(),
            value: "<redacted>".into(),
            reason: e.to_string(),
        })?,
        DatabaseSource::Secret { arn, host, port, name } => {
            let client = secrets.ok_or_else(|| KitError::Secret {
                arn: arn.clone(),
                message: "no Secrets Manager client was built".into(),
            })?;
            let fields = read_secret(client, arn).await?;
            PgConnectOptions::new()
                .host(host.as_deref().or(fields.host.as_deref()).unwrap_or("localhost"))
                .port(port.or(fields.port).unwrap_or(5432))
                .database(name.as_deref().or(fields.dbname.as_deref()).unwrap_or("analytics"))
                .username(&fields.username)
                .password(&fields.password)
                // A secret means a deployed database (RDS): never accept an unverified server.
                .ssl_mode(PgSslMode::VerifyFull)
        }
    };
    if let Some(ca) = &config.ssl_root_cert {
        options = options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca.as_str());
    }
    Ok(options.application_name(application_name))
}

async fn read_secret(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<SecretFields, KitError> {
    let secret = client.get_secret_value().secret_id(arn).send().await.map_err(|e| KitError::Secret {
        arn: arn.to_owned(),
        message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
    })?;
    // Never include the secret text in an error: it holds the password.
    serde_json::from_str(secret.secret_string().unwrap_or_default()).map_err(|_| KitError::Secret {
        arn: arn.to_owned(),
        message: "secret is not JSON with username and password".into(),
    })
}

/// SQLSTATE of a refused password: what every new connection gets once RDS has rotated a
/// secret that this process read before the rotation.
pub const INVALID_PASSWORD: &str = "28P01";

/// The database of a long-lived process: a pool, and where its credentials come from, so that
/// when a rotated secret makes the server refuse the password the secret is read again.
pub struct Database {
    pool: PgPool,
    /// Where the credentials came from; `None` for fixed options (tests, a plain URL).
    source: Option<CredentialSource>,
}

struct CredentialSource {
    config: DatabaseConfig,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    application_name: String,
}

impl Database {
    /// Reads the credentials (the secret, if one is configured) and builds a lazy pool.
    pub async fn connect(
        config: DatabaseConfig,
        secrets: Option<aws_sdk_secretsmanager::Client>,
        application_name: &str,
        max_connections: u32,
    ) -> Result<Self, KitError> {
        let options = connect_options(&config, secrets.as_ref(), application_name).await?;
        let source = CredentialSource { config, secrets, application_name: application_name.to_owned() };
        Ok(Database { pool: lazy_pool(options, max_connections), source: Some(source) })
    }

    /// A database over fixed connection options, whose credentials are never re-read.
    pub fn with_options(options: PgConnectOptions, max_connections: u32) -> Self {
        Self::from_pool(lazy_pool(options, max_connections))
    }

    /// A database over an existing pool, whose credentials are never re-read.
    pub fn from_pool(pool: PgPool) -> Self {
        Database { pool, source: None }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `work` (which logs in, e.g. takes a connection from the pool); when the server
    /// refused the password (`cause` finds the sqlx error inside `work`'s) and the credentials
    /// come from a secret, reads the secret again and runs `work` once more. The one place the
    /// consumer and the compactor survive a rotated secret without failing their batch or run.
    pub async fn retry_refused_login<T, E, Fut>(
        &self,
        mut work: impl FnMut() -> Fut,
        cause: impl Fn(&E) -> Option<&sqlx::Error>,
    ) -> Result<T, E>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let first = work().await;
        let renewed = match first.as_ref().err().and_then(&cause) {
            Some(e) => match self.renew_credentials_if_refused(e).await {
                Ok(renewed) => renewed,
                Err(renew) => {
                    tracing::warn!(error = %renew, "reading the database secret again failed");
                    false
                }
            },
            None => false,
        };
        if renewed { work().await } else { first }
    }

    /// When `e` is a refused password and the credentials come from a secret, reads the secret
    /// again and makes every new connection use it; returns whether it did (connections already
    /// open keep working: a rotation only changes what new logins need).
    async fn renew_credentials_if_refused(&self, e: &sqlx::Error) -> Result<bool, KitError> {
        let Some(source) = self.source.as_ref().filter(|s| s.config.needs_secret()) else { return Ok(false) };
        if !is_refused_password(e) {
            return Ok(false);
        }
        let options = connect_options(&source.config, source.secrets.as_ref(), &source.application_name).await?;
        self.pool.set_connect_options(options);
        tracing::warn!("the database refused the password; read the secret again for new connections");
        Ok(true)
    }
}

/// Whether the server refused the login's password (SQLSTATE 28P01).
pub fn is_refused_password(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(INVALID_PASSWORD))
}

/// The group role (migration 0003) holding the application's privileges: DML on the pipeline's
/// tables. The application's login role is made a member by [`grant_application_role`].
pub const APPLICATION_GROUP_ROLE: &str = "analytics_writer";

/// Applies the embedded migrations with `config`'s credentials, on one connection opened for
/// that and closed after, then (when `application` logs in with a secret of its own) makes sure
/// its login role exists and holds [`APPLICATION_GROUP_ROLE`]. sqlx's migrator holds a
/// PostgreSQL advisory lock while it works, so many processes starting at once (ten Lambda cold
/// starts) apply each migration once and the others wait, then find nothing to do.
pub async fn migrate(
    config: &DatabaseConfig,
    application: Option<&DatabaseConfig>,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
    application_name: &str,
) -> Result<(), KitError> {
    let options = connect_options(config, secrets, application_name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| KitError::Migrate(e.to_string()))?;
    let mut done = MIGRATOR.run(&pool).await.map_err(|e| KitError::Migrate(e.to_string()));
    if let (Ok(()), Some(application)) = (&done, application) {
        done = grant_application_role(&pool, config, application, secrets).await;
    }
    pool.close().await;
    done
}

/// Creates the application's login role, when the migrator and the application log in with
/// different secrets and the role does not exist yet, with the password its secret holds, and
/// makes it a member of [`APPLICATION_GROUP_ROLE`] (again, harmlessly, when it is one). On AWS
/// this is how the first deploy gets its application role: Terraform can write the secret but
/// cannot reach the private database. An existing role's password is never changed here: the
/// secret's rotation owns it. A plain URL (the local stack) names an existing role: nothing to do.
pub async fn grant_application_role(
    migrator_pool: &PgPool,
    migrator: &DatabaseConfig,
    application: &DatabaseConfig,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
) -> Result<(), KitError> {
    let DatabaseSource::Secret { arn, .. } = &application.source else { return Ok(()) };
    if matches!(&migrator.source, DatabaseSource::Secret { arn: m, .. } if m == arn) {
        return Ok(());
    }
    let client = secrets
        .ok_or_else(|| KitError::Secret { arn: arn.clone(), message: "no Secrets Manager client was built".into() })?;
    let login = read_secret(client, arn).await?;
    let failed = |e: sqlx::Error| KitError::Migrate(format!("granting the application role: {e}"));
    let mut tx = migrator_pool.begin().await.map_err(failed)?;
    // Cold starts provisioning at once would race on CREATE ROLE: one at a time, per cluster.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('analytics:application-role'))")
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
    // Role names and passwords cannot be bind parameters of CREATE ROLE/GRANT: the server quotes
    // them (format's %I and %L), so no value from the secret is spliced into SQL here. The
    // password goes as its SCRAM verifier, never as text: RDS logs DDL statements.
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)
           WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)
         UNION ALL
         SELECT format('GRANT %I TO %I', $3::text, $1::text)",
    )
    .bind(&login.username)
    .bind(scram_sha256_verifier(&login.password, &random_salt()))
    .bind(APPLICATION_GROUP_ROLE)
    .fetch_all(&mut *tx)
    .await
    .map_err(failed)?;
    let creates = statements.len() > 1;
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *tx).await.map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    if creates {
        tracing::info!(role = %login.username, "created the application's login role");
    }
    Ok(())
}

/// PBKDF2 iterations of the verifier: PostgreSQL's default (`scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

/// A random 16-byte salt. A salt only has to differ between verifiers, not be secret.
fn random_salt() -> [u8; 16] {
    std::array::from_fn(|_| fastrand::u8(..))
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, as libpq's
/// `PQencryptPasswordConn` makes it): `CREATE ROLE … PASSWORD '<verifier>'` lets the role log in
/// with `password` while the statement — which the server may log — never holds the password.
pub fn scram_sha256_verifier(password: &str, salt: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    use sha2::{Digest, Sha256};
    type HmacSha256 = hmac::Hmac<Sha256>;
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(data);
        mac.finalize().into_bytes()
    };
    // SASLprep as the server applies it; a password it rejects is used as raw bytes, as there.
    let prepared = stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    // Hi(): PBKDF2 with HMAC-SHA-256, one block.
    let mut u = hmac(prepared.as_bytes(), &[salt, &1u32.to_be_bytes()].concat());
    let mut salted = u;
    for _ in 1..SCRAM_ITERATIONS {
        u = hmac(prepared.as_bytes(), &u);
        salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
    }
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

/// Whether the database lacks a migration this binary embeds, or cannot tell (no migrations
/// table, no right to read it, no connection). One query on the pool the process uses anyway —
/// its connection then serves the first batch — where [`migrate`] opens a connection of its own
/// and takes a lock: that cost every cold start ~140 ms with nothing to apply. Checksums are
/// left to the migrator, which runs whenever a version is missing.
pub async fn migrations_pending(pool: &PgPool) -> bool {
    let embedded = MIGRATOR.iter().map(|m| m.version).max();
    let applied: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await;
    match applied {
        Ok(newest) => newest < embedded,
        Err(_) => true,
    }
}

/// A pool that connects on first use, so a process starts (and answers `--help`, or a Lambda
/// init) even while the database is unreachable; the first query then fails and is retried.
pub fn lazy_pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options)
}

/// Whether a database error is an outage — unreachable, timing out, shutting down, out of
/// resources, a transaction rolled back by contention — so the same work succeeds once the
/// database is back, rather than a failure that repeats on every attempt (a SQL error).
pub fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        // SQLSTATE classes: connection exception, invalid authorization (a rotated password,
        // renewed by `Database::retry_refused_login`), transaction rollback
        // (serialization, deadlock), insufficient resources, operator intervention (shutdown),
        // system error.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| matches!(c.get(..2), Some("08" | "28" | "40" | "53" | "57" | "58")))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: printing the config never prints the database password.
    #[test]
    fn debug_redacts_the_database_url() {
        let env = Env::new(|k: &str| (k == "DATABASE_URL").then(|| "postgres://app:s3cret@db/analytics".to_owned()));
        let c = DatabaseConfig::from_settings(&env).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.needs_secret());
    }

    const EXPECTED_PENCIL_VERIFIER: &str = "SCRAM-SHA-256$4096:4kYzf8hpXkqPD0fxnsLlEQ==$DQ7xnh/1eC7KguJQF8EOkC8LLWqzbplUpbGJNA7dY8I=:Sv9iLT2KImeOWx5+UrUeqivg1naUZ5xHrCjubUE5WFU=";

    /// The verifier PostgreSQL 15 itself stored for `ALTER ROLE … PASSWORD 'pencil'` with this salt
    /// (`SELECT rolpassword FROM pg_authid`): a role created with ours logs in with the password.
    #[test]
    fn scram_verifier_matches_postgresql() {
        let salt =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, "4kYzf8hpXkqPD0fxnsLlEQ==").unwrap();
        assert_eq!(scram_sha256_verifier("pencil", &salt), EXPECTED_PENCIL_VERIFIER);
        assert_ne!(scram_sha256_verifier("pencil", &random_salt()), scram_sha256_verifier("pencil", &random_salt()));
    }

    #[test]
    fn a_secret_source_takes_its_host_and_port_from_the_environment() {
        let env = Env::new(|k: &str| match k {
            "DATABASE_SECRET_ARN" => Some("arn:aws:secretsmanager:eu-west-1:1:secret:db".to_owned()),
            "DATABASE_PORT" => Some("6432".to_owned()),
            _ => None,
        });
        let c = DatabaseConfig::from_settings(&env).unwrap();
        assert!(c.needs_secret());
        assert!(matches!(c.source, DatabaseSource::Secret { port: Some(6432), host: None, .. }));
        let none = DatabaseConfig::from_settings(&Env::new(|_: &str| None)).unwrap_err().to_string();
        assert!(none.contains("DATABASE_URL or DATABASE_SECRET_ARN"), "{none}");
    }
}
