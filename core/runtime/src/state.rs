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
    /// Its supervisor is booting the VM.
    Starting,
    /// Its VM is running and the guest answers.
    Running,
    /// Its VM's vCPUs are stopped (`pause`); memory, processes and connections are kept.
    Paused,
    /// Its memory was saved to the box's directory and its VM ended (`suspend`): it uses no CPU
    /// or memory, and its next start (`resume`, an exec) continues from that memory.
    Suspended,
    /// A stop was asked for and is under way.
    Stopping,
    /// Its VM was stopped (asked for, or its owner process ended); its disk is kept.
    Stopped,
    /// Its VM did not boot or ended without being asked to (killed, crashed, supervisor died);
    /// `reason` says which. Its disk is kept and it can be started again.
    Failed,
}

impl BoxStatus {
    fn as_str(self) -> &'static str {
        match self {
            BoxStatus::Created => "created",
            BoxStatus::Starting => "starting",
            BoxStatus::Running => "running",
            BoxStatus::Paused => "paused",
            BoxStatus::Suspended => "suspended",
            BoxStatus::Stopping => "stopping",
            BoxStatus::Stopped => "stopped",
            BoxStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "created" => Ok(BoxStatus::Created),
            "starting" => Ok(BoxStatus::Starting),
            "running" => Ok(BoxStatus::Running),
            "paused" => Ok(BoxStatus::Paused),
            "suspended" => Ok(BoxStatus::Suspended),
            "stopping" => Ok(BoxStatus::Stopping),
            "stopped" => Ok(BoxStatus::Stopped),
            "failed" => Ok(BoxStatus::Failed),
            other => Err(Error::Internal(format!("unknown box status '{other}' in the database"))),
        }
    }
}

impl BoxStatus {
    /// Whether a supervisor process may be alive for the box (starting, running, paused or stopping).
    pub fn is_active(self) -> bool {
        matches!(self, BoxStatus::Starting | BoxStatus::Running | BoxStatus::Paused | BoxStatus::Stopping)
    }

    /// Whether the box's VM is up and its supervisor serving (running or paused).
    pub fn is_up(self) -> bool {
        matches!(self, BoxStatus::Running | BoxStatus::Paused)
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
    /// The box's supervisor process while starting, running or stopping.
    #[serde(default)]
    pub shim_pid: Option<u32>,
    /// Why the box is `failed` (or how it last stopped, when that is worth saying).
    #[serde(default)]
    pub reason: Option<String>,
    /// When the VM last became ready, unix milliseconds.
    #[serde(default)]
    pub started_at: Option<u64>,
    /// The published ports: while running as bound (host port 0 replaced by the one picked),
    /// otherwise as asked.
    #[serde(default)]
    pub ports: Vec<crate::net::PortSpec>,
}

/// A status change: what the supervisor (or a runtime reconciling after it) records.
#[derive(Clone, Debug, Default)]
pub struct StatusUpdate {
    /// VM process id (running only).
    pub pid: Option<u32>,
    /// Supervisor process id (starting, running, stopping).
    pub shim_pid: Option<u32>,
    /// Why (failed), or how it stopped.
    pub reason: Option<String>,
    /// When it became ready (running).
    pub started_at: Option<u64>,
    /// The ports as bound (running); kept unless given.
    pub ports: Option<Vec<crate::net::PortSpec>>,
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The state database.
pub struct State {
    conn: Connection,
}

/// Whether the filesystem holding `path` is mounted read-only.
fn on_read_only_fs(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

impl State {
    /// Opens (and creates or migrates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if path.exists() && on_read_only_fs(path) {
            return Self::open_read_only(path);
        }
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

    /// Opens an existing database on a read-only filesystem, so that listing boxes and images
    /// still works; any write then fails as a read-only home.
    fn open_read_only(path: &Path) -> Result<Self> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readable = |conn: Connection| conn.query_row("SELECT count(*) FROM boxes", [], |_| Ok(())).map(|_| conn);
        // A WAL database reads through its existing -wal and -shm files; with none left (a
        // clean close), only as immutable, which is exact since nobody can write it.
        let conn = Connection::open_with_flags(path, flags).and_then(readable).or_else(|_| {
            let uri = format!("file:{}?immutable=1", path.display());
            Connection::open_with_flags(uri, flags).and_then(readable)
        })?;
        Ok(State { conn })
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
        )?;
        // Columns added after the first release: added in place, so older homes keep their boxes.
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('boxes')")?;
        let have: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        for (column, ty) in [("shim_pid", "INTEGER"), ("reason", "TEXT"), ("started_at", "INTEGER"), ("ports", "TEXT")] {
            if !have.iter().any(|c| c == column) {
                match conn.execute_batch(&format!("ALTER TABLE boxes ADD COLUMN {column} {ty}")) {
                    // Another connection added it since we looked.
                    Err(rusqlite::Error::SqliteFailure(_, Some(msg))) if msg.contains("duplicate column") => {}
                    other => other?,
                }
            }
        }
        Ok(())
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
                &format!("SELECT {COLUMNS} FROM boxes WHERE id = ?1 OR name = ?1"),
                [id_or_name],
                row_to_parts,
            )
            .optional()?
            .map(parts_to_record)
            .transpose()
    }

    /// Every box, oldest first.
    pub fn list(&self) -> Result<Vec<BoxRecord>> {
        let mut stmt = self.conn.prepare(&format!("SELECT {COLUMNS} FROM boxes ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_parts)?.collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(parts_to_record).collect()
    }

    /// Sets status and VM pid (the rest cleared).
    pub fn set_status(&self, id: &str, status: BoxStatus, pid: Option<u32>) -> Result<()> {
        self.update(id, status, StatusUpdate { pid, ..Default::default() })
    }

    /// Records a status change; fields not given are cleared, except `started_at`, which is kept
    /// unless given.
    pub fn update(&self, id: &str, status: BoxStatus, u: StatusUpdate) -> Result<()> {
        self.conn.execute(
            "UPDATE boxes SET status = ?2, pid = ?3, shim_pid = ?4, reason = ?5, started_at = COALESCE(?6, started_at),
             ports = COALESCE(?7, ports) WHERE id = ?1",
            params![id, status.as_str(), u.pid, u.shim_pid, u.reason, u.started_at.map(|t| t as i64), ports_json(&u.ports)?],
        )?;
        Ok(())
    }

    /// Records a status change only while the box is still supervised by `shim_pid`, so a
    /// supervisor that lost a race never overwrites a newer one's record. Returns whether it did.
    pub fn update_if_shim(&self, id: &str, shim_pid: u32, status: BoxStatus, u: StatusUpdate) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE boxes SET status = ?2, pid = ?3, shim_pid = ?4, reason = ?5, started_at = COALESCE(?6, started_at),
             ports = COALESCE(?8, ports) WHERE id = ?1 AND shim_pid = ?7",
            params![id, status.as_str(), u.pid, u.shim_pid, u.reason, u.started_at.map(|t| t as i64), shim_pid, ports_json(&u.ports)?],
        )?;
        Ok(n > 0)
    }

    /// Replaces the options a box was created with (a setting changed on the box since).
    pub fn set_options(&self, id: &str, options: &BoxOptions) -> Result<()> {
        let json = serde_json::to_string(options).map_err(|e| Error::Internal(e.to_string()))?;
        self.conn.execute("UPDATE boxes SET options = ?2 WHERE id = ?1", params![id, json])?;
        Ok(())
    }

    /// Forgets a box.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM boxes WHERE id = ?1", [id])?;
        Ok(())
    }
}

