//! Pause and resume on one real box: a command under way stalls while paused and goes on after
//! resume, new calls are refused, the box is `paused` to every runtime on the home, it uses no CPU,
//! its clock is right after the resume, and a paused box still stops gracefully.

mod common;

use boxlite::{BoxOptions, BoxStatus, Error, ExecCommand, LiteBox};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn sh(b: &LiteBox, script: &str) -> String {
    let out = b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(seen: &Mutex<Vec<u8>>) -> usize {
    seen.lock().unwrap().iter().filter(|&&b| b == b'\n').count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_box_keeps_everything_and_goes_on_after_resume() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.expect("create");
    let err = b.pause().await.expect_err("a box that never ran cannot be paused");
    assert!(matches!(err, Error::InvalidState(ref m) if m.contains("start it first")), "{err}");
    b.start().await.expect("start");

    // A command that counts to 40, a line every 50 ms, read as it comes.
    let mut counter = b.exec(ExecCommand::new("sh", ["-c", "i=0; while [ $i -lt 40 ]; do echo $i; i=$((i+1)); sleep 0.05; done"])).await.expect("exec");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = counter.stdout.take().expect("stdout");
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(chunk) = stdout.next().await {
                seen.lock().unwrap().extend_from_slice(&chunk);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&seen) < 3 {
        assert!(Instant::now() < deadline, "the counter printed nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    b.pause().await.expect("pause");
    b.pause().await.expect("pausing a paused box does nothing");
    assert_eq!(b.info().unwrap().status, BoxStatus::Paused);
    let other = common::runtime();
    assert_eq!(other.get(b.id()).unwrap().info().unwrap().status, BoxStatus::Paused, "every runtime on the home sees it paused");
    tokio::time::sleep(Duration::from_millis(300)).await; // what was already on its way arrives
    let at_pause = lines(&seen);
    assert!(at_pause < 40, "the counter finished before the pause: {at_pause}");
    let _ = b.metrics().await.expect("metrics"); // starts a CPU sample
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&seen), at_pause, "a paused box's command made progress");
    let metrics = b.metrics().await.expect("metrics");
    assert!(metrics.cpu_percent < 5.0, "a paused VM used {:.1} % of a core", metrics.cpu_percent);

    let refused = b.exec(ExecCommand::new("true", Vec::<String>::new())).await.err().expect("exec on a paused box is refused");
    assert!(matches!(refused, Error::InvalidState(ref m) if m.contains("paused") && m.contains("resume")), "{refused}");
    let refused = b.files().stat("/").await.expect_err("file calls on a paused box are refused");
    assert!(matches!(refused, Error::InvalidState(ref m) if m.contains("paused")), "{refused}");

    b.resume().await.expect("resume");
    b.resume().await.expect("resuming a running box does nothing");
    assert_eq!(b.info().unwrap().status, BoxStatus::Running);
    let status = counter.wait().await.expect("the counter ends");
    reader.await.unwrap();
    assert!(status.success(), "{status:?}");
    let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    let expected: String = (0..40).map(|i| format!("{i}\n")).collect();
    assert_eq!(text, expected, "the command went on where it was, nothing lost or repeated");

    // The guest's clock stood still for the ~2.5 s of the pause; resume sets it again.
    let host = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let guest: i64 = sh(&b, "date +%s").await.trim().parse().expect("date");
    assert!((guest - host).abs() <= 1, "the guest's clock is {} s off the host's after the resume", guest - host);

    // A paused box still stops gracefully (it is resumed for the agent to sync and unmount).
    sh(&b, "echo kept > /root/kept; sync").await;
    b.pause().await.expect("pause");
    b.stop().await.expect("stop");
    let info = b.info().unwrap();
    assert_eq!(info.status, BoxStatus::Stopped, "{info:?}");
    b.start().await.expect("start again");
    assert_eq!(sh(&b, "cat /root/kept").await, "kept\n");
    rt.remove(b.id(), true).await.expect("remove");
}
