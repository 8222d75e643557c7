//! The durable outbox: every record is stored in SQLite before any network call, then
//! delivered with retries until the CRM takes it or refuses it for good.

pub mod delivery;
pub mod reconcile;
pub mod store;

pub use delivery::{
    Backoff, DeliverySettings, DeliveryStats, DeliveryWorker, RateLimiter, SendOutcome, Sender,
};
pub use store::{
    KIND_CALL_LOG, KIND_DISPOSITION_UPDATE, NewOutboxRow, OutboxRow, StatusReport, Store,
    StoreError,
};
