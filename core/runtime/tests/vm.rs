//! End-to-end tests: real VMs booted from images served by the local test registry.

mod common;

use boxlite::{BoxOptions, BoxStatus, ExecCommand, LiteBox, Output};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

async fn sh(b: &LiteBox, script: &str) -> Output {
    b.exec(ExecCommand::new("sh", ["-c", script])).await.expect("exec").output().await.expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One busybox box serves every case that does not need a box of its own.
#[tokio::test(flavor = "multi_thread")]
async fn busybox_box_runs_commands() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions { name: Some("shared-busybox".into()), ..BoxOptions::new("busybox:latest") }).await.unwrap();

    // echo
    let out = b.exec(ExecCommand::new("echo", ["hello", "world"])).await.unwrap().output().await.unwrap();
    assert_eq!(text(&out.stdout), "hello world\n");
    assert!(out.status.success());

    // exit codes and stderr are results, not errors
    let out = sh(&b, "echo oops >&2; exit 42").await;
    assert_eq!(out.status.code, Some(42));
    assert_eq!(text(&out.stderr), "oops\n");
    assert!(out.stdout.is_empty());

    // env and working dir come from the image config; box and exec env layer over it
    let out = sh(&b, "echo $GREETING; pwd").await;
    assert_eq!(text(&out.stdout), "hello-from-image\n/home\n");
    let cmd = ExecCommand {
        env: vec![("GREETING".into(), "from-exec".into())],
        cwd: Some("/tmp".into()),
        ..ExecCommand::new("sh", ["-c", "echo $GREETING; pwd"])
    };
    assert_eq!(text(&b.exec(cmd).await.unwrap().output().await.unwrap().stdout), "from-exec\n/tmp\n");
    // Nothing of the agent's own environment (the kernel gives init TERM=linux) leaks in.
    let env = text(&sh(&b, "env").await.stdout);
    assert!(!env.contains("TERM=linux"), "{env}");

    // A command starts as execvp starts it (the agent spawns without fork, docs/exec.md): no
    // signal ignored or blocked, a PATH search past an entry that is not executable, a file
    // without `#!` run by /bin/sh, and every command reaped.
    let grep = ExecCommand::new("grep", ["-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    let status = text(&b.exec(grep).await.unwrap().output().await.unwrap().stdout);
    assert_eq!(status, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    sh(&b, "mkdir -p /opt/a /opt/b; echo 'echo from-b' > /opt/a/tool; printf 'echo from-b $1\\n' > /opt/b/tool; chmod 644 /opt/a/tool; chmod 755 /opt/b/tool").await;
    let cmd = ExecCommand { env: vec![("PATH".into(), "/opt/a:/opt/b".into())], ..ExecCommand::new("tool", ["arg"]) };
    let out = b.exec(cmd).await.unwrap().output().await.unwrap();
    assert_eq!((text(&out.stdout).as_str(), out.status.code), ("from-b arg\n", Some(0)), "{}", text(&out.stderr));
    let err = b.exec(ExecCommand { env: vec![("PATH".into(), "/opt/a".into())], ..ExecCommand::new("tool", Vec::<String>::new()) }).await.err();
    assert!(err.as_ref().is_some_and(|e| e.to_string().contains("not executable")), "{err:?}");
    for _ in 0..5 {
        b.exec(ExecCommand::new("true", Vec::<String>::new())).await.unwrap().wait().await.unwrap();
    }
    let zombies = text(&sh(&b, "grep -l '^State:.*Z' /proc/[0-9]*/status || true").await.stdout);
    assert_eq!(zombies, "", "unreaped commands");

    // 20 MB of stdout arrives byte-exact
    let out = sh(&b, "dd if=/dev/urandom of=/tmp/big bs=1M count=20 2>/dev/null && sha256sum /tmp/big >&2 && cat /tmp/big").await;
    assert_eq!(out.stdout.len(), 20 * 1024 * 1024);
    let expected = text(&out.stderr).split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(hex::encode(Sha256::digest(&out.stdout)), expected);
    // ... and leaves the file in the box's page cache: the port copies what is spliced to it
    // (the stock kernel stole the pages; core/guest/kernel/patches/0002-*).
    let cached = || async { text(&sh(&b, "sync; grep ^Cached: /proc/meminfo").await.stdout).split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).unwrap() };
    let before = cached().await;
    assert_eq!(b.exec(ExecCommand::new("cat", ["/tmp/big"])).await.unwrap().output().await.unwrap().stdout.len(), 20 << 20);
    let after = cached().await;
    assert!(after + 4096 > before, "cat of a 20 MiB file dropped the page cache from {before} to {after} KiB");

    // stdin reaches the command; closing it ends `cat`
    let mut ex = b.exec(ExecCommand::new("cat", Vec::<String>::new())).await.unwrap();
    let stdin = ex.stdin.take().unwrap();
    stdin.write(b"piped input").await.unwrap();
    stdin.close().await.unwrap();
    let out = ex.output().await.unwrap();
    assert_eq!(text(&out.stdout), "piped input");

    // several execs at once
    let started = Instant::now();
    let runs = (0..4).map(|i| {
        let b = b.clone();
        async move { sh(&b, &format!("sleep 1; echo {i}")).await }
    });
    let outs = futures::future::join_all(runs).await;
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(text(&out.stdout), format!("{i}\n"));
    }
    assert!(started.elapsed() < Duration::from_secs(4), "execs ran one after another: {:?}", started.elapsed());

    // output nobody reads holds back only its own command (the output lane's credit is per
    // call): another exec's stdout and stderr still come, then all of the first one's
    let mut chatty = b.exec(ExecCommand::new("head", ["-c", "50000000", "/dev/zero"])).await.unwrap();
    let mut chatty_out = chatty.stdout.take().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quick = tokio::time::timeout(Duration::from_secs(20), sh(&b, "echo through; echo err >&2")).await.expect("an unread command held back another's output");
    assert_eq!((text(&quick.stdout).as_str(), text(&quick.stderr).as_str()), ("through\n", "err\n"));
    let mut read = 0;
    while let Some(chunk) = chatty_out.next().await {
        read += chunk.len();
    }
    assert_eq!(read, 50_000_000);
    assert!(chatty.wait().await.unwrap().success());

    // a timeout is enforced in the guest and reported
    let cmd = ExecCommand { timeout: Some(Duration::from_millis(300)), ..ExecCommand::new("sleep", ["30"]) };
    let status = b.exec(cmd).await.unwrap().wait().await.unwrap();
    assert!(status.timed_out && status.signal == Some(9), "{status:?}");

    // kill ends a running command with its signal
    let ex = b.exec(ExecCommand::new("sleep", ["30"])).await.unwrap();
    ex.signal(15).await.unwrap();
    assert_eq!(ex.wait().await.unwrap().signal, Some(15));

    // user from /etc/passwd of the box
    let cmd = ExecCommand { user: Some("nobody".into()), ..ExecCommand::new("id", ["-u"]) };
    assert_eq!(text(&b.exec(cmd).await.unwrap().output().await.unwrap().stdout), "65534\n");
    // all of its ids (real, effective, saved, filesystem) are that user's and group's
    let cmd = ExecCommand { user: Some("nobody".into()), ..ExecCommand::new("grep", ["-E", "^(Uid|Gid):", "/proc/self/status"]) };
    let ids = text(&b.exec(cmd).await.unwrap().output().await.unwrap().stdout);
    let gid = text(&sh(&b, "grep ^nobody: /etc/passwd | cut -d: -f4").await.stdout);
    assert_eq!(ids, format!("Uid:\t65534\t65534\t65534\t65534\nGid:\t{0}\t{0}\t{0}\t{0}\n", gid.trim()));

    // a TTY exec sees a terminal
    let cmd = ExecCommand { tty: true, ..ExecCommand::new("sh", ["-c", "test -t 0 && test -t 1 && echo tty"]) };
    assert_eq!(text(&b.exec(cmd).await.unwrap().output().await.unwrap().stdout).trim(), "tty");

    // its terminal has the size asked for, then follows resizes (sent in order with stdin)
    let cmd = ExecCommand { tty: true, tty_size: Some((30, 120)), ..ExecCommand::new("sh", ["-c", "stty size; read l; stty size"]) };
    let mut ex = b.exec(cmd).await.unwrap();
    let (stdin, mut stdout) = (ex.stdin.take().unwrap(), ex.stdout.take().unwrap());
    let mut out = Vec::new();
    while !text(&out).contains("30 120") {
        out.extend(stdout.next().await.expect("the first stty size"));
    }
    ex.resize_tty(40, 100).await.unwrap();
    stdin.write(b"\n").await.unwrap();
    out.extend(stdout.read_to_end().await);
    let out = text(&out);
    assert!(out.starts_with("30 120\r\n") && out.contains("40 100"), "{out:?}");
    assert!(ex.wait().await.unwrap().success());
    let plain = b.exec(ExecCommand::new("true", Vec::<String>::new())).await.unwrap();
    let err = plain.resize_tty(40, 100).await.err().expect("no terminal to resize");
    assert_eq!(err.code(), "INVALID_STATE", "{err}");
    plain.wait().await.unwrap();

    // a missing command is an error naming it
    let err = b.exec(ExecCommand::new("no-such-command", Vec::<String>::new())).await.err().expect("must fail");
    assert!(err.to_string().contains("no-such-command"), "{err}");

    // a file written in the box survives stop and start
    sh(&b, "echo kept > /root/persist.txt && sync").await;
    b.stop().await.unwrap();
    assert_eq!(b.info().unwrap().status, BoxStatus::Stopped);
    b.start().await.unwrap();
    assert_eq!(text(&sh(&b, "cat /root/persist.txt").await.stdout), "kept\n");

    // exec after remove: a clear error, and nothing left on disk
    rt.remove(b.id(), true).await.unwrap();
    let err = b.exec(ExecCommand::new("true", Vec::<String>::new())).await.err().expect("must fail");
    assert_eq!(err.code(), "NOT_FOUND", "{err}");
    assert!(err.to_string().contains("removed"), "{err}");
    assert!(!rt.home().join("boxes").join(b.id()).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_image_runs_python() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("python:slim")).await.unwrap();
    let out = b.exec(ExecCommand::new("python3", ["-c", "import sys; print(sum(range(10)), sys.version_info.major)"])).await.unwrap();
    let out = out.output().await.unwrap();
    assert_eq!(text(&out.stdout), "45 3\n", "stderr: {}", text(&out.stderr));
    // Under TCG a position-independent program (dash here) loads where it loaded before, so what
    // TCG translated of it is found again (engine/qemu.rs, TCG_NO_ASLR); KVM keeps ASLR.
    let first_mapping = || async { text(&sh(&b, "head -1 /proc/self/maps").await.stdout) };
    let (one, two) = (first_mapping().await, first_mapping().await);
    let tcg = std::env::var("BOXLITE_ACCEL").is_ok_and(|a| a == "tcg") || boxlite::engine::qemu::kvm_verdict().is_err();
    assert_eq!(one == two, tcg, "tcg={tcg}: {one:?} then {two:?}");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_delete_and_replace_lower_layer_files() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("whiteout:latest")).await.unwrap();
    let out = sh(&b, "ls /etc/gone.txt 2>&1; cat /etc/keep.txt /etc/replaced.txt; ls /opaque").await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("No such file"), "{stdout}");
    assert!(stdout.contains("keep\nnew\n"), "{stdout}");
    assert!(stdout.ends_with("c\n") && !stdout.contains("\na\n"), "{stdout}");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn boxes_from_one_image_do_not_see_each_others_writes() {
    let rt = common::runtime();
    let (a, b) = tokio::join!(rt.create(BoxOptions::new("busybox:latest")), rt.create(BoxOptions::new("busybox:latest")));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (wa, wb) = tokio::join!(sh(&a, "echo a > /root/mine; ls /root"), sh(&b, "echo b > /root/mine; ls /root"));
    assert_eq!((text(&wa.stdout), text(&wb.stdout)), ("mine\n".into(), "mine\n".into()));
    let (ra, rb) = tokio::join!(sh(&a, "cat /root/mine"), sh(&b, "cat /root/mine"));
    assert_eq!((text(&ra.stdout), text(&rb.stdout)), ("a\n".into(), "b\n".into()));
    // the overlay is small: creating a box copied nothing big
    let overlay = std::fs::metadata(rt.home().join("boxes").join(a.id()).join("disk.qcow2")).unwrap().len();
    assert!(overlay < 16 * 1024 * 1024, "overlay is {overlay} bytes");
    rt.remove(a.id(), true).await.unwrap();
    rt.remove(b.id(), true).await.unwrap();
}

/// A box of two vCPUs has both, and its agent (a tokio worker per vCPU there, one thread on
/// one vCPU) runs commands side by side, files calls among them.
#[tokio::test(flavor = "multi_thread")]
async fn a_two_vcpu_box_runs_commands_side_by_side() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions { cpus: 2, ..BoxOptions::new("busybox:latest") }).await.unwrap();
    assert_eq!(text(&sh(&b, "nproc").await.stdout), "2\n");
    let runs = (0..6).map(|i| {
        let b = b.clone();
        tokio::spawn(async move {
            let out = sh(&b, &format!("i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; echo {i}")).await;
            b.files().write(&format!("/root/{i}"), text(&out.stdout).as_bytes(), Default::default()).await.unwrap();
            text(&b.files().read_all(&format!("/root/{i}")).await.unwrap())
        })
    });
    let outs: Vec<String> = futures::future::join_all(runs).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(outs, (0..6).map(|i| format!("{i}\n")).collect::<Vec<_>>());
    rt.remove(b.id(), true).await.unwrap();
}