const COLUMNS: &str = "id, name, options, image, status, pid, created_at, shim_pid, reason, started_at, ports";

type Parts = (String, Option<String>, String, String, String, Option<u32>, i64, (Option<u32>, Option<String>, Option<i64>, Option<String>));

fn row_to_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        (row.get(7)?, row.get(8)?, row.get(9)?, row.get(10)?),
    ))
}

fn ports_json(ports: &Option<Vec<crate::net::PortSpec>>) -> Result<Option<String>> {
    ports.as_ref().map(|p| serde_json::to_string(p).map_err(|e| Error::Internal(e.to_string()))).transpose()
}

fn parts_to_record((id, name, options, image, status, pid, created_at, (shim_pid, reason, started_at, ports)): Parts) -> Result<BoxRecord> {
    let corrupt = |what: &str, e: serde_json::Error| Error::Internal(format!("box {id}: corrupt {what} in the database: {e}"));
    let bound: Vec<crate::net::PortSpec> = ports.map(|p| serde_json::from_str(&p)).transpose().map_err(|e| corrupt("ports", e))?.unwrap_or_default();
    let options: crate::options::BoxOptions = serde_json::from_str(&options).map_err(|e| corrupt("options", e))?;
    let status = BoxStatus::parse(&status)?;
    // Bound ports hold only while the box runs; otherwise its ports are as asked (host port 0
    // until the next start picks one).
    let ports = if status.is_up() { bound } else { options.ports.clone() };
    Ok(BoxRecord {
        options,
        image: serde_json::from_str(&image).map_err(|e| corrupt("image", e))?,
        status,
        id,
        name,
        pid,
        created_at: created_at as u64,
        shim_pid,
        reason,
        started_at: started_at.map(|t| t as u64),
        ports,
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
            shim_pid: None,
            reason: None,
            started_at: None,
            ports: Vec::new(),
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
    fn only_the_current_supervisor_updates_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = State::open(&dir.path().join("db")).unwrap();
        db.insert(&record("b1", None)).unwrap();
        let running = StatusUpdate { pid: Some(7), shim_pid: Some(100), started_at: Some(5), ..Default::default() };
        db.update("b1", BoxStatus::Running, running).unwrap();
        // A supervisor that is not the one on record changes nothing.
        assert!(!db.update_if_shim("b1", 99, BoxStatus::Stopped, StatusUpdate::default()).unwrap());
        let failed = StatusUpdate { reason: Some("killed".into()), ..Default::default() };
        assert!(db.update_if_shim("b1", 100, BoxStatus::Failed, failed).unwrap());
        let rec = db.get("b1").unwrap().unwrap();
        assert_eq!((rec.status, rec.pid, rec.shim_pid), (BoxStatus::Failed, None, None));
        assert_eq!((rec.reason.as_deref(), rec.started_at), (Some("killed"), Some(5)));
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
