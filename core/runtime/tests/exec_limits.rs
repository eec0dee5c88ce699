//! Exec requests at and past the size of one protocol message.

mod common;

use boxlite::{BoxOptions, ExecCommand};
use boxlite_protocol::MAX_MESSAGE_BYTES;

/// The first number in `msg` after `after`.
fn number_after(msg: &str, after: &str) -> usize {
    let rest = &msg[msg.find(after).unwrap_or_else(|| panic!("no {after:?} in {msg}")) + after.len()..];
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{msg}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_request_over_the_message_limit_is_refused_with_both_sizes() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    let big = "x".repeat(MAX_MESSAGE_BYTES);
    let by_argv = ExecCommand::new("echo", [big.clone()]);
    let by_env = ExecCommand { env: vec![("BIG".into(), big)], ..ExecCommand::new("true", Vec::<String>::new()) };
    for cmd in [by_argv, by_env] {
        let err = b.exec(cmd).await.err().expect("must fail");
        let msg = err.to_string();
        assert_eq!(err.code(), "INVALID_ARGUMENT", "{msg}");
        assert!(number_after(&msg, "take") > MAX_MESSAGE_BYTES, "{msg}");
        assert!(msg.contains(&format!("{MAX_MESSAGE_BYTES}-byte limit")), "{msg}");
    }
    // Just under the limit (15 arguments of 60 KiB: also under the kernel's per-argument limit)
    // runs, on the same box.
    let args: Vec<String> = ["-c".to_string(), "echo $#".into(), "_".into()].into_iter().chain((0..15).map(|_| "y".repeat(60 * 1024))).collect();
    let out = b.exec(ExecCommand::new("sh", args)).await.unwrap().output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "15\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
    rt.remove(b.id(), true).await.unwrap();
}
