//! `boxlite cp` between the host and a detached box, both ways, with its errors.

mod common;

use common::{boxlite, text};
use std::path::Path;
use std::process::Output;

fn expect(home: &Path, args: &[&str], code: i32) -> Output {
    let out = boxlite(home, args).output().expect("run boxlite");
    assert_eq!(out.status.code(), Some(code), "boxlite {args:?}: stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    out
}

#[test]
fn cp_copies_files_and_trees_both_ways() {
    let home = common::Home::new();
    let home = home.path();
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("in");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/hello.txt"), b"hello from the host\n").unwrap();
    std::os::unix::fs::symlink("sub/hello.txt", src.join("link")).unwrap();
    let src = src.to_str().unwrap();

    expect(home, &["run", "-d", "--name", "cpbox", "busybox:latest"], 0);
    expect(home, &["cp", src, "cpbox:/tmp"], 0);
    let out = expect(home, &["exec", "cpbox", "cat", "/tmp/in/link"], 0);
    assert_eq!(text(&out.stdout), "hello from the host\n");

    // An existing destination needs --overwrite.
    let out = expect(home, &["cp", src, "cpbox:/tmp"], 125);
    assert!(text(&out.stderr).contains("[ALREADY_EXISTS]") && text(&out.stderr).contains("/tmp/in"), "{}", text(&out.stderr));
    expect(home, &["cp", "--overwrite", src, "cpbox:/tmp"], 0);

    expect(home, &["exec", "cpbox", "sh", "-c", "echo made in the box > /tmp/in/sub/out.txt"], 0);
    let dest = host.path().join("back");
    expect(home, &["cp", "cpbox:/tmp/in", dest.to_str().unwrap()], 0);
    assert_eq!(std::fs::read(dest.join("sub/out.txt")).unwrap(), b"made in the box\n");
    assert_eq!(std::fs::read_link(dest.join("link")).unwrap(), Path::new("sub/hello.txt"));

    // Errors: no box side, a relative box path, a missing box path, a stopped box.
    let out = expect(home, &["cp", src, dest.to_str().unwrap()], 125);
    assert!(text(&out.stderr).contains("BOX:PATH"), "{}", text(&out.stderr));
    let out = expect(home, &["cp", src, "cpbox:tmp"], 125);
    assert!(text(&out.stderr).contains("[INVALID_ARGUMENT]"), "{}", text(&out.stderr));
    let out = expect(home, &["cp", "cpbox:/nope", host.path().to_str().unwrap()], 125);
    assert!(text(&out.stderr).contains("[NOT_FOUND]") && text(&out.stderr).contains("/nope"), "{}", text(&out.stderr));
    let out = expect(home, &["cp", "nobox:/tmp", host.path().to_str().unwrap()], 125);
    assert!(text(&out.stderr).contains("[NOT_FOUND]") && text(&out.stderr).contains("nobox"), "{}", text(&out.stderr));
    expect(home, &["stop", "cpbox"], 0);
    let out = expect(home, &["cp", src, "cpbox:/tmp"], 125);
    assert!(text(&out.stderr).contains("[INVALID_STATE]") && text(&out.stderr).contains("start it"), "{}", text(&out.stderr));
    expect(home, &["rm", "cpbox"], 0);
}
