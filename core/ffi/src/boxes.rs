//! `boxlite_box`: a handle to one box (its VM, disk and record).

use crate::args::{free_handle, handle, json, options, out_param, string};
use crate::error::{boundary, boxlite_result, pointer_boundary, Failure};
use crate::net::{port_specs, NetworkConfig};
use crate::runtime::{boxlite_runtime, context, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::sync::Arc;

/// A handle to one box. Made by `boxlite_box_create` (a new box) or `boxlite_box_get` (an existing
/// one), freed by `boxlite_box_free`, which frees the handle only: the box lives on until removed.
/// Usable from several threads at once.
pub struct boxlite_box {
    pub(crate) ctx: Arc<Context>,
    pub(crate) lite: boxlite::LiteBox,
    id: CString,
}

impl boxlite_box {
    fn new(ctx: Arc<Context>, lite: boxlite::LiteBox) -> Result<Self, Failure> {
        let id = CString::new(lite.id()).map_err(|_| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, "box id contains NUL"))?;
        Ok(boxlite_box { ctx, lite, id })
    }
}

/// `options_json` of `boxlite_box_create`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct BoxConfig {
    name: Option<String>,
    cpus: Option<u32>,
    memory_mib: Option<u32>,
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
    user: Option<String>,
    ready_timeout_ms: Option<u64>,
    detach: bool,
    auto_stop_ms: Option<u64>,
    auto_remove: bool,
    network: NetworkConfig,
    ports: Vec<serde_json::Value>,
    volumes: Vec<serde_json::Value>,
    disk_size_gb: Option<u32>,
}

/// One entry of `"volumes"`. Unknown keys are rejected, as everywhere in options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeConfig {
    host_path: String,
    guest_path: String,
    #[serde(default)]
    read_only: bool,
}

/// The `"volumes"` entries, each read on its own so that a malformed one is named by its index
/// and text; the runtime checks the paths.
fn volumes(entries: Vec<serde_json::Value>) -> Result<Vec<boxlite::Volume>, Failure> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let text = entry.to_string();
            let v: VolumeConfig = serde_json::from_value(entry).map_err(|e| {
                Failure::invalid(format!(
                    "volumes[{i}] {text} is not a volume: {e} (use {{\"host_path\": \"/abs/dir\", \"guest_path\": \"/mnt/dir\", \"read_only\": false}})"
                ))
            })?;
            Ok(boxlite::Volume { host_path: v.host_path.into(), guest_path: v.guest_path, read_only: v.read_only })
        })
        .collect()
}

impl BoxConfig {
    fn into_options(self, image: &str) -> Result<boxlite::BoxOptions, Failure> {
        let defaults = boxlite::BoxOptions::new(image);
        Ok(boxlite::BoxOptions {
            name: self.name,
            cpus: self.cpus.unwrap_or(defaults.cpus),
            memory_mib: self.memory_mib.unwrap_or(defaults.memory_mib),
            env: self.env.into_iter().collect(),
            working_dir: self.working_dir,
            user: self.user,
            ready_timeout_ms: self.ready_timeout_ms.unwrap_or(defaults.ready_timeout_ms),
            detach: self.detach,
            auto_stop_ms: self.auto_stop_ms,
            auto_remove: self.auto_remove,
            network: self.network.into(),
            ports: port_specs(self.ports)?,
            volumes: volumes(self.volumes)?,
            disk_size_gb: self.disk_size_gb,
            ..defaults
        })
    }
}

