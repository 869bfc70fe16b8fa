//! The producer's error type: each variant maps to one HTTP status and a message safe to show clients.

use http::StatusCode;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum IngestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No site key, or one no site has.
    #[error("{0}")]
    Unauthorized(String),
    /// The key's site does not allow the request's `Origin`.
    #[error("{0}")]
    Forbidden(String),
    /// The site's or the client's bucket is empty; `Retry-After` tells when it will not be.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// The sites configuration cannot be used (a start-up error, never an answer).
    #[error("{0}")]
    SiteConfig(String),
    /// A tracking plan file is unusable (a start-up and `make plan-check` error, never an answer).
    #[error("tracking plan {file}: {reason}")]
    TrackingPlan { file: String, reason: String },
    /// The country database named by `GEOIP_COUNTRY_DB` exists but cannot be read as one (a
    /// start-up error, never an answer).
    #[error("country database {path}: {reason}")]
    CountryDb { path: String, reason: String },
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::SiteConfig(_) | IngestError::TrackingPlan { .. } | IngestError::CountryDb { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}
