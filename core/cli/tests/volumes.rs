//! Volumes and disk size through the CLI: `run -v HOST:GUEST[:ro]` (a relative host path taken from
//! the current directory), `--disk-size`, both shown by `inspect` of a `run -d` box, and bad
//! specs refused before any box exists.

use std::path::Path;
use std::process::Output;

mod common;

use common::{boxlite, text};

fn expect(home: &Path, args: &[&str], code: i32) -> Output {
    let out = boxlite(home, args).output().expect("run boxlite");
    assert_eq!(out.status.code(), Some(code), "boxlite {args:?}: stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    out
}

#[test]
fn volumes_and_disk_size_through_the_cli() {
    let home = common::Home::new();
    let home = home.path();
    let shared = tempfile::tempdir().unwrap();
    let (rw, ro) = (shared.path().join("rw"), shared.path().join("ro"));
    std::fs::create_dir(&rw).unwrap();
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("given.txt"), "given").unwrap();

    // One box, run to completion: the ro volume is read, written to in vain; the rw one gets a file.
    let rw_spec = format!("{}:/mnt/rw", rw.display());
    let ro_spec = format!("{}:/mnt/ro:ro", ro.display());
    let script = "cat /mnt/ro/given.txt; echo; echo out > /mnt/rw/out.txt; echo x > /mnt/ro/x 2>/dev/null || echo refused; df -k / | tail -1";
    let out = expect(home, &["run", "--rm", "-v", &rw_spec, "-v", &ro_spec, "--disk-size", "4", "busybox:latest", "sh", "-c", script], 0);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("given\nrefused\n"), "{stdout}");
    let total_kib: u64 = stdout.lines().last().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!((3_700_000..=4_200_000).contains(&total_kib), "df: {stdout}");
    assert_eq!(std::fs::read_to_string(rw.join("out.txt")).unwrap(), "out\n");
    assert!(!ro.join("x").exists());

    // `run -d` keeps them; `inspect` shows the canonical host path, the mode and the size. A
    // relative host path is taken from the current directory.
    let out = boxlite(home, &["run", "-d", "--name", "vols", "-v", "rw:/data", "--disk-size", "5", "busybox:latest"])
        .current_dir(shared.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&expect(home, &["inspect", "vols"], 0).stdout).unwrap();
    let canonical = std::fs::canonicalize(&rw).unwrap();
    assert_eq!(info["options"]["volumes"][0]["host_path"], canonical.to_str().unwrap(), "{info}");
    assert_eq!(info["options"]["volumes"][0]["guest_path"], "/data");
    assert_eq!(info["options"]["volumes"][0]["read_only"], false);
    assert_eq!(info["options"]["disk_size_gb"], 5);
    assert_eq!(text(&expect(home, &["exec", "vols", "cat", "/data/out.txt"], 0).stdout), "out\n");
    expect(home, &["rm", "-f", "vols"], 0);

    // Bad specs: refused with the value named, no box made.
    let missing = format!("{}:/mnt", shared.path().join("missing").display());
    for (args, says) in [
        (vec!["-v", missing.as_str()], "does not exist"),
        (vec!["-v", "/tmp"], "use HOST:GUEST"),
        (vec!["-v", "/tmp:/mnt:rx"], "use HOST:GUEST"),
        (vec!["-v", "/tmp:mnt"], "guest path 'mnt' must be absolute"),
        (vec!["--disk-size", "0"], "disk_size_gb 0 is out of range"),
        (vec!["--disk-size", "1"], "is smaller than the disk of image"),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend(&args);
        full.extend(["busybox:latest", "true"]);
        let out = expect(home, &full, 125);
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(text(&expect(home, &["ls"], 0).stdout).lines().count(), 1, "a refused run left a box");
}