/// Creates a box from an image, pulling the image first if this home does not have it. The box
/// boots on `boxlite_box_start` or its first exec.
///
/// `rt`: the runtime. `image`: a reference such as `"busybox:latest"`,
/// `"127.0.0.1:5000/python:slim"` or `"oci:/path/to/layout:tag"`.
/// `options_json`: NULL for every default, or a JSON object with any of `"name"` (unique, 1-64 of
/// `[A-Za-z0-9_.-]`), `"cpus"` (1-64, default 1), `"memory_mib"` (128-65536, default 512),
/// `"env"` (`{"KEY": "value"}` over the image's Env), `"working_dir"` (absolute path, over the
/// image's WorkingDir), `"user"` (over the image's User), `"ready_timeout_ms"` (how long the guest
/// may take to answer after its VM starts, default 30000), `"detach"` (true: the box keeps running
/// after this process ends; default false: it stops cleanly when this process ends),
/// `"auto_stop_ms"` (stop after this long with no command running), `"auto_remove"` (remove the
/// box once it stops), `"network"` (`"default"`: outbound to everything, the host's 127.0.0.1
/// reachable as `host.docker.internal`; `"none"`: no NIC, only loopback; `{"allow": [...]}` /
/// `{"deny": [...]}`: outbound only to / to all but these host names, `*.` wildcard names, IP
/// addresses and CIDRs, enforced on the host), `"ports"` (published ports: `[{"host_port": 8080,
/// "guest_port": 80, "protocol": "tcp", "host_ip": "127.0.0.1"}]`; `guest_port` 1-65535 is
/// required; `host_port` 0 (the default) picks a free port, which `boxlite_box_info` reports
/// while the box runs; `protocol` `"tcp"` (default) or `"udp"`; `host_ip` default
/// `"127.0.0.1"`), `"volumes"` (host directories shared live, at most 3:
/// `[{"host_path": "/abs/dir", "guest_path": "/mnt/dir", "read_only": false}]`; the host
/// directory must exist, the guest path be absolute, normalized and not under /proc, /sys or
/// /dev; read-only is enforced on the host), `"disk_size_gb"` (1-1024 and at least the image's
/// own disk: the root filesystem's capacity, sparse on the host; default the image's size plus
/// 2 GiB). Unknown keys are rejected.
/// `out`: receives the new box handle on success (untouched on failure); free it with
/// `boxlite_box_free`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (bad option, the message naming it: a malformed
/// allow/deny entry, guest port 0, a host port published twice or in use now, ports on a box
/// with network `"none"`, a missing volume directory, a disk size out of range or below the
/// image's), `BOXLITE_ERR_ALREADY_EXISTS` (name
/// taken), `BOXLITE_ERR_IMAGE` / `BOXLITE_ERR_REGISTRY` (pull failed), `BOXLITE_ERR_STORAGE`. A
/// failed create leaves no box behind. Blocks while the image is pulled. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; strings are NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_create(
    rt: *mut boxlite_runtime,
    image: *const c_char,
    options_json: *const c_char,
    out: *mut *mut boxlite_box,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all four): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let image = unsafe { string(image, "image")? };
        let config: BoxConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let runtime = ctx.runtime.clone();
        let options = config.into_options(image)?;
        let lite = ctx.run(async move { runtime.create(options).await })?;
        *out = Box::into_raw(Box::new(boxlite_box::new(ctx, lite)?));
        Ok(())
    })
}

/// Finds an existing box by id or name.
///
/// `rt`: the runtime. `id_or_name`: the box's id or name. `out`: receives a new handle on success
/// (untouched on failure); free it with `boxlite_box_free`. Several handles may refer to the
/// same box. Errors: `BOXLITE_ERR_NOT_FOUND`. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `id_or_name` is NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_get(
    rt: *const boxlite_runtime,
    id_or_name: *const c_char,
    out: *mut *mut boxlite_box,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let id_or_name = unsafe { string(id_or_name, "id_or_name")? };
        let out = unsafe { out_param(out, "out")? };
        let lite = ctx.runtime.get(id_or_name)?;
        *out = Box::into_raw(Box::new(boxlite_box::new(ctx, lite)?));
        Ok(())
    })
}

/// The box's id: 13 lowercase letters and digits, sortable by creation time.
///
/// Returns a NUL-terminated string owned by `b`, valid until `boxlite_box_free(b)`; NULL if `b`
/// is NULL. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_id(b: *const boxlite_box) -> *const c_char {
    // SAFETY: forwarded from this function's contract.
    pointer_boundary(|| unsafe { b.as_ref() }.map_or(std::ptr::null(), |b| b.id.as_ptr()))
}

/// Boots the box's VM and waits until its guest answers. A no-op if this process already runs it.
///
/// Errors: `BOXLITE_ERR_NOT_FOUND` (removed), `BOXLITE_ERR_ENGINE` (no QEMU, guest assets
/// missing), `BOXLITE_ERR_GUEST_BOOT` (the VM died or `ready_timeout_ms` passed; the message
/// quotes the console log), `BOXLITE_ERR_INVALID_STATE` (another process runs it). Blocks for
/// the boot (about a second under TCG). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_start(b: *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.start().await })?;
        b.ctx.set_booted(b.lite.id(), true);
        Ok(())
    })
}

/// Stops the box's VM: the guest syncs and unmounts its disk, which is kept for the next start.
/// A no-op for a box that is not running. Running commands end; their execs report an error or
/// a signal. Blocks up to about 20 s for a VM that does not stop. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_stop(b: *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.stop().await })?;
        b.ctx.set_booted(b.lite.id(), false);
        Ok(())
    })
}

