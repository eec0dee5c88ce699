//! `boxlite_runtime`: a BoxLite runtime over one home directory, with the tokio runtime that runs
//! its work.

use crate::args::{free_handle, handle, options, out_param, string};
use crate::cancel::{self, boxlite_canceller};
use crate::error::{boundary, boxlite_result, panic_failure, Failure};
use serde::{Deserialize, Serialize};
use std::ffi::c_char;
use std::future::Future;
use std::path::PathBuf;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A BoxLite runtime: one home directory (state, images, boxes) and the threads that run its VMs.
/// Made by `boxlite_runtime_new`, freed by `boxlite_runtime_free`. Usable from several threads at
/// once.
pub struct boxlite_runtime {
    pub(crate) ctx: Arc<Context>,
}

/// What every handle made from one runtime shares. The last handle freed drops it.
pub(crate) struct Context {
    /// Declared first, so it is dropped before `tokio`.
    pub runtime: boxlite::Runtime,
    /// Ids of the boxes booted through this runtime and not stopped through it since.
    booted: Mutex<HashSet<String>>,
    /// Dropping it ends every task: VM watchers (so VMs still running are killed) and output pumps.
    tokio: tokio::runtime::Runtime,
}

impl Drop for Context {
    /// Stops the VMs this runtime booted, detached boxes apart, as `boxlite_box_stop` would: their
    /// disks are synced and their records say stopped. (Dropping the tokio runtime alone would
    /// kill them and leave their records saying running.)
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *lock(&self.booted));
        let runtime = self.runtime.clone();
        self.tokio.block_on(async move {
            let mut stops = tokio::task::JoinSet::new();
            for id in ids {
                // A detached box is meant to outlive this process, so this runtime too.
                match runtime.get(&id) {
                    Ok(b) if !b.info().is_ok_and(|rec| rec.options.detach) => {
                        stops.spawn(async move { b.stop().await });
                    }
                    _ => {}
                }
            }
            while stops.join_next().await.is_some() {}
        });
    }
}

impl Context {
    /// Records that `id` was booted through this runtime (start or exec succeeded), or that it
    /// was stopped or removed through it.
    pub fn set_booted(&self, id: &str, booted: bool) {
        let mut set = lock(&self.booted);
        if booted {
            set.insert(id.to_string());
        } else {
            set.remove(id);
        }
    }

    /// Runs `work` on a worker thread and blocks the calling thread until it is done.
    /// Anything that may boot a VM goes through here: the VM process is tied to the thread that
    /// spawns it (PR_SET_PDEATHSIG), and the caller's thread may exit long before the box stops,
    /// while worker threads live as long as the runtime.
    pub fn run<T: Send + 'static>(&self, work: impl Future<Output = boxlite::Result<T>> + Send + 'static) -> Result<T, Failure> {
        joined(self.tokio.block_on(self.tokio.spawn(work)))
    }

    /// As [`Context::run`], unless `cancel` (None: never) is cancelled first: then `work` is
    /// dropped, which is how the runtime aborts (its temp files are removed by their drop
    /// guards), and the call fails with `BOXLITE_ERR_ABORTED` naming `what`. A canceller that is
    /// already cancelled aborts before any work starts.
    pub fn run_cancellable<T: Send + 'static>(
        &self,
        cancel: Option<CancellationToken>,
        what: &str,
        work: impl Future<Output = boxlite::Result<T>> + Send + 'static,
    ) -> Result<T, Failure> {
        let Some(cancel) = cancel else { return self.run(work) };
        let aborted = || Failure::new(boxlite_result::BOXLITE_ERR_ABORTED, format!("{what} was aborted by its canceller"));
        if cancel.is_cancelled() {
            return Err(aborted());
        }
        let mut task = self.tokio.spawn(work);
        self.tokio.block_on(async {
            tokio::select! {
                biased;
                done = &mut task => joined(done),
                () = cancel.cancelled() => {
                    task.abort();
                    // Wait until the task has dropped `work` (at its next await point), so that
                    // its drop guards have run when this call returns. Work it handed to blocking
                    // threads runs on. It may have finished meanwhile: then that is the result.
                    match (&mut task).await {
                        Err(join) if join.is_cancelled() => Err(aborted()),
                        done => joined(done),
                    }
                }
            }
        })
    }

    /// Blocks the calling thread on `work` (which starts no VM) for at most `timeout` (None: no
    /// limit); a timeout is `BOXLITE_ERR_TIMEOUT` naming `what`.
    pub fn wait_for<T>(&self, timeout: Option<Duration>, what: &str, work: impl Future<Output = T>) -> Result<T, Failure> {
        match timeout {
            None => Ok(self.tokio.block_on(work)),
            // The timer is made inside block_on: it needs the runtime's context.
            Some(limit) => self.tokio.block_on(async { tokio::time::timeout(limit, work).await }).map_err(|_| {
                Failure::new(boxlite_result::BOXLITE_ERR_TIMEOUT, format!("{what} timed out after {} ms", limit.as_millis()))
            }),
        }
    }
}

