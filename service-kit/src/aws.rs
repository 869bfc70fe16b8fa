//! AWS clients with the SDK's retry mode set explicitly at every call site.
//!
//! The SDK retries failed calls on its own (standard mode, 3 attempts) unless told otherwise.
//! Inside a loop of ours that silently multiplies attempts and makes the budgets in our config
//! untrue. So each client is built for one of two owners of retries ([`Retries`]): where our
//! code has a retry loop around the call (PutRecords, BatchWriteItem, GetRecords) the SDK makes
//! one attempt; where it has none (S3 puts and heads, Secrets Manager) the SDK retries. The
//! table of call sites is in ARCHITECTURE.md ("Who retries").

pub use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;

/// Attempts the SDK makes (first call included) where it owns retries: its standard mode's.
pub const SDK_MAX_ATTEMPTS: u32 = 3;

/// Who retries a client's failed calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// The SDK, in standard mode with [`SDK_MAX_ATTEMPTS`]; our code calls once.
    Sdk,
    /// Our code, through a [`crate::retry::RetryPolicy`] loop; the SDK makes one attempt.
    Ours,
}

impl Retries {
    pub fn config(self) -> RetryConfig {
        match self {
            Retries::Sdk => RetryConfig::standard().with_max_attempts(SDK_MAX_ATTEMPTS),
            Retries::Ours => RetryConfig::disabled(),
        }
    }
}

/// The shared SDK configuration: region, credentials and `AWS_ENDPOINT_URL_*` overrides from
/// the environment, loaded once per process.
pub async fn load() -> SdkConfig {
    aws_config::load_from_env().await
}

/// Whether an endpoint override is set for `service` (`AWS_ENDPOINT_URL_<SERVICE>` or the
/// global `AWS_ENDPOINT_URL`): the local stack's emulators.
pub fn endpoint_overridden(service: &str) -> bool {
    std::env::var_os(format!("AWS_ENDPOINT_URL_{service}")).is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some()
}

#[cfg(feature = "kinesis")]
pub fn kinesis(sdk: &SdkConfig, retries: Retries) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(sdk).retry_config(retries.config()).build(),
    )
}

/// An S3 client; path-style addressing when an endpoint override is set (local emulators serve
/// buckets as paths, not as subdomains).
#[cfg(feature = "s3")]
pub fn s3(sdk: &SdkConfig, retries: Retries) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .retry_config(retries.config())
            .force_path_style(endpoint_overridden("S3"))
            .build(),
    )
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb(sdk: &SdkConfig, retries: Retries) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk).retry_config(retries.config()).build(),
    )
}

#[cfg(feature = "sqs")]
pub fn sqs(sdk: &SdkConfig, retries: Retries) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk).retry_config(retries.config()).build())
}

#[cfg(feature = "postgres")]
pub fn secrets_manager(sdk: &SdkConfig, retries: Retries) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(sdk).retry_config(retries.config()).build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_sets_the_sdk_attempts_explicitly() {
        assert_eq!(Retries::Ours.config().max_attempts(), 1);
        assert_eq!(Retries::Sdk.config().max_attempts(), SDK_MAX_ATTEMPTS);
    }
}
