//! Annotations: what the CRM told pbxlink about a call — the lead id of a call it asked
//! pbxlink to place, the disposition an agent gave. A pending call log carries them when it
//! is sent; a delivered one is queued again as a `disposition_update`.

use rusqlite::params;

use super::{KIND_CALL_LOG, KIND_DISPOSITION_UPDATE, Store, StoreError, now_ms};

impl Store {
    /// Remembers the lead id LeadSquared gave for a call it asked pbxlink to place.
    pub fn set_lead_id(&self, call_id: &str, lead_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        self.with_tx("store lead id", |tx| {
            tx.execute(
                "INSERT INTO call_annotations (call_id, lead_id, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(call_id) DO UPDATE SET lead_id = ?2, updated_at = ?3",
                params![call_id, lead_id, now],
            )?;
            Ok(())
        })
    }

    /// Stores a disposition. When the call's log was already delivered, a `disposition_update`
    /// row is queued to post it again with the notes; a pending call log simply carries them.
    /// Returns whether an update was queued.
    pub fn set_disposition(
        &self,
        call_id: &str,
        disposition: &str,
        notes: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        self.with_tx("store disposition", |tx| {
            tx.execute(
                "INSERT INTO call_annotations (call_id, disposition, notes, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(call_id) DO UPDATE SET disposition = ?2, notes = ?3, updated_at = ?4",
                params![call_id, disposition, notes, now],
            )?;
            // The delivered log's body is copied as stored (compressed or, for a row from
            // before schema 3, text): one payload, never decoded and encoded again here.
            let queued = tx.execute(
                "INSERT INTO outbox (kind, idempotency_key, call_id, source, body, state,
                     attempts, next_attempt_at, created_at, updated_at)
                 SELECT ?1, ?2, call_id, source, body, 'pending', 0, ?3, ?3, ?3 FROM outbox
                 WHERE idempotency_key = ?4 AND state = 'delivered' AND body IS NOT NULL
                 ON CONFLICT(idempotency_key) DO UPDATE SET state = 'pending',
                     body = excluded.body, next_attempt_at = excluded.next_attempt_at,
                     updated_at = excluded.updated_at, in_flight_since = NULL,
                     resent_reason = NULL",
                params![
                    KIND_DISPOSITION_UPDATE,
                    format!("{KIND_DISPOSITION_UPDATE}:{call_id}"),
                    now,
                    format!("{KIND_CALL_LOG}:{call_id}"),
                ],
            )?;
            Ok(queued > 0)
        })
    }
}
