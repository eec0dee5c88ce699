//! What idling cheaply must not cost (issue 11): the guest's clock is kept to the host's while the
//! box runs (here with a sync every second instead of every minute, and a guest clock set 30 s
//! wrong), and a box can use the memory it was given: most of it is allocated and touched, and
//! a program that asks for more than the box has is killed inside the box, which goes on. Its timer
//! runs at the right rate and idles tickless (under TCG the guest is told the emulated APIC's rate
//! instead of calibrating it).

mod common;

use boxlite::{BoxOptions, ExecCommand, LiteBox};
use std::time::Duration;

async fn sh(b: &LiteBox, script: &str) -> (Option<i32>, String) {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output");
    (out.status.code, String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn host_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_clock_is_kept_and_the_memory_limit_holds() {
    // The supervisor reads this when it starts (it inherits this process's environment).
    std::env::set_var("BOXLITE_CLOCK_SYNC_MS", "1000");
    let rt = common::runtime();
    let b = rt.create(BoxOptions { memory_mib: 256, ..BoxOptions::new("python:slim") }).await.expect("create");

    // A clock set 30 s wrong is stepped back to the host's within a sync or two.
    let (code, _) = sh(&b, "date -s @$(( $(date +%s) - 30 )) >/dev/null").await;
    assert_eq!(code, Some(0));
    let (_, wrong) = sh(&b, "date +%s").await;
    assert!(host_now() - wrong.parse::<i64>().unwrap() >= 25, "the guest clock was not set back: {wrong}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, guest) = sh(&b, "date +%s").await;
    let off = guest.parse::<i64>().unwrap() - host_now();
    assert!(off.abs() <= 1, "the guest clock is {off} s off the host's after the periodic sync");

    // Timers fire on time: a wrong APIC timer rate makes `sleep` late (or early, then rearmed).
    // And an idle guest takes no periodic tick: 2 s of sleep at 250 Hz would be 500 timer
    // interrupts; tickless, a handful.
    let t = std::time::Instant::now();
    let (code, ticks) = sh(&b, "loc() { awk '/LOC:/ {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; print n}' /proc/interrupts; }; a=$(loc); sleep 2; echo $(( $(loc) - a ))").await;
    let took = t.elapsed();
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(3500), "`sleep 2` in the box took {took:?}");
    let ticks: u64 = ticks.parse().unwrap();
    assert!(ticks < 100, "{ticks} local timer interrupts during 2 s of idle sleep: the guest is not tickless");

    // MemTotal is the box's memory less the kernel's own; 160 of 256 MiB can be allocated and touched.
    let (_, total_kib) = sh(&b, "awk '/MemTotal/ {print $2}' /proc/meminfo").await;
    let total_mib = total_kib.parse::<u64>().unwrap() / 1024;
    assert!((200..=256).contains(&total_mib), "MemTotal {total_mib} MiB in a 256 MiB box");
    let (code, got) = sh(&b, "python3 -c \"b = b'x' * (160 << 20); print(len(b) >> 20)\"").await;
    assert_eq!((code, got.as_str()), (Some(0), "160"), "160 MiB could not be allocated in a 256 MiB box");
    // More than the box has: the guest's OOM killer ends that program, and the box goes on.
    let (code, _) = sh(&b, "python3 -c \"b = b'x' * (400 << 20)\"").await;
    assert!(matches!(code, Some(c) if c != 0), "allocating 400 MiB in a 256 MiB box succeeded");
    let (code, got) = sh(&b, "echo alive").await;
    assert_eq!((code, got.as_str()), (Some(0), "alive"));
    rt.remove(b.id(), true).await.expect("remove");
}