/// The result of a task of [`Context::run`]: its own, or a panic or cancellation as a failure.
fn joined<T>(done: Result<boxlite::Result<T>, tokio::task::JoinError>) -> Result<T, Failure> {
    match done {
        Ok(result) => result.map_err(Failure::from),
        Err(join) => Err(match join.try_into_panic() {
            Ok(payload) => panic_failure(payload.as_ref()),
            Err(join) => Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, format!("background task failed: {join}")),
        }),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already reported as BOXLITE_ERR_PANIC; the data stays usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `options_json` of `boxlite_runtime_new`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RuntimeConfig {
    home: Option<PathBuf>,
    registries: Vec<RegistryConfig>,
    accel: Option<boxlite::Accel>,
    assets_dir: Option<PathBuf>,
    warm_start: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryConfig {
    host: String,
    #[serde(default)]
    insecure: bool,
    username: Option<String>,
    password: Option<String>,
}

impl From<RuntimeConfig> for boxlite::RuntimeOptions {
    fn from(c: RuntimeConfig) -> Self {
        let registries = c
            .registries
            .into_iter()
            .map(|r| boxlite::RegistryConfig { host: r.host, insecure: r.insecure, username: r.username, password: r.password })
            .collect();
        boxlite::RuntimeOptions {
            home: c.home,
            registries,
            accel: c.accel,
            assets_dir: c.assets_dir,
            warm_start: c.warm_start,
            ..Default::default()
        }
    }
}

/// Opens a runtime: creates the home directory if needed and reconciles boxes whose VM died.
///
/// `options_json`: NULL for every default, or a JSON object with any of:
/// - `"home"`: state directory (default `$BOXLITE_HOME`, else `~/.boxlite`);
/// - `"registries"`: `[{"host": "127.0.0.1:5000", "insecure": true, "username": "u",
///   "password": "p"}]`, searched in order for unqualified image names (before docker.io);
///   `insecure` means plain http; credentials are optional. None (or an empty list): the
///   comma-separated `host[:port]` lists in `BOXLITE_REGISTRIES` and
///   `BOXLITE_INSECURE_REGISTRIES` (plain http), else `{"registries": [...],
///   "insecure_registries": [...]}` in `config.json` in the home; a malformed entry or file is
///   `BOXLITE_ERR_INVALID_ARGUMENT` naming it;
/// - `"accel"`: `"auto"` (default: KVM when it can run a guest, else TCG with one warning),
///   `"kvm"` or `"tcg"`;
/// - `"assets_dir"`: directory with the guest `vmlinux` and `initramfs.cpio` (default: see
///   docs/c-abi.md);
/// - `"warm_start"`: `true` or `false`: start new boxes from templates (booted idle guests,
///   one per box shape, made on a shape's first start or by `boxlite_runtime_warmup`) instead of
///   booting them. Default on, unless `$BOXLITE_WARM_START` is `0`. A box that cannot start from
///   its template (or one with volumes) boots cold, so the option changes start times, not what
///   boxes can do.
///
/// Unknown keys are rejected (`BOXLITE_ERR_INVALID_ARGUMENT`), so typos never pass silently.
/// `out`: receives the new runtime on success (untouched on failure); free it with
/// `boxlite_runtime_free`. Any thread.
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_new(options_json: *const c_char, out: *mut *mut boxlite_runtime) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_param(out, "out")? };
        // SAFETY: as above.
        let config: RuntimeConfig = unsafe { options(options_json, "options_json")? };
        crate::log::init();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("boxlite")
            .on_thread_start(block_sigpipe)
            .build()
            .map_err(|e| Failure::new(boxlite_result::BOXLITE_ERR_INTERNAL, format!("cannot start the async runtime: {e}")))?;
        let runtime = boxlite::Runtime::new(config.into())?;
        let ctx = Context { runtime, booted: Mutex::default(), tokio };
        *out = Box::into_raw(Box::new(boxlite_runtime { ctx: Arc::new(ctx) }));
        Ok(())
    })
}

