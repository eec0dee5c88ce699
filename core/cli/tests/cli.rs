//! The `boxlite` command as users run it, against the local test registry.

use std::process::{Command, Output};

mod common;

use common::{boxlite, text};

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run boxlite")
}

#[test]
fn run_prints_output_and_returns_the_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let out = run(boxlite(home.path(), &["run", "--rm", "busybox:latest", "echo", "hi"]));
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    assert!(out.status.success());

    let out = run(boxlite(home.path(), &["run", "--name", "kept", "busybox:latest", "sh", "-c", "echo err >&2; exit 7"]));
    assert_eq!(out.status.code(), Some(7));
    assert!(text(&out.stderr).contains("err"));

    let ls = text(&run(boxlite(home.path(), &["ls"])).stdout);
    assert!(ls.contains("kept") && ls.contains("stopped"), "{ls}");
    let images = text(&run(boxlite(home.path(), &["images"])).stdout);
    assert!(images.contains("busybox"), "{images}");

    assert!(run(boxlite(home.path(), &["rm", "kept"])).status.success());
    let ls = text(&run(boxlite(home.path(), &["ls"])).stdout);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert_eq!(std::fs::read_dir(home.path().join("boxes")).unwrap().count(), 0);
}

#[test]
fn missing_qemu_says_what_to_install() {
    let home = tempfile::tempdir().unwrap();
    // A PATH with the disk tools but without qemu-system-x86_64.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["mke2fs", "debugfs", "qemu-img"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().map(|d| std::path::Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{tool} missing: run scripts/install-deps.sh")), bin.path().join(tool)).unwrap();
    }
    let mut cmd = boxlite(home.path(), &["run", "--rm", "busybox:latest", "true"]);
    cmd.env("PATH", bin.path());
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("qemu-system-x86_64 not found") && stderr.contains("apt-get install qemu-system-x86"), "{stderr}");
    assert_eq!(std::fs::read_dir(home.path().join("boxes")).unwrap().count(), 0, "the failed box must be removed");
}

#[test]
fn bad_memory_is_rejected_before_anything_happens() {
    let home = tempfile::tempdir().unwrap();
    let out = run(boxlite(home.path(), &["run", "--memory", "64", "busybox:latest", "true"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr.contains("INVALID_ARGUMENT") && stderr.contains("128 to 65536"), "{stderr}");
}

#[test]
fn timeout_zero_is_refused_before_anything_happens() {
    let home = tempfile::tempdir().unwrap();
    let out = run(boxlite(home.path(), &["run", "--timeout", "0", "busybox:latest", "true"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("INVALID_ARGUMENT") && stderr.contains("--timeout 0"), "{stderr}");
    assert_eq!(run(boxlite(home.path(), &["ls"])).stdout.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn commands_that_cannot_start_exit_like_a_shell_and_leave_no_box() {
    let home = tempfile::tempdir().unwrap();
    for (args, code, needle) in [
        (&["nosuch"][..], 127, "command 'nosuch' not found in the box"),
        (&["/etc/passwd"][..], 126, "command '/etc/passwd' is not executable in the box"),
        (&["-w", "/etc/passwd", "busybox:latest", "true"][..], 125, "working directory '/etc/passwd' is not a directory"),
    ] {
        let mut argv = vec!["run", "--name", "retry"];
        if args[0] != "-w" {
            argv.push("busybox:latest");
        }
        argv.extend_from_slice(args);
        let out = run(boxlite(home.path(), &argv));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{argv:?}: {stderr}");
        assert!(stderr.contains("INVALID_ARGUMENT") && stderr.contains(needle), "{argv:?}: {stderr}");
        let ls = text(&run(boxlite(home.path(), &["ls"])).stdout);
        assert_eq!(ls.lines().count(), 1, "{argv:?} left a box: {ls}");
        assert_eq!(std::fs::read_dir(home.path().join("boxes")).unwrap().count(), 0);
    }
    // The name of a box that never ran is free again.
    let out = run(boxlite(home.path(), &["run", "--rm", "--name", "retry", "busybox:latest", "true"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
