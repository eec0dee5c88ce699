//! `boxlite pull` progress, registries from the environment and config.json, `images rm` and
//! `prune`, against the local test registry.

use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{boxlite, registry, text};

/// `boxlite --home HOME ARGS...` with no registry flag and no registry variables but `vars`.
fn bare(home: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boxlite"));
    cmd.arg("--home").arg(home).args(args);
    for var in ["BOXLITE_REGISTRIES", "BOXLITE_INSECURE_REGISTRIES"] {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied()).output().expect("run boxlite")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), text(&out.stdout), text(&out.stderr));
    out
}

fn fresh() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bxc").tempdir_in("/tmp").unwrap()
}

#[test]
fn pull_and_a_first_run_print_plain_progress_lines_when_stderr_is_no_terminal() {
    let home = fresh();
    let reg = registry();
    let out = ok(boxlite(home.path(), &["pull", "busybox:latest"]).output().unwrap());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert_eq!(lines[0], format!("pulling {reg}/busybox:latest (1 layer)"));
    assert!(lines[1].starts_with("layer 1/1 sha256:") && lines[1].ends_with(" MiB)"), "{stderr}");
    assert_eq!(lines[2..], ["base disk ready".to_string(), format!("pulled {reg}/busybox:latest")]);
    assert!(!stderr.contains('\r') && !stderr.contains('\x1b'), "no terminal codes off a terminal: {stderr:?}");
    assert!(text(&out.stdout).starts_with(&format!("{reg}/busybox:latest sha256:")), "{}", text(&out.stdout));

    // A run that has to pull shows the same; one that does not, nothing of it.
    let home = fresh();
    let out = ok(boxlite(home.path(), &["run", "--rm", "busybox:latest", "echo", "hi"]).output().unwrap());
    assert_eq!(text(&out.stdout), "hi\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pulling ") && stderr.contains("pulled "), "{stderr}");
    let out = ok(boxlite(home.path(), &["run", "--rm", "busybox:latest", "echo", "again"]).output().unwrap());
    assert!(!text(&out.stderr).contains("pull"), "{}", text(&out.stderr));
}

#[test]
fn registries_come_from_the_environment_or_config_json_and_flags_win() {
    let reg = registry();
    let pulled = |out: &Output| text(&out.stdout).starts_with(&format!("{reg}/busybox:latest "));

    let out = ok(bare(fresh().path(), &["pull", "busybox:latest"], &[("BOXLITE_INSECURE_REGISTRIES", &reg)]));
    assert!(pulled(&out), "{}", text(&out.stdout));

    let home = fresh();
    std::fs::write(home.path().join("config.json"), format!(r#"{{"insecure_registries": ["{reg}"]}}"#)).unwrap();
    assert!(pulled(&ok(bare(home.path(), &["pull", "busybox:latest"], &[]))));

    // Flags win over both: the unreachable registry in the environment is never asked.
    let out = ok(bare(fresh().path(), &["--insecure-registry", &reg, "pull", "busybox:latest"], &[("BOXLITE_INSECURE_REGISTRIES", "127.0.0.1:1")]));
    assert!(pulled(&out));

    for (args, vars, needle) in [
        (&["pull", "busybox:latest"][..], &[("BOXLITE_REGISTRIES", "ghcr.io,http://x")][..], "BOXLITE_REGISTRIES: registry 'http://x' is invalid"),
        (&["--registry", "a b", "pull", "busybox:latest"][..], &[][..], "--registry: registry 'a b' is invalid"),
    ] {
        let out = bare(fresh().path(), args, vars);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(stderr.contains("INVALID_ARGUMENT") && stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn images_rm_and_prune_free_what_no_box_needs() {
    let home = fresh();
    let reg = registry();
    let run = |args: &[&str]| boxlite(home.path(), args).output().unwrap();
    ok(run(&["run", "--name", "keep", "busybox:latest", "true"]));

    let out = run(&["images", "rm", "busybox:latest"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("INVALID_STATE") && stderr.contains("keep"), "{stderr}");

    let stdout = text(&ok(run(&["images", "rm", "-f", "busybox:latest"])).stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("Untagged: {reg}/busybox:latest"), "{stdout}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("Deleted blob: sha256:")).count(), 3, "{stdout}");
    assert!(!stdout.contains("base disk") && lines.last().unwrap().starts_with("Total reclaimed space: "), "{stdout}");
    assert_eq!(text(&ok(run(&["images"])).stdout).lines().count(), 1, "only the header is left");
    assert_eq!(text(&ok(run(&["prune"])).stdout), "Total reclaimed space: 0B\n", "the box still needs its base disk");

    let stdout = text(&ok(run(&["prune", "--boxes"])).stdout);
    assert!(stdout.contains("Deleted box: ") && stdout.contains("Deleted base disk: sha256:"), "{stdout}");
    assert_eq!(text(&ok(run(&["ls"])).stdout).lines().count(), 1, "no box is left");
    assert_eq!(std::fs::read_dir(home.path().join("images/disks")).unwrap().count(), 0);
}
