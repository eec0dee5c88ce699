//! Starting a command the way posix_spawn does: a vfork-style clone that shares the agent's
//! memory until the command's execve, so no page table is copied and no page is copied on write.
//! Under emulation that is most of what an exec costs: a fork, exec and wait of busybox `true`
//! from an agent-sized process took 2.0-2.3 ms against 1.4 ms this way (docs/exec.md).
//!
//! The child runs on its own stack in the agent's memory while the calling thread is suspended:
//! it makes raw syscalls on data prepared before the clone, and nothing else (no allocation, no
//! locks). It ends in execve or `_exit`, leaving the errno of a failed start where the parent
//! reads it. The parent waits for the exit through a pidfd (no SIGCHLD handler anywhere).

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::io::unix::AsyncFd;

/// The clone child's stack: it only makes syscalls, this is ample.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// A command ready to start: every string and pointer array made before the clone.
pub struct Command {
    /// The paths execve tries in turn (a PATH search for a bare name, as execvp does).
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    root: CString,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    /// Makes fd 0 the controlling terminal (a PTY slave on 0, 1 and 2).
    tty: bool,
}

/// Makes a string for the child; a NUL inside is the caller's error.
fn c_string(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
}

impl Command {
    /// `argv[0]` is a path, or a bare name searched in `env`'s PATH inside `root`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(argv: &[String], env: &[(String, String)], root: &str, cwd: CString, uid: u32, gid: u32, groups: &[u32], tty: bool) -> io::Result<Self> {
        let program = argv.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let candidates = if program.contains('/') {
            vec![c_string(program, "the command")?]
        } else {
            let path = env.iter().find(|(k, _)| k == "PATH").map_or("", |(_, v)| v.as_str());
            path.split(':')
                .map(|dir| if dir.is_empty() { program.clone() } else { format!("{}/{program}", dir.trim_end_matches('/')) })
                .map(|p| c_string(&p, "the command"))
                .collect::<io::Result<_>>()?
        };
        Ok(Command {
            candidates,
            argv: argv.iter().map(|a| c_string(a, "an argument")).collect::<io::Result<_>>()?,
            env: env.iter().map(|(k, v)| c_string(&format!("{k}={v}"), "the environment")).collect::<io::Result<_>>()?,
            root: c_string(root, "the root")?,
            cwd,
            uid,
            gid,
            groups: groups.to_vec(),
            tty,
        })
    }

    /// Starts the command with `stdio` as its fds 0, 1 and 2 (the caller closes its copies).
    /// Fails with the errno of the step that failed (ENOENT: no such command; EACCES: not
    /// executable; ENOEXEC: not a program, nor a script /bin/sh can run).
    pub fn spawn(&self, stdio: [RawFd; 3]) -> io::Result<Child> {
        let ptrs = |v: &[CString]| v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
        let (argv, envp) = (ptrs(&self.argv), ptrs(&self.env));
        // A file without `#!` that execve refuses runs under /bin/sh, as execvp does it: slot 1
        // is filled with the path that failed.
        let sh = c"/bin/sh";
        let mut script: Vec<*const c_char> = [sh.as_ptr(), std::ptr::null()].into_iter().chain(argv[1..].iter().copied()).collect();
        let candidates = ptrs(&self.candidates);
        let failed = AtomicI32::new(0);
        let mut child = ChildArgs {
            candidates: &candidates,
            argv: &argv,
            envp: &envp,
            script: &mut script,
            root: &self.root,
            cwd: &self.cwd,
            uid: self.uid,
            gid: self.gid,
            groups: &self.groups,
            tty: self.tty,
            stdio,
            failed: &failed,
            reset: handled_signals(),
        };
        let mut stack = vec![0u8; CHILD_STACK_BYTES];
        // SAFETY: the stack grows down from its 16-byte-aligned end; the buffer outlives the
        // child's use of it (CLONE_VFORK: clone returns once the child has exec'd or exited).
        let top = unsafe { stack.as_mut_ptr().add(CHILD_STACK_BYTES) }.map_addr(|a| a & !15);
        let mut pidfd: c_int = -1;
        // Signals stay blocked across the clone, so no handler of the agent runs on the child.
        // SAFETY: plain signal-mask calls on initialized sets.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // SAFETY: `child_main` only makes raw syscalls on `child`, which lives on this frame
        // until clone returns (CLONE_VFORK); CLONE_PIDFD writes the pidfd to `pidfd`.
        let pid = unsafe {
            libc::clone(
                child_main,
                top.cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                (&mut child as *mut ChildArgs).cast::<c_void>(),
                &mut pidfd as *mut c_int,
            )
        };
        let cloned = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return Err(cloned);
        }
        // SAFETY: CLONE_PIDFD gave us a fresh fd we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let errno = failed.load(Ordering::SeqCst);
        if errno != 0 {
            // It has exited already: reap it.
            let mut status = 0;
            // SAFETY: waits for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(io::Error::from_raw_os_error(errno));
        }
        match watch(pidfd) {
            Ok(pidfd) => Ok(Child { pid: pid as u32, pidfd, status: None }),
            Err(e) => {
                // Without its pidfd watched it could never be waited for: end it now.
                // SAFETY: signals and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                Err(e)
            }
        }
    }
}

