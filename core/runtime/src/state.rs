//! Box records in SQLite (`<home>/db/boxlite.db`, WAL): what the user asked for (config) apart from
//! what is true now (status, VM pid).

use crate::error::{Error, Result};
use crate::image::Image;
use crate::options::BoxOptions;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a box is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxStatus {
    /// Created, never started.
    Created,
    /// Its VM is running.
    Running,
    /// Its VM has stopped; its disk is kept.
    Stopped,
}

impl BoxStatus {
    fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Created => "created",
            BoxStatus::Running => "running",
            BoxStatus::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "created" => Ok(BoxStatus::Created),
            "running" => Ok(BoxStatus::Running),
            "stopped" => Ok(BoxStatus::Stopped),
            other => Err(Error::Internal(format!("unknown box status '{other}' in the database"))),
        }
    }
}

impl std::fmt::Display for BoxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One box as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoxRecord {
    /// Short unique id.
    pub id: String,
    /// Optional unique name.
    pub name: Option<String>,
    /// The options it was created with.
    pub options: BoxOptions,
    /// The image it boots from.
    pub image: Image,
    /// Current status.
    pub status: BoxStatus,
    /// VM process id while running.
    pub pid: Option<u32>,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The state database.
pub struct State {
    conn: Connection,
}

impl State {
    /// Opens (and creates or migrates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching to WAL and creating the schema can report BUSY at once (the busy handler does
        // not cover a journal-mode change) while another connection does the same: retry.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::init_schema(&conn) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.map(|_| State { conn }).map_err(Error::from),
            }
        }
    }

    fn init_schema(conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS boxes (
                id TEXT PRIMARY KEY,
                name TEXT UNIQUE,
                options TEXT NOT NULL,
                image TEXT NOT NULL,
                status TEXT NOT NULL,
                pid INTEGER,
                created_at INTEGER NOT NULL
            );",
        )
    }

    /// Records a new box. A taken name is `AlreadyExists`.
    pub fn insert(&self, rec: &BoxRecord) -> Result<()> {
        let res = self.conn.execute(
            "INSERT INTO boxes (id, name, options, image, status, pid, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                rec.id,
                rec.name,
                serde_json::to_string(&rec.options).map_err(|e| Error::Internal(e.to_string()))?,
                serde_json::to_string(&rec.image).map_err(|e| Error::Internal(e.to_string()))?,
                rec.status.as_str(),
                rec.pid,
                rec.created_at as i64,
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(Error::AlreadyExists(format!(
                    "a box named '{}' already exists; choose another name or remove that box",
                    rec.name.as_deref().unwrap_or_default()
                )))
            }
            other => other.map(|_| ()).map_err(Error::from),
        }
    }

    /// Finds a box by exact id or name.
    pub fn get(&self, id_or_name: &str) -> Result<Option<BoxRecord>> {
        self.conn
            .query_row(
                "SELECT id, name, options, image, status, pid, created_at FROM boxes WHERE id = ?1 OR name = ?1",
                [id_or_name],
                row_to_parts,
            )
            .optional()?
            .map(parts_to_record)
            .transpose()
    }

    /// Every box, oldest first.
    pub fn list(&self) -> Result<Vec<BoxRecord>> {
        let mut stmt = self.conn.prepare("SELECT id, name, options, image, status, pid, created_at FROM boxes ORDER BY id")?;
        let rows = stmt.query_map([], row_to_parts)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(parts_to_record).collect()
    }

    /// Sets status and VM pid.
    pub fn set_status(&self, id: &str, status: BoxStatus, pid: Option<u32>) -> Result<()> {
        self.conn.execute("UPDATE boxes SET status = ?2, pid = ?3 WHERE id = ?1", params![id, status.as_str(), pid])?;
        Ok(())
    }

    /// Forgets a box.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM boxes WHERE id = ?1", [id])?;
        Ok(())
    }
}

type Parts = (String, Option<String>, String, String, String, Option<u32>, i64);

fn row_to_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

fn parts_to_record((id, name, options, image, status, pid, created_at): Parts) -> Result<BoxRecord> {
    let corrupt = |what: &str, e: serde_json::Error| Error::Internal(format!("box {id}: corrupt {what} in the database: {e}"));
    Ok(BoxRecord {
        options: serde_json::from_str(&options).map_err(|e| corrupt("options", e))?,
        image: serde_json::from_str(&image).map_err(|e| corrupt("image", e))?,
        status: BoxStatus::parse(&status)?,
        id,
        name,
        pid,
        created_at: created_at as u64,
    })
}

/// A new box id: 13 characters of Crockford base32 over 48 bits of milliseconds and 17 random
/// bits, so ids sort by creation time and never repeat in practice.
pub fn new_box_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let value = ((millis & ((1 << 48) - 1)) << 17) | (rand::random::<u64>() & ((1 << 17) - 1));
    (0..13).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: Option<&str>) -> BoxRecord {
        BoxRecord {
            id: id.into(),
            name: name.map(Into::into),
            options: BoxOptions::new("busybox"),
            image: Image {
                reference: "busybox:latest".into(),
                manifest_digest: "sha256:m".into(),
                config_digest: "sha256:c".into(),
                config: Default::default(),
                layer_count: 1,
                base_disk: "/x.ext4".into(),
                size_bytes: 1,
                pulled_at: 0,
            },
            status: BoxStatus::Created,
            pid: None,
            created_at: 1,
        }
    }

    #[test]
    fn names_are_unique_and_lookup_works_by_id_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = State::open(&dir.path().join("db")).unwrap();
        db.insert(&record("a1", Some("web"))).unwrap();
        let err = db.insert(&record("a2", Some("web"))).unwrap_err();
        assert_eq!(err.code(), "ALREADY_EXISTS");
        db.insert(&record("a3", None)).unwrap();
        db.insert(&record("a4", None)).unwrap();
        assert_eq!(db.get("web").unwrap().unwrap().id, "a1");
        db.set_status("a1", BoxStatus::Running, Some(42)).unwrap();
        let rec = db.get("a1").unwrap().unwrap();
        assert_eq!((rec.status, rec.pid), (BoxStatus::Running, Some(42)));
        db.delete("a1").unwrap();
        assert!(db.get("web").unwrap().is_none());
        assert_eq!(db.list().unwrap().len(), 2);
    }

    #[test]
    fn ids_are_short_unique_and_sortable() {
        let a = new_box_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_box_id();
        assert_eq!(a.len(), 13);
        assert!(a < b, "{a} {b}");
    }
}
