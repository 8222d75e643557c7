//! Ingest: where reading of each source file stopped, and the staged rows of calls that
//! have not settled yet. A batch of rows and the offset after it commit together.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, add_counters, now_ms};

/// Where reading of one source file stopped (mirrors the tailer's checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOffset {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Bytes consumed.
    pub offset: u64,
    /// CRC32 of the bytes just before `offset`.
    pub window_crc: u32,
    /// How many bytes that CRC covers.
    pub window_len: u32,
}

/// A staged source record (e.g. one CDR row) waiting for its call to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRow {
    /// Row id, used to remove it once its call is enqueued.
    pub id: i64,
    /// The parsed record as JSON.
    pub row: String,
    /// The raw line: empty for rows staged since schema 3 (the parsed record is the one
    /// form kept; the raw line stays in the PBX's file), the line for older rows.
    pub raw: String,
    /// When it was read (unix ms).
    pub read_at: i64,
}

impl Store {
    /// The saved offset of a source file.
    pub fn file_offset(&self, source: &str) -> Result<Option<FileOffset>, StoreError> {
        self.with_conn("read file offset", |c| {
            c.query_row(
                "SELECT dev, ino, offset, window_crc, window_len FROM file_offsets WHERE source = ?1",
                [source],
                |r| {
                    Ok(FileOffset {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        offset: r.get::<_, i64>(2)? as u64,
                        window_crc: r.get::<_, i64>(3)? as u32,
                        window_len: r.get::<_, i64>(4)? as u32,
                    })
                },
            )
            .optional()
        })
    }

    /// Commits parsed rows and the offset after them in ONE transaction, and adds to counters.
    /// Each row is `(parsed record as JSON, raw line)`; only the record is kept (see
    /// [`StagedRow::raw`]). Returns the staged rows' ids in order.
    pub fn commit_ingest(
        &self,
        source: &str,
        offset: Option<&FileOffset>,
        rows: &[(String, String)],
        counters: &[(&str, i64)],
    ) -> Result<Vec<i64>, StoreError> {
        let now = now_ms();
        self.with_tx("commit rows and offset", |tx| {
            let mut ids = Vec::with_capacity(rows.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO staged_rows (source, row, raw, read_at) VALUES (?1, ?2, '', ?3)",
                )?;
                for (row, _raw) in rows {
                    insert.execute(params![source, row, now])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            if let Some(o) = offset {
                tx.execute(
                    "INSERT INTO file_offsets (source, dev, ino, offset, window_crc, window_len, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(source) DO UPDATE SET dev = ?2, ino = ?3, offset = ?4,
                         window_crc = ?5, window_len = ?6, updated_at = ?7",
                    params![
                        source,
                        o.dev as i64,
                        o.ino as i64,
                        o.offset as i64,
                        i64::from(o.window_crc),
                        i64::from(o.window_len),
                        now
                    ],
                )?;
            }
            add_counters(tx, counters)?;
            Ok(ids)
        })
    }

    /// Every staged row of a source, oldest first (to rebuild the grouping state at start).
    pub fn staged_rows(&self, source: &str) -> Result<Vec<StagedRow>, StoreError> {
        self.with_conn("read staged rows", |c| {
            let mut stmt = c.prepare(
                "SELECT id, row, raw, read_at FROM staged_rows WHERE source = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([source], |r| {
                Ok(StagedRow {
                    id: r.get(0)?,
                    row: r.get(1)?,
                    raw: r.get(2)?,
                    read_at: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}