/// The signals the child sets back to their default: those the agent handles (Rust's std
/// handles SIGSEGV and SIGBUS, and tokio any it is asked to watch) and SIGPIPE, which std
/// ignores. Asked of the kernel once, at the first spawn, rather than 64 times in every child.
/// A handler installed after the first command would be missed: the agent installs none (it
/// uses no tokio::signal).
fn handled_signals() -> &'static [c_int] {
    static SIGNALS: std::sync::OnceLock<Vec<c_int>> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(|| {
        (1..=64)
            .filter(|&sig| {
                // SAFETY: queries a disposition into a zeroed struct.
                let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
                let queried = unsafe { libc::sigaction(sig, std::ptr::null(), &mut sa) } == 0;
                queried && (sig == libc::SIGPIPE || (sa.sa_sigaction != libc::SIG_DFL && sa.sa_sigaction != libc::SIG_IGN))
            })
            .collect()
    })
}

/// What the clone child reads (and `failed`, `script`: what it writes), on the parent's frame.
struct ChildArgs<'a> {
    candidates: &'a [*const c_char],
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    script: &'a mut Vec<*const c_char>,
    root: &'a CString,
    cwd: &'a CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: &'a [libc::gid_t],
    tty: bool,
    stdio: [RawFd; 3],
    failed: &'a AtomicI32,
    reset: &'a [c_int],
}

/// The clone child: reset signals, take the stdio fds, a session, the root, the working
/// directory and the identity, then exec. Raw syscalls only (see the module doc).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's ChildArgs, alive and not touched by the suspended parent.
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    let fail = |e: c_int| -> c_int {
        a.failed.store(e, Ordering::SeqCst);
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: raw syscalls on prepared data, in a child that has its own signal dispositions.
    unsafe {
        // Handlers are the agent's code: the command starts with the default ones (and with
        // SIGPIPE no longer ignored, as Rust's std does), and nothing blocked.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for &sig in a.reset {
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            let target = target as c_int;
            let r = if fd == target { libc::fcntl(fd, libc::F_SETFD, 0) } else { libc::dup2(fd, target) };
            if r < 0 {
                return fail(errno());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::setsid() < 0
            || (a.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0)
            || libc::chroot(a.root.as_ptr()) < 0
            || libc::chdir(a.cwd.as_ptr()) < 0
            // Raw syscalls, as posix_spawn makes them: glibc's wrappers would try to apply the
            // change to every thread of the agent, whose thread list this child shares.
            || libc::syscall(libc::SYS_setgroups, a.groups.len(), a.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setgid, a.gid) < 0
            || libc::syscall(libc::SYS_setuid, a.uid) < 0
        {
            return fail(errno());
        }
        // execvp's search: EACCES is remembered and the search goes on; a missing entry goes on.
        let mut denied = false;
        let mut last = libc::ENOENT;
        for &path in a.candidates.iter().take_while(|p| !p.is_null()) {
            libc::execve(path, a.argv.as_ptr(), a.envp.as_ptr());
            match errno() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::ENOEXEC => {
                    a.script[1] = path;
                    libc::execve(a.script[0], a.script.as_ptr(), a.envp.as_ptr());
                    return fail(libc::ENOEXEC);
                }
                e => return fail(e),
            }
            last = errno();
        }
        fail(if denied { libc::EACCES } else { last })
    }
}

/// A started command: its pid, and its exit once it ends (reaped through the pidfd).
pub struct Child {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the command to end and reaps it. Cancel-safe (select! polls it repeatedly).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            // A pidfd turns readable when its process exits.
            self.pidfd.readable().await?.clear_ready();
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            let mut status = 0;
            // SAFETY: waits for our own unreaped child, without blocking.
            match unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, libc::WNOHANG) } {
                0 => return Ok(None),
                r if r < 0 => return Err(io::Error::last_os_error()),
                _ => self.status = Some(ExitStatus::from_raw(status)),
            }
        }
        Ok(self.status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Never a zombie: a command still running when its handle goes is reaped when it ends.
        if matches!(self.try_wait(), Ok(None)) {
            let (pid, pidfd) = (self.pid, self.pidfd.get_ref().try_clone());
            if let (Ok(handle), Ok(fd)) = (tokio::runtime::Handle::try_current(), pidfd) {
                handle.spawn(async move {
                    if let Ok(fd) = watch(fd) {
                        let mut later = Child { pid, pidfd: fd, status: None };
                        let _ = later.wait().await;
                    }
                });
            }
        }
    }
}

fn watch(pidfd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd moves into the AsyncFd, so it stays open and the same for its life.
    unsafe { AsyncFd::register(pidfd) }.map_err(io::Error::from)
}

/// A pipe whose ends are closed on exec (the child's end is dup'd onto its stdio).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}