/// Keeps SIGPIPE from the calling thread (and the threads it starts). A C program keeps the
/// default SIGPIPE disposition, which ends it: a write to a socket whose peer went (a box's
/// supervisor exits when the box is suspended or stopped) must fail with EPIPE in the library's
/// own threads instead. Rust programs, Python and Node ignore SIGPIPE already; the host
/// program's own threads and its disposition are left alone.
fn block_sigpipe() {
    // SAFETY: a signal-mask change of this thread, with an initialized set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Frees a runtime handle. NULL is a no-op.
///
/// Boxes and execs made from it stay usable until they are freed too. When the last of these
/// handles is freed, the boxes booted through this runtime that still run are stopped (as
/// `boxlite_box_stop`, so that call may block for their shutdown), except those created with
/// `"detach": true`, which run on; then the runtime's threads end.
/// Do not use `rt` again, nor free it while another thread uses it.
///
/// # Safety
/// `rt` is NULL or a runtime from `boxlite_runtime_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_free(rt: *mut boxlite_runtime) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(rt) }
}

/// Pulls an image into the runtime's home and builds its base disk, so that `boxlite_box_create`
/// with the same reference then starts without the network. Pulling an image the home already
/// has only re-reads its manifest (for a local OCI layout or archive: reloads it).
///
/// `rt`: the runtime. `reference`: as for `boxlite_box_create`, e.g. `"busybox:latest"`,
/// `"127.0.0.1:5000/python:slim"` or `"oci:/path/to/layout:tag"`. `canceller`: NULL (the pull
/// cannot be aborted), or a canceller that another thread may `boxlite_canceller_cancel`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (malformed reference), `BOXLITE_ERR_IMAGE` (no such
/// image, or it is malformed), `BOXLITE_ERR_REGISTRY` (unreachable, or credentials refused),
/// `BOXLITE_ERR_STORAGE`, and `BOXLITE_ERR_ABORTED` when `canceller` is cancelled before or
/// during the pull. An abort returns within milliseconds: the partial download is deleted and
/// the reference is not recorded. Work the pull had already handed to a library thread stops at
/// its next step in the background: a layer whose download had just ended is verified and kept as
/// cache; a base disk build in progress stops after its current layer (or mke2fs) and leaves no
/// disk. A pull that completed just before the cancel returns `BOXLITE_OK`. Blocks for the pull. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `reference` is NULL or NUL-terminated; `canceller` is NULL or
/// a live canceller.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_pull(
    rt: *mut boxlite_runtime,
    reference: *const c_char,
    canceller: *const boxlite_canceller,
) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let reference = unsafe { string(reference, "reference")? }.to_string();
        let cancel = unsafe { cancel::token(canceller) };
        let runtime = ctx.runtime.clone();
        let what = format!("pulling {reference}");
        ctx.run_cancellable(cancel, &what, async move { runtime.pull(&reference, None).await.map(drop) })
    })
}

/// `options_json` of `boxlite_runtime_warmup`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WarmupConfig {
    cpus: u32,
    memory_mib: u32,
    network: bool,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        let d = boxlite::WarmupOptions::default();
        WarmupConfig { cpus: d.cpus, memory_mib: d.memory_mib, network: d.network }
    }
}

/// The JSON object `boxlite_runtime_warmup` gives: the runtime's `TemplateInfo` with its shape
/// flattened, as a box's info has `cpus` and `memory_mib` at the top.
#[derive(Serialize)]
struct TemplateJson {
    path: PathBuf,
    cpus: u32,
    memory_mib: u32,
    network: bool,
    built: bool,
    build_ms: u64,
    disk_bytes: u64,
}

impl From<boxlite::TemplateInfo> for TemplateJson {
    fn from(t: boxlite::TemplateInfo) -> Self {
        TemplateJson {
            path: t.path,
            cpus: t.shape.cpus,
            memory_mib: t.shape.memory_mib,
            network: t.shape.network,
            built: t.built,
            build_ms: t.build_ms,
            disk_bytes: t.disk_bytes,
        }
    }
}

