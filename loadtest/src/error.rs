//! The verifier's error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum VerifyError {
    #[error("input: {0}")]
    Input(String),
    #[error("reading {store} failed: {message}")]
    Store { store: &'static str, message: String },
}

impl VerifyError {
    pub fn store(store: &'static str) -> impl FnOnce(String) -> VerifyError {
        move |message| VerifyError::Store { store, message }
    }
}