/// Pauses the running box: its vCPUs stop and its memory, processes and connections are kept,
/// using no CPU, until `boxlite_box_resume`. Commands under way wait and go on after the resume;
/// new calls (exec, files) fail with `BOXLITE_ERR_INVALID_STATE` meanwhile. Its info says
/// `"paused"` to every process. A paused box stays paused; a box that is not running is
/// `BOXLITE_ERR_INVALID_STATE`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_pause(b: *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.pause().await })
    })
}

/// Lets a paused box run again, its clock set to the host's; continues a suspended box from its
/// saved memory (booting its VM); a no-op on a running box. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_resume(b: *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.resume().await })
    })
}

/// Saves the running box's memory and disk at one instant under `name`, while the box goes on (its
/// vCPUs stand still for the moment it takes). `boxlite_runtime_restore` starts new boxes from it.
///
/// `name`: 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit. `out`
/// receives the snapshot as a JSON object, as `boxlite_runtime_snapshots` lists it: `"name"`,
/// `"box_id"`, `"box_name"` (or null), `"image"`, `"created_at"` (unix milliseconds), `"cpus"`,
/// `"memory_mib"`, `"memory_bytes"` (the memory file), `"disk_bytes"` (the frozen disk layer) and
/// `"paused_ms"` (how long the vCPUs stood still); free it with `boxlite_string_free`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (bad name; a box with volumes), `BOXLITE_ERR_ALREADY_EXISTS`
/// (name taken), `BOXLITE_ERR_INVALID_STATE` (the box is not running), `BOXLITE_ERR_NOT_FOUND`,
/// `BOXLITE_ERR_ENGINE`, `BOXLITE_ERR_STORAGE`. Blocks while the memory is written. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `name` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_snapshot(b: *mut boxlite_box, name: *const c_char, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let name = unsafe { string(name, "name")? }.to_string();
        let out = unsafe { out_param(out, "out")? };
        let lite = b.lite.clone();
        let info = b.ctx.run(async move { lite.snapshot(&name).await })?;
        *out = json_string(&info)?;
        Ok(())
    })
}

/// Saves the running box's memory to its directory and ends its VM: its info says `"suspended"`,
/// and it uses no CPU or memory until `boxlite_box_resume` (or any call that needs it running, such
/// as `boxlite_box_exec`) continues it from there, processes and all. A suspended box stays
/// suspended; a box that is not running is `BOXLITE_ERR_INVALID_STATE`, one with volumes
/// `BOXLITE_ERR_INVALID_ARGUMENT`. Blocks while the memory is written. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_suspend(b: *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.suspend().await })
    })
}

/// Starts `count` (1 to 64) new boxes continuing from this running box as it is now (through a
/// snapshot that is not kept), each with its own disk and identity; this box goes on as well.
///
/// `out`: an array of `count` box handles, filled on success (untouched on failure); free each with
/// `boxlite_box_free`. A failed fork leaves no new box behind. Errors as `boxlite_box_snapshot`
/// and `boxlite_runtime_restore`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `out` is NULL or points to `count` writable handles.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_fork(b: *mut boxlite_box, count: u32, out: *mut *mut boxlite_box) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let out: *mut *mut boxlite_box = unsafe { out_param(out, "out")? };
        let lite = b.lite.clone();
        let forks = b.ctx.run(async move { lite.fork(count).await })?;
        for f in &forks {
            b.ctx.set_booted(f.id(), true);
        }
        // Every handle is made before any is handed out, so a failure leaves nothing to free.
        let handles = forks.into_iter().map(|f| boxlite_box::new(b.ctx.clone(), f)).collect::<Result<Vec<_>, _>>()?;
        for (i, h) in handles.into_iter().enumerate() {
            // SAFETY: the caller gave `count` writable slots and the runtime made `count` boxes.
            unsafe { *out.add(i) = Box::into_raw(Box::new(h)) };
        }
        Ok(())
    })
}

/// `options_json` of `boxlite_runtime_restore`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RestoreConfig {
    name: Option<String>,
    detach: bool,
    auto_remove: bool,
    auto_stop_ms: Option<u64>,
}

