//! The end-to-end verifier: nothing lost, nothing double-counted.
//!
//! `acks` reads what the API acknowledged (k6's ack log), `stores` reads every store back, and
//! `reconcile` (pure) compares them and renders the table.

pub mod acks;
pub mod error;
pub mod reconcile;
pub mod stores;