/// Makes sure the template for boxes of one shape (cpus, memory, network or none) exists in the
/// runtime's home, building it if needed: a guest booted cold without a box disk and saved idle,
/// under `templates/` in the home. With the runtime's `"warm_start"` on (the default), boxes of
/// that shape then start from it instead of booting; without a warmup, a shape's template is
/// built at the first start of a box of that shape, which then takes that much longer. Warming
/// up ahead moves that cost out of the first start. A template is never stale: one made for
/// another QEMU, kernel, agent or accelerator is not used, and building its replacement removes
/// it.
///
/// `options_json`: NULL for the default shape, or a JSON object with any of `"cpus"` (default 1),
/// `"memory_mib"` (default 512) and `"network"` (default `true`: boxes with a network, whatever
/// its allow/deny policy; `false`: boxes created with `"network": "none"`). Unknown keys are
/// rejected. `out` receives the template as a JSON object: `"path"` (its directory),
/// `"cpus"`, `"memory_mib"`, `"network"`, `"built"` (`true` if this call built it, `false` if
/// it was there already), `"build_ms"` (how long building it took, then or earlier) and
/// `"disk_bytes"` (what it takes on disk; its RAM file is sparse); free it with
/// `boxlite_string_free`.
///
/// Errors: `BOXLITE_ERR_INVALID_ARGUMENT` (cpus or memory out of range, a bad key),
/// `BOXLITE_ERR_GUEST_BOOT` (the guest did not come up or could not be saved),
/// `BOXLITE_ERR_ENGINE`, `BOXLITE_ERR_STORAGE`. Blocks for the build (one cold boot; another
/// caller building the same home's templates is waited for). Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `options_json` is NULL or NUL-terminated; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_warmup(rt: *mut boxlite_runtime, options_json: *const c_char, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (all three): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let config: WarmupConfig = unsafe { options(options_json, "options_json")? };
        let out = unsafe { out_param(out, "out")? };
        let runtime = ctx.runtime.clone();
        let shape = boxlite::WarmupOptions { cpus: config.cpus, memory_mib: config.memory_mib, network: config.network };
        // On a worker thread: the template's VM is tied to the thread that spawns it.
        let info = ctx.run(async move { runtime.warmup(shape).await })?;
        *out = crate::boxes::json_string(&TemplateJson::from(info))?;
        Ok(())
    })
}

/// The runtime's metrics as a JSON object: `"boxes_created_total"`, `"boxes_failed_total"`
/// (creates and starts that failed), `"total_commands_executed"` and `"total_exec_errors"`
/// (commands that could not start), counted by this runtime since `boxlite_runtime_new`, and
/// `"num_running_boxes"` (boxes of the home running now, started by any process). `out` receives
/// a string to free with `boxlite_string_free`. Any thread.
///
/// # Safety
/// `rt` is NULL or a live runtime; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_runtime_metrics(rt: *const boxlite_runtime, out: *mut *mut c_char) -> boxlite_result {
    boundary(|| {
        // SAFETY (both): forwarded from this function's contract.
        let ctx = unsafe { context(rt)? };
        let out = unsafe { out_param(out, "out")? };
        *out = crate::boxes::json_string(&ctx.runtime.metrics()?)?;
        Ok(())
    })
}