/// Starts a new box that continues from snapshot `snapshot`: its processes, memory and files as
/// they were at that instant, on a disk of its own, with a fresh identity (its own id and hostname,
/// the guest RNG reseeded, the clock set). Its cpus and memory are the snapshot's.
///
/// `options_json`: NULL or a JSON object with `"name"` (default: none, known by its id),
/// `"detach"`, `"auto_remove"` (as in `boxlite_box_create`) and `"auto_stop_ms"`. Unknown keys are
/// rejected. `out`: receives the new box handle, running, on success (untouched on failure); free
/// it with `boxlite_box_free`.
///
/// Errors: `BOXLITE_ERR_NOT_FOUND` (no such snapshot), `BOXLITE_ERR_INVALID_ARGUMENT` (bad
/// option), `BOXLITE_ERR_ALREADY_EXISTS` (name taken), `BOXLITE_ERR_INVALID_STATE` (the VM engine,
/// guest kernel, agent or accelerator changed since the snapshot), `BOXLITE_ERR_ENGINE`,
/// `BOXLITE_ERR_STORAGE`. Blocks while the memory is loaded. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; strings are NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_restore(
    rt: *mut boxlite_runtime,
    snapshot: *const c_char,
    options_json: *const c_char,
    out: *mut *mut boxlite_box,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all four): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let snapshot = unsafe { string(snapshot, "snapshot")? }.to_string();
        let config: RestoreConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let runtime = ctx.runtime.clone();
        let opts = boxlite::RestoreOptions { name: config.name, detach: config.detach, auto_remove: config.auto_remove, auto_stop_ms: config.auto_stop_ms };
        let lite = ctx.run(async move { runtime.restore(&snapshot, opts).await })?;
        ctx.set_booted(lite.id(), true);
        *out = Box::into_raw(Box::new(boxlite_box::new(ctx, lite)?));
        Ok(())
    })
}

/// Every snapshot of the runtime's home, oldest first, as a JSON array of the objects
/// `boxlite_box_snapshot` gives. `out` receives a string to free with `boxlite_string_free`. Any
/// thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_snapshots(rt: *const boxlite_runtime, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let out = unsafe { out_param(out, "out")? };
        *out = json_string(&ctx.runtime.snapshots()?)?;
        Ok(())
    })
}

/// Removes snapshot `name`. Boxes restored from it keep working (the disk layer they share is
/// deleted only when nothing uses it). Errors: `BOXLITE_ERR_NOT_FOUND`, `BOXLITE_ERR_STORAGE`.
/// Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_remove_snapshot(rt: *mut boxlite_runtime, name: *const c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let name = unsafe { string(name, "name")? }.to_string();
        let runtime = ctx.runtime.clone();
        ctx.run(async move { runtime.remove_snapshot(&name).await })
    })
}

/// Removes the box: its record and its directory (disk, logs) are deleted.
///
/// `force`: stop a running box first; without it a running box is `BOXLITE_ERR_INVALID_STATE`.
/// The handle stays valid for `boxlite_box_id` and `boxlite_box_free`; anything else on it then
/// fails with `BOXLITE_ERR_NOT_FOUND`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_remove(b: *mut boxlite_box, force: bool) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let runtime = b.ctx.runtime.clone();
        let id = b.lite.id().to_string();
        b.ctx.run(async move { runtime.remove(&id, force).await })?;
        b.ctx.set_booted(b.lite.id(), false);
        Ok(())
    })
}

/// The box's record as a JSON object: `"id"`, `"name"` (or null), `"image"`, `"status"` (one of
/// `"created"`, `"starting"`, `"running"`, `"paused"`, `"suspended"`, `"stopping"`, `"stopped"`, `"failed"`), `"pid"` (the VM
/// process while running, else null), `"cpus"`, `"memory_mib"`, `"created_at"` and
/// `"started_at"` (unix milliseconds; `started_at` null before the first boot), `"detach"`,
/// `"auto_remove"`, `"reason"` (why it is failed, or how it last stopped; else null),
/// `"network"` (as in `boxlite_box_create`'s options: the policy now in force), `"ports"`
/// (`[{"host_ip", "host_port", "guest_port", "protocol"}]`: while the box runs, as bound, a
/// `host_port` 0 replaced by the port picked; otherwise as asked), `"volumes"`
/// (`[{"host_path", "guest_path", "read_only"}]`, the host path canonical) and `"disk_size_gb"`
/// (null: the image's size plus 2 GiB). The box may have been started
/// by another process. `out` receives a string to free with
/// `boxlite_string_free`. Errors: `BOXLITE_ERR_NOT_FOUND` (removed). Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_info(b: *const boxlite_box, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let b = unsafe { handle(b.cast_mut(), "box")? };
        let out = unsafe { out_param(out, "out")? };
        *out = json_string(&info_json(&b.lite.info()?))?;
        Ok(())
    })
}

