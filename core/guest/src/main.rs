//! `boxlite-guest`: the agent inside every BoxLite VM. It is the initramfs's `/init`.
//!
//! PID 1 mounts the kernel filesystems and the box disk, then forks: the child serves the guest
//! protocol, PID 1 only reaps orphans (so tokio's own child reaping is never raced) and powers the
//! VM off if the agent dies.

mod agent;
mod disk;
mod exec;
mod files;
mod inbox;
mod init;
mod net;
mod output_lane;
mod port;
mod spawn;
mod user;
mod volumes;

fn main() {
    if std::process::id() != 1 {
        eprintln!("boxlite-guest must run as PID 1 inside a BoxLite VM");
        std::process::exit(2);
    }
    if let Err(e) = init::setup() {
        init::fatal(&format!("boxlite-guest: setup failed: {e}"));
    }
    // SAFETY: single-threaded here (no runtime started yet), so fork is sound.
    match unsafe { libc::fork() } {
        0 => {
            let code = agent::run();
            std::process::exit(code);
        }
        -1 => init::fatal("boxlite-guest: fork failed"),
        agent_pid => init::reap_forever(agent_pid),
    }
}