/// The runtime behind `rt`.
///
/// # Safety
/// As [`handle`].
pub(crate) unsafe fn context(rt: *const boxlite_runtime) -> Result<Arc<Context>, Failure> {
    // SAFETY: forwarded contract.
    Ok(unsafe { handle(rt, "rt")? }.ctx.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn options_json_rejects_unknown_keys_and_bad_values() {
        for (json, needle) in [
            (r#"{"hom": "/tmp/x"}"#, "unknown field `hom`"),
            (r#"{"accel": "hvf"}"#, "unknown variant `hvf`"),
            (r#"{"registries": [{"insecure": true}]}"#, "missing field `host`"),
            (r#"{"warm_start": "yes"}"#, "expected a boolean"),
            ("not json", "expected"),
        ] {
            let json = std::ffi::CString::new(json).unwrap();
            let mut rt = ptr::null_mut();
            // SAFETY: valid string and out-pointer.
            let code = unsafe { boxlite_runtime_new(json.as_ptr(), &mut rt) };
            assert_eq!(code, boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT);
            assert!(rt.is_null(), "out is written only on success");
            // SAFETY: this thread's message.
            let msg = unsafe { std::ffi::CStr::from_ptr(crate::boxlite_errmsg()) }.to_string_lossy().into_owned();
            assert!(msg.contains("options_json") && msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn a_runtime_opens_on_a_fresh_home_and_frees() {
        let home = std::env::temp_dir().join(format!("boxlite-ffi-unit-{}", std::process::id()));
        let json = std::ffi::CString::new(serde_json::json!({ "home": home, "accel": "tcg" }).to_string()).unwrap();
        let mut rt = ptr::null_mut();
        // SAFETY: valid string and out-pointer; rt freed once.
        unsafe {
            assert_eq!(boxlite_runtime_new(json.as_ptr(), &mut rt), boxlite_result::BOXLITE_OK);
            assert!(home.join("db").is_dir());
            let timed_out = (*rt).ctx.wait_for(Some(Duration::from_millis(10)), "waiting", std::future::pending::<()>());
            let failure = timed_out.unwrap_err();
            assert_eq!(failure.code, boxlite_result::BOXLITE_ERR_TIMEOUT);
            assert_eq!(failure.message, "waiting timed out after 10 ms");
            boxlite_runtime_free(rt);
            boxlite_runtime_free(ptr::null_mut());
        }
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn warmup_checks_its_options_and_shape_before_any_boot() {
        let home = std::env::temp_dir().join(format!("boxlite-ffi-warmup-{}", std::process::id()));
        let json = std::ffi::CString::new(serde_json::json!({ "home": home, "warm_start": false }).to_string()).unwrap();
        let mut rt = ptr::null_mut();
        // SAFETY: valid string and out-pointer; rt freed once.
        unsafe { assert_eq!(boxlite_runtime_new(json.as_ptr(), &mut rt), boxlite_result::BOXLITE_OK) };
        for (options, code, needle) in [
            (r#"{"cpu": 1}"#, boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT, "unknown field `cpu`"),
            (r#"{"network": "none"}"#, boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT, "expected a boolean"),
            (r#"{"cpus": 0}"#, boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT, "cpus 0 is out of range"),
            (r#"{"memory_mib": 64}"#, boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT, "memory_mib 64 is out of range"),
        ] {
            let options = std::ffi::CString::new(options).unwrap();
            let mut out = ptr::null_mut();
            // SAFETY: rt is live, the string valid, out writable.
            assert_eq!(unsafe { boxlite_runtime_warmup(rt, options.as_ptr(), &mut out) }, code);
            assert!(out.is_null(), "out is written only on success");
            // SAFETY: this thread's message.
            let msg = unsafe { std::ffi::CStr::from_ptr(crate::boxlite_errmsg()) }.to_string_lossy().into_owned();
            assert!(msg.contains(needle), "{msg}");
        }
        // SAFETY: a NULL out is refused before any work; NULL rt likewise.
        unsafe {
            assert_eq!(boxlite_runtime_warmup(rt, ptr::null(), ptr::null_mut()), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            let mut out = ptr::null_mut();
            assert_eq!(boxlite_runtime_warmup(ptr::null_mut(), ptr::null(), &mut out), boxlite_result::BOXLITE_ERR_NULL_POINTER);
        }
        assert!(!home.join("templates").exists(), "nothing was built");
        // SAFETY: freed once.
        unsafe { boxlite_runtime_free(rt) };
        std::fs::remove_dir_all(home).unwrap();
    }

    /// Sets its flag when dropped: tells that the cancelled work was dropped before the call returned.
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn cancellable_work_is_dropped_when_cancelled_and_never_started_when_cancelled_before() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let home = std::env::temp_dir().join(format!("boxlite-ffi-cancel-{}", std::process::id()));
        let json = std::ffi::CString::new(serde_json::json!({ "home": home }).to_string()).unwrap();
        let mut rt = ptr::null_mut();
        // SAFETY: valid string and out-pointer; rt freed once.
        unsafe { assert_eq!(boxlite_runtime_new(json.as_ptr(), &mut rt), boxlite_result::BOXLITE_OK) };
        // SAFETY: rt is live until freed below.
        let ctx = unsafe { context(rt) }.unwrap();

        // Not cancelled: the work's own result.
        assert_eq!(ctx.run_cancellable(Some(CancellationToken::new()), "adding", async { Ok(1 + 1) }).unwrap(), 2);

        // Cancelled before: the work never starts.
        let token = CancellationToken::new();
        token.cancel();
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let failure = ctx
            .run_cancellable(Some(token), "pulling x", async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(failure.code, boxlite_result::BOXLITE_ERR_ABORTED);
        assert_eq!(failure.message, "pulling x was aborted by its canceller");
        assert!(!started.load(Ordering::SeqCst));

        // Cancelled from another thread while the work waits forever: dropped before the return.
        let token = CancellationToken::new();
        let canceller = token.clone();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = DropFlag(dropped.clone());
        let cancel_thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            canceller.cancel();
        });
        let failure = ctx
            .run_cancellable(Some(token), "waiting", async move {
                let _guard = guard;
                std::future::pending::<boxlite::Result<()>>().await
            })
            .unwrap_err();
        assert_eq!(failure.code, boxlite_result::BOXLITE_ERR_ABORTED);
        assert!(dropped.load(Ordering::SeqCst), "the work is dropped before the call returns");
        cancel_thread.join().unwrap();

        drop(ctx);
        // SAFETY: freed once.
        unsafe { boxlite_runtime_free(rt) };
        std::fs::remove_dir_all(home).unwrap();
    }
}