/// A box's record as `boxlite_box_info` and `boxlite_boxes_list` report it.
fn info_json(rec: &boxlite::BoxRecord) -> serde_json::Value {
    serde_json::json!({
        "id": rec.id, "name": rec.name, "image": rec.image.reference, "status": rec.status,
        "pid": rec.pid, "cpus": rec.options.cpus, "memory_mib": rec.options.memory_mib,
        "created_at": rec.created_at, "started_at": rec.started_at, "detach": rec.options.detach,
        "auto_remove": rec.options.auto_remove, "reason": rec.reason,
        "network": NetworkConfig::from(&rec.options.network), "ports": rec.ports,
        "volumes": rec.options.volumes, "disk_size_gb": rec.options.disk_size_gb,
    })
}

/// Every box of the runtime's home, oldest first, as a JSON array of the objects
/// `boxlite_box_info` gives, each with its current status (boxes of other processes included).
/// `out` receives a string to free with `boxlite_string_free`. Never boots a box. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_boxes_list(rt: *const boxlite_runtime, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let out = unsafe { out_param(out, "out")? };
        let boxes: Vec<_> = ctx.runtime.list()?.iter().map(info_json).collect();
        *out = json_string(&boxes)?;
        Ok(())
    })
}

/// The box's metrics as a JSON object: `"cpu_percent"` (VM CPU since the previous sample, percent
/// of one core), `"memory_bytes"` (the VM process's resident memory), `"commands_executed"` and
/// `"exec_errors"` (since the box last started, from any process), `"boot_duration_ms"`,
/// `"vm_pid"`, `"network_bytes_sent"` and `"network_bytes_received"` (payload bytes the box sent
/// and received over TCP and UDP, published ports included, DNS excluded) and
/// `"network_tcp_connections"` (TCP connections relayed), all since the box last started; zeros
/// and a null pid when it is not running. `out` receives a string to free with
/// `boxlite_string_free`. Errors: `BOXLITE_ERR_NOT_FOUND`. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_metrics(b: *mut boxlite_box, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let out = unsafe { out_param(out, "out")? };
        let lite = b.lite.clone();
        let metrics = b.ctx.run(async move { lite.metrics().await })?;
        *out = json_string(&metrics)?;
        Ok(())
    })
}

/// Replaces the egress policy of a box: at once on the running box (connections already open
/// stay), and for its later starts.
///
/// `network_json`: a JSON value as `"network"` in `boxlite_box_create`'s options: the JSON string
/// `"default"` (outbound to everything; in C source `"\"default\""`), `{"allow": [...]}` or
/// `{"deny": [...]}`. A box's network cannot be switched on or off after create: `"none"`, or
/// any policy for a box created with `"none"`, is `BOXLITE_ERR_INVALID_ARGUMENT`.
/// `boxlite_box_info` reports the policy in force.
///
/// Errors: `BOXLITE_ERR_NULL_POINTER`, `BOXLITE_ERR_INVALID_ARGUMENT` (malformed JSON, a bad
/// entry, named; switching on or off), `BOXLITE_ERR_NOT_FOUND` (removed), `BOXLITE_ERR_ENGINE`
/// (the running box's network helper did not take it; the stored policy is then unchanged).
/// Never boots the box. Any thread.
///
/// # Safety
/// `b` is NULL or a live box handle; `network_json` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_set_network(b: *mut boxlite_box, network_json: *const c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let b = unsafe { handle(b, "box")? };
        let network: NetworkConfig = unsafe { json(network_json, "network_json", "network JSON")? };
        let lite = b.lite.clone();
        b.ctx.run(async move { lite.set_network(network.into()).await })
    })
}

/// Frees a string returned by this library (`boxlite_box_info`, `boxlite_box_metrics`,
/// `boxlite_boxes_list`, `boxlite_runtime_metrics`, `boxlite_images_list`, `boxlite_image_remove`,
/// `boxlite_images_prune`, `boxlite_box_snapshot`, `boxlite_runtime_snapshots`, `boxlite_runtime_warmup`,
/// `boxlite_box_list_dir`, `boxlite_box_stat_file`, `boxlite_watch_next`). NULL is a no-op.
///
/// # Safety
/// `s` is NULL or a string from this library, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: made by CString::into_raw in json_string, per this function's contract.
        drop(unsafe { CString::from_raw(s) });
    }
}

pub(crate) fn json_string(value: &impl serde::Serialize) -> Result<*mut c_char, Failure> {
    let text = serde_json::to_string(value).map_err(|e| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, e.to_string()))?;
    Ok(CString::new(text).map_err(|_| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, "JSON with NUL"))?.into_raw())
}

/// Frees a box handle; the box itself is untouched (use `boxlite_box_remove` to delete it).
/// NULL is a no-op. Execs made from the handle stay usable. Do not use `b` again, nor free it
/// while another thread uses it.
///
/// # Safety
/// `b` is NULL or a box handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_box_free(b: *mut boxlite_box) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(b) }
}
