//! Saving a running VM (supervisor side): its disk frozen into a layer and its memory written to
//! a file, with the vCPUs stopped in between so both hold the same instant. Blocking: QMP is a
//! line protocol on a unix socket, run from `spawn_blocking`.

use crate::engine::qmp::Qmp;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The fd name under which QEMU gets the memory file.
const MEMORY_FD: &str = "boxlite-memory";
/// Longest a memory save may take (a few GiB at disk speed).
const SAVE_LIMIT: Duration = Duration::from_secs(120);

/// What a save produced.
pub struct Saved {
    pub memory_bytes: u64,
    pub paused_ms: u64,
}

/// Stops the vCPUs (unless `was_paused`), freezes `disk` into `layer` (the VM goes on with a new
/// overlay at `disk` on top of it), writes memory to `memory`, and lets the VM run again, or
/// leaves it paused.
pub fn snapshot(qmp: &Path, disk: &Path, layer: &Path, memory: &Path, was_paused: bool) -> Result<Saved, String> {
    let mut q = Qmp::connect(qmp, Duration::from_secs(30)).map_err(|e| format!("QMP: {e}"))?;
    let began = Instant::now();
    if !was_paused {
        q.execute("stop", Value::Null).map_err(|e| e.to_string())?;
    }
    let result = freeze_disk(&mut q, disk, layer).and_then(|()| save_memory(&mut q, memory, false));
    // After a migration QEMU holds the disks inactive until `cont`; a paused box is stopped
    // again at once so that it stays paused (its vCPUs run for a moment in between).
    let cont = q.execute("cont", Value::Null).map_err(|e| e.to_string());
    let paused_ms = began.elapsed().as_millis() as u64;
    if was_paused {
        q.execute("stop", Value::Null).map_err(|e| e.to_string())?;
    }
    let memory_bytes = result?;
    cont?;
    Ok(Saved { memory_bytes, paused_ms })
}

/// Stops the vCPUs (unless `was_paused`) and writes memory to `memory`; the caller then ends
/// the VM. On failure the VM runs again as it was.
pub fn suspend(qmp: &Path, memory: &Path, was_paused: bool) -> Result<Saved, String> {
    let mut q = Qmp::connect(qmp, Duration::from_secs(30)).map_err(|e| format!("QMP: {e}"))?;
    let began = Instant::now();
    if !was_paused {
        q.execute("stop", Value::Null).map_err(|e| e.to_string())?;
    }
    match save_memory(&mut q, memory, false) {
        Ok(memory_bytes) => Ok(Saved { memory_bytes, paused_ms: began.elapsed().as_millis() as u64 }),
        Err(e) => {
            if !was_paused {
                let _ = q.execute("cont", Value::Null);
            }
            Err(e)
        }
    }
}

/// Freezes the VM's disk overlay into `layer` and switches the VM to a new overlay on top of it.
/// On failure the disk is as it was.
///
/// `disk` (`boxes/<id>/disk.qcow2`) is the box's disk at its next boot: the overlay itself at
/// first, later a symlink to the current one. The order matters because QEMU reopens the node
/// that becomes a backing file read-only *by its file name* during `blockdev-snapshot`: every
/// name QEMU knows must still point at its file then, so the files move only afterwards (QEMU's
/// open descriptors follow them; a read-only backing node is not reopened again).
fn freeze_disk(q: &mut Qmp, disk: &Path, layer: &Path) -> Result<(), String> {
    let current = std::fs::canonicalize(disk).map_err(|e| format!("resolving {}: {e}", disk.display()))?;
    let size = crate::engine::qemu::qcow2_virtual_size(&current).map_err(|e| format!("reading {}: {e}", current.display()))?;
    let dir = disk.parent().ok_or("the box disk has no directory")?;
    let next_name = format!("disk-{}.qcow2", super::now_millis());
    let next = dir.join(&next_name);
    crate::engine::qemu::create_overlay(layer, "qcow2", &next, Some(size)).map_err(|e| e.to_string())?;
    let node = format!("disk{}", super::now_millis());
    let add = json!({
        "driver": "qcow2", "node-name": node, "discard": "unmap", "backing": null,
        "file": { "driver": "file", "filename": next.display().to_string() },
    });
    if let Err(e) = q.execute("blockdev-add", add) {
        let _ = std::fs::remove_file(&next);
        return Err(e.to_string());
    }
    if let Err(e) = q.execute("blockdev-snapshot", json!({ "node": "root", "overlay": node })) {
        let _ = q.execute("blockdev-del", json!({ "node-name": node }));
        let _ = std::fs::remove_file(&next);
        return Err(e.to_string());
    }
    // From here the VM writes to `next`, whose header names `layer` as its backing file.
    std::fs::rename(&current, layer).map_err(|e| format!("moving {} to {}: {e}", current.display(), layer.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(layer, std::fs::Permissions::from_mode(0o400));
    let link = dir.join(".disk.link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&next_name, &link)
        .and_then(|()| std::fs::rename(&link, disk))
        .map_err(|e| format!("pointing {} at {next_name}: {e}", disk.display()))
}

/// Saves an idle template VM (its RAM shared into its memory file) and ends it: the vCPUs stop,
/// the device state goes to `state` (the RAM stays in the file: `x-ignore-shared`), QEMU quits.
pub(crate) fn save_template(qmp: &Path, state: &Path) -> Result<u64, String> {
    let mut q = Qmp::connect(qmp, Duration::from_secs(30)).map_err(|e| format!("QMP: {e}"))?;
    q.execute("stop", Value::Null).map_err(|e| e.to_string())?;
    let len = save_memory(&mut q, state, true)?;
    let _ = q.execute("quit", Value::Null);
    Ok(len)
}

/// Migrates the stopped VM's memory into a new file at `memory` (written beside it, synced, then
/// renamed: a file under that name is always whole). Returns its size. With `ignore_shared` (a
/// template) shared RAM is left out; otherwise (a box restored from a template, whose VM was
/// started expecting that) all of it is saved, loadable by any VM of the same shape.
fn save_memory(q: &mut Qmp, memory: &Path, ignore_shared: bool) -> Result<u64, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = memory.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let saved = (|| {
        // The default cap (128 MiB/s) is for live migration over a network; this is a local file.
        q.execute("migrate-set-parameters", json!({ "max-bandwidth": 1u64 << 40 })).map_err(|e| e.to_string())?;
        set_ignore_shared(q, ignore_shared)?;
        q.send_fd(MEMORY_FD, file.as_raw_fd()).map_err(|e| e.to_string())?;
        q.execute("migrate", json!({ "uri": format!("fd:{MEMORY_FD}") })).map_err(|e| e.to_string())?;
        q.wait_migration(SAVE_LIMIT).map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| format!("syncing {}: {e}", partial.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        std::fs::rename(&partial, memory).map_err(|e| format!("renaming {}: {e}", partial.display()))?;
        Ok(len)
    })();
    if saved.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    saved
}

/// Sets the `x-ignore-shared` migration capability: shared RAM (a template's) is neither written
/// to the stream nor expected in it.
fn set_ignore_shared(q: &mut Qmp, on: bool) -> Result<(), String> {
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": on }] });
    q.execute("migrate-set-capabilities", caps).map(|_| ()).map_err(|e| e.to_string())
}

/// After a restore (`-incoming`): waits until QEMU has loaded the memory file and runs the VM.
/// With `deferred` (a template's state, `-incoming defer`) it first starts the load, with
/// `x-ignore-shared` set.
pub fn wait_restored(qmp: &Path, limit: Duration, deferred: bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut q = loop {
        match Qmp::connect(qmp, Duration::from_secs(30)) {
            Ok(q) => break q,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("QMP: {e}")),
        }
    };
    if deferred {
        set_ignore_shared(&mut q, true)?;
        q.execute("migrate-incoming", json!({ "uri": format!("fd:{}", crate::engine::INCOMING_FD) })).map_err(|e| e.to_string())?;
    }
    loop {
        match q.run_state().map_err(|e| e.to_string())?.as_str() {
            "running" => return Ok(()),
            // Memory saved from stopped vCPUs (which is how it is always saved) loads stopped.
            "paused" => {
                let status = q.execute("query-migrate", Value::Null).map_err(|e| e.to_string())?;
                if status.get("status").and_then(Value::as_str) != Some("completed") {
                    return Err(format!("loading the memory snapshot ended as {status}"));
                }
                q.execute("cont", Value::Null).map_err(|e| e.to_string())?;
            }
            "inmigrate" | "prelaunch" if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            "inmigrate" | "prelaunch" => return Err(format!("loading the memory snapshot took over {} s", limit.as_secs())),
            other => return Err(format!("the VM is '{other}' after loading its memory snapshot")),
        }
    }
}
