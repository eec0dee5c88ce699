//! `boxlite`: run commands in micro-VMs from OCI images.

use boxlite::{BoxMetrics, BoxOptions, BoxRecord, BoxStatus, ExecCommand, LiteBox, PruneOptions, Removed, Runtime, RuntimeOptions};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

mod progress;

/// Exit code for BoxLite's own failures (as `docker run` does), so they differ from the command's.
const EXIT_BOXLITE_ERROR: u8 = 125;
/// Exit code when the command exists but cannot be executed (as a shell and `docker run` do).
const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit code when the command does not exist (as a shell and `docker run` do).
const EXIT_NOT_FOUND: u8 = 127;
/// Signals that make `run` wind down: the first stops the box gracefully, the second exits at once.
const INTERRUPTS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// After an interrupt is passed on to the command, how long it gets to end before the box stops.
const COMMAND_GRACE: Duration = Duration::from_secs(3);
/// How often `stats` refreshes without `--no-stream`.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(name = "boxlite", version, about = "Run commands in micro-VMs booted from OCI images")]
struct Cli {
    /// State directory (default: $BOXLITE_HOME or ~/.boxlite).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Registry searched for unqualified image names, spoken to over https (repeatable). Without
    /// registry flags: $BOXLITE_REGISTRIES / $BOXLITE_INSECURE_REGISTRIES, else the home's config.json.
    #[arg(long = "registry", global = true, value_name = "HOST[:PORT]")]
    registries: Vec<String>,
    /// Registry spoken to over plain http, also searched for unqualified names (repeatable).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// VM accelerator: auto, kvm or tcg (default: $BOXLITE_ACCEL or auto).
    #[arg(long, global = true)]
    accel: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// How commands run: the flags `run` (for the box) and `exec` (for one command) share.
#[derive(clap::Args)]
struct ProcessFlags {
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the box.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User inside the box (name, uid or uid:gid).
    #[arg(short = 'u', long)]
    user: Option<String>,
}

/// How a new box is made (the flags of `run`).
#[derive(clap::Args)]
struct CreateFlags {
    /// Name the box.
    #[arg(long)]
    name: Option<String>,
    /// vCPUs.
    #[arg(long, default_value_t = boxlite::options::DEFAULT_CPUS)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long = "memory", default_value_t = boxlite::options::DEFAULT_MEMORY_MIB)]
    memory_mib: u32,
    #[command(flatten)]
    process: ProcessFlags,
    /// `none`: no network at all (only loopback). Default: outbound to everything.
    #[arg(long, value_name = "none|default")]
    network: Option<String>,
    /// Allow outbound traffic only to this host name, *.domain, IP or CIDR (repeatable).
    #[arg(long = "allow-net", value_name = "PATTERN", conflicts_with = "deny_net")]
    allow_net: Vec<String>,
    /// Refuse outbound traffic to this host name, *.domain, IP or CIDR (repeatable).
    #[arg(long = "deny-net", value_name = "PATTERN")]
    deny_net: Vec<String>,
    /// Publish a box port on the host: [IP:]HOST_PORT:GUEST_PORT[/udp] (repeatable).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    /// Share a host directory live at a path in the box, read-only with `:ro` (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "HOST:GUEST[:ro|rw]")]
    volumes: Vec<String>,
    /// Capacity of the box's disk in GiB, 1 to 1024 (default: the image's size plus 2 GiB).
    #[arg(long = "disk-size", value_name = "GB")]
    disk_size: Option<u32>,
}

impl CreateFlags {
    fn options(self, image: String) -> boxlite::Result<BoxOptions> {
        let network = match (self.network.as_deref(), self.allow_net.is_empty(), self.deny_net.is_empty()) {
            (None | Some("default"), true, true) => boxlite::Network::Enabled,
            (None | Some("default"), false, _) => boxlite::Network::Allow(self.allow_net),
            (None | Some("default"), _, false) => boxlite::Network::Deny(self.deny_net),
            (Some("none"), true, true) => boxlite::Network::None,
            (Some("none"), _, _) => return Err(boxlite::Error::InvalidArgument("--network none cannot be combined with --allow-net or --deny-net".into())),
            (Some(other), _, _) => return Err(boxlite::Error::InvalidArgument(format!("--network {other}: use none or default"))),
        };
        Ok(BoxOptions {
            image,
            name: self.name,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            env: parse_env(&self.process.env)?,
            working_dir: self.process.workdir,
            user: self.process.user,
            network,
            ports: self.publish.iter().map(|p| boxlite::PortSpec::parse(p)).collect::<boxlite::Result<_>>()?,
            volumes: self.volumes.iter().map(|v| parse_volume(v)).collect::<boxlite::Result<_>>()?,
            disk_size_gb: self.disk_size,
            ..Default::default()
        })
    }
}

/// `HOST:GUEST[:ro|rw]`; a relative host path is taken from the current directory, as a shell
/// user expects (the library itself wants absolute paths).
fn parse_volume(spec: &str) -> boxlite::Result<boxlite::Volume> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, guest, read_only) = match parts[..] {
        [host, guest] => (host, guest, false),
        [host, guest, "ro"] => (host, guest, true),
        [host, guest, "rw"] => (host, guest, false),
        _ => {
            return Err(boxlite::Error::InvalidArgument(format!(
                "-v {spec}: use HOST:GUEST, HOST:GUEST:ro or HOST:GUEST:rw (paths cannot contain ':')"
            )))
        }
    };
    if host.is_empty() || guest.is_empty() {
        return Err(boxlite::Error::InvalidArgument(format!("-v {spec}: both the host and the guest path are needed (HOST:GUEST)")));
    }
    let host = std::path::absolute(host).map_err(|e| boxlite::Error::InvalidArgument(format!("-v {spec}: {e}")))?;
    Ok(boxlite::Volume { host_path: host, guest_path: guest.into(), read_only })
}

#[derive(Subcommand)]
enum Command {
    /// Create a box from IMAGE, run a command in it (default: the image's entrypoint and cmd), stop it.
    Run {
        /// Boot the box, print its id and leave it running (no command is run: use `exec`).
        #[arg(short = 'd', long, conflicts_with_all = ["timeout", "interactive"])]
        detach: bool,
        /// Remove the box when the command ends (with -d: once the box stops).
        #[arg(long)]
        rm: bool,
        #[command(flatten)]
        create: CreateFlags,
        /// Kill the command after this many seconds (at least 1; leave it out for no limit).
        #[arg(long)]
        timeout: Option<u64>,
        /// Forward this terminal's stdin to the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Image reference, `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`.
        image: String,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a command in a running box.
    Exec {
        /// Forward this terminal's stdin to the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Run the command on a pseudo-terminal (its stderr merges into stdout).
        #[arg(short = 't', long)]
        tty: bool,
        #[command(flatten)]
        process: ProcessFlags,
        /// Box id or name.
        #[arg(value_name = "BOX")]
        sandbox: String,
        /// Command and arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Start boxes created with `run -d` (they keep running after boxlite exits).
    Start {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Stop boxes and start them again.
    Restart {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Print a box's record as JSON, with its metrics while it runs.
    Inspect {
        #[arg(value_name = "BOX")]
        sandbox: String,
    },
    /// List a running box's published ports as GUEST/PROTO -> HOST_IP:HOST_PORT (the ports picked
    /// for host port 0 included).
    Port {
        #[arg(value_name = "BOX")]
        sandbox: String,
    },
    /// Print the guest console log of a box's current (or last) run.
    Logs {
        #[arg(value_name = "BOX")]
        sandbox: String,
    },
    /// Show CPU, memory and command counts of running boxes (default: all of them).
    Stats {
        /// Print once instead of every second.
        #[arg(long)]
        no_stream: bool,
        #[arg(value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Copy files or directories between the host and a running box: `cp SRC BOX:DEST` or
    /// `cp BOX:SRC DEST` (box by id or name, box paths absolute). As `docker cp`: into an existing
    /// directory under the source's own name, else as DEST. Modes, mtimes and symlinks are kept.
    Cp {
        /// Replace an existing destination (a directory as a whole); without it one is refused.
        #[arg(long)]
        overwrite: bool,
        #[arg(value_name = "SRC")]
        src: String,
        #[arg(value_name = "DEST")]
        dest: String,
    },
    /// Pull an image and build its base disk.
    Pull { image: String },
    /// List pulled images, or remove some (`images rm`).
    Images {
        #[command(subcommand)]
        command: Option<ImagesCommand>,
    },
    /// Remove what nothing uses: image blobs and base disks no image or box needs.
    Prune {
        /// Also remove every box that is not running (created, stopped or failed), with its disk.
        #[arg(long)]
        boxes: bool,
        /// Also remove the images no box uses.
        #[arg(short, long)]
        all: bool,
    },
    /// List boxes.
    #[command(alias = "list", alias = "ps")]
    Ls,
    /// Stop boxes gracefully (their disks are kept).
    Stop {
        /// End the VM at once, without syncing the guest's writes.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Pause running boxes: their vCPUs stop, memory and processes are kept (`resume` goes on).
    Pause {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Resume paused or suspended boxes.
    #[command(alias = "unpause")]
    Resume {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Suspend running boxes: memory saved to disk and the VM ended, using no CPU or memory
    /// (`resume` continues them, processes and all).
    Suspend {
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
    /// Take, list and remove memory snapshots of running boxes.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Start a box that continues from a snapshot (detached), with its own disk and identity;
    /// prints its id.
    Restore {
        /// The new box's name.
        #[arg(long)]
        name: Option<String>,
        #[arg(value_name = "SNAPSHOT")]
        snapshot: String,
    },
    /// Start boxes that continue from a running box as it is now (detached); prints their ids.
    Fork {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u32,
        #[arg(value_name = "BOX")]
        sandbox: String,
    },
    /// Make the template boxes of this shape start from (a guest booted once and saved idle), so
    /// that the next box starts warm; prints its directory. Boxes make it on first need anyway.
    Warmup {
        /// vCPUs of the boxes it serves.
        #[arg(long, default_value_t = boxlite::options::DEFAULT_CPUS)]
        cpus: u32,
        /// Their guest memory in MiB.
        #[arg(long = "memory", default_value_t = boxlite::options::DEFAULT_MEMORY_MIB)]
        memory_mib: u32,
        /// For boxes without a network (`run --network none`).
        #[arg(long = "network", value_parser = ["none", "default"])]
        network: Option<String>,
    },
    /// Remove boxes and their disks.
    Rm {
        /// Stop running boxes first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "BOX")]
        boxes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save a running box's memory and disk under NAME; the box goes on.
    Create {
        #[arg(value_name = "BOX")]
        sandbox: String,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// List snapshots.
    #[command(alias = "list")]
    Ls,
    /// Remove snapshots (boxes restored from them keep working).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// List pulled images (the default).
    Ls,
    /// Remove images; their blobs and base disk go once no other image or box needs them.
    #[command(alias = "remove")]
    Rm {
        /// Remove an image that boxes use: its base disk is kept until they are gone.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("boxlite: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_BOXLITE_ERROR);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::from(EXIT_BOXLITE_ERROR)
        }
    }
}

fn report(e: &boxlite::Error) {
    eprintln!("boxlite: error [{}]: {e}", e.code());
}

/// The box and path of a `cp` argument written `BOX:PATH`; `None` for a host path (one that
/// starts with `/` or `.`, or has no `:` before its first `/`), as `docker cp` tells them apart.
fn box_side(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (b, path) = arg.split_once(':')?;
    (!b.is_empty() && !b.contains('/')).then_some((b, path))
}

/// The exit code for a command that could not start: 127 not found, 126 not executable, else 125.
// The runtime reports both as INVALID_ARGUMENT with wording of its own (boxlite::guest); a typed
// reason on the error would be better, but the error enum carries only messages today.
fn start_failure_exit_code(e: &boxlite::Error) -> u8 {
    let msg = e.to_string();
    let about_command = e.code() == "INVALID_ARGUMENT" && msg.starts_with("command '");
    if about_command && msg.ends_with("' not found in the box") {
        EXIT_NOT_FOUND
    } else if about_command && msg.ends_with("' is not executable in the box") {
        EXIT_NOT_EXECUTABLE
    } else {
        EXIT_BOXLITE_ERROR
    }
}

/// Watches SIGINT, SIGTERM and SIGHUP. The first one is published on the returned channel (the
/// caller winds down gracefully); a second one exits at once with 128 + its number.
fn watch_interrupts() -> boxlite::Result<watch::Receiver<Option<libc::c_int>>> {
    let install = |sig: libc::c_int| {
        signal(SignalKind::from_raw(sig))
            .map_err(|e| boxlite::Error::Internal(format!("cannot install the handler for signal {sig}: {e}")))
    };
    let mut handlers = [install(INTERRUPTS[0])?, install(INTERRUPTS[1])?, install(INTERRUPTS[2])?];
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let _ = tx.send(Some(next_interrupt(&mut handlers).await));
        let second = next_interrupt(&mut handlers).await;
        eprintln!("boxlite: interrupted again: exiting at once, without stopping the box");
        std::process::exit(128 + second);
    });
    Ok(rx)
}

async fn next_interrupt([int, term, hup]: &mut [tokio::signal::unix::Signal; 3]) -> libc::c_int {
    tokio::select! {
        _ = int.recv() => INTERRUPTS[0],
        _ = term.recv() => INTERRUPTS[1],
        _ = hup.recv() => INTERRUPTS[2],
    }
}

/// Resolves with the first interrupt; never, if there is none.
async fn interrupted(rx: &mut watch::Receiver<Option<libc::c_int>>) -> libc::c_int {
    match rx.wait_for(Option::is_some).await {
        Ok(sig) => sig.unwrap_or_default(),
        Err(_) => std::future::pending().await,
    }
}

/// How `run`'s command ended.
enum Ended {
    /// It ran and exited with this code (128 + signal if a signal ended it).
    Exited(u8),
    /// It never ran: the box did not boot or the command could not start.
    NotStarted(boxlite::Error),
    /// It ran, but following it failed.
    Failed(boxlite::Error),
    /// boxlite got this signal.
    Interrupted(libc::c_int),
}

fn parse_env(entries: &[String]) -> boxlite::Result<Vec<(String, String)>> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            // `-e KEY` passes the host's value, as docker does.
            None => std::env::var(e)
                .map(|v| (e.clone(), v))
                .map_err(|_| boxlite::Error::InvalidArgument(format!("-e {e}: not KEY=VALUE and not set in this environment"))),
        })
        .collect()
}

async fn run(cli: Cli) -> boxlite::Result<ExitCode> {
    // None given: the runtime takes them from the environment, else the home's config.json.
    let registries = boxlite::options::registries_from_hosts(("--registry", &cli.registries), ("--insecure-registry", &cli.insecure_registries))?;
    let accel = cli.accel.as_deref().map(str::parse).transpose()?;
    let runtime = Runtime::new(RuntimeOptions { home: cli.home, registries, accel, ..Default::default() })?;
    match cli.command {
        Command::Run { detach: true, rm, create, image, command, .. } => {
            if !command.is_empty() {
                return Err(boxlite::Error::InvalidArgument(
                    "run -d boots the box and runs nothing in it: run the command with `boxlite exec BOX CMD...`".into(),
                ));
            }
            let options = BoxOptions { detach: true, auto_remove: rm, ..create.options(image)? };
            run_detached(&runtime, options).await
        }
        Command::Run { rm, create, timeout, interactive, image, command, .. } => {
            if timeout == Some(0) {
                return Err(boxlite::Error::InvalidArgument(
                    "--timeout 0: give at least 1 second, or leave --timeout out for no limit".into(),
                ));
            }
            let mut interrupts = watch_interrupts()?;
            let options = create.options(image)?;
            let sandbox = tokio::select! {
                created = progress::create(&runtime, options) => created?,
                sig = interrupted(&mut interrupts) => return Ok(ExitCode::from(128 + sig as u8)),
            };
            let cmd = ExecCommand { argv: command, timeout: timeout.map(Duration::from_secs), ..Default::default() };
            let ended = run_in_box(&sandbox, cmd, interactive, interrupts.clone()).await;
            // A box whose command never ran holds nothing of the user's: it goes, named or not.
            let cleanup = if rm || matches!(ended, Ended::NotStarted(_)) {
                runtime.remove(sandbox.id(), true).await
            } else {
                sandbox.stop().await
            };
            let code = exit_code(ended);
            cleanup?;
            // An interrupt during the cleanup is answered by the cleanup itself (a graceful stop).
            let late_interrupt = *interrupts.borrow();
            Ok(ExitCode::from(late_interrupt.map_or(code, |sig| 128 + sig as u8)))
        }
        Command::Exec { interactive, tty, process: ProcessFlags { env, workdir, user }, sandbox, command } => {
            let sandbox = runtime.get(&sandbox)?;
            let rec = sandbox.info()?;
            if matches!(rec.status, BoxStatus::Paused | BoxStatus::Suspended) {
                return Err(boxlite::Error::InvalidState(format!(
                    "box {} is {}: resume it first (boxlite resume {})",
                    display_name(&rec),
                    rec.status,
                    display_name(&rec)
                )));
            }
            // `exec` would otherwise boot a stopped box for as long as this process lives.
            if rec.status != BoxStatus::Running {
                return Err(boxlite::Error::InvalidState(format!(
                    "box {} is {}: start it first (boxlite start {})",
                    display_name(&rec),
                    rec.status,
                    display_name(&rec)
                )));
            }
            let interrupts = watch_interrupts()?;
            let tty_size = if tty { terminal_size() } else { None };
            let cmd = ExecCommand { argv: command, env: parse_env(&env)?, cwd: workdir, user, tty, tty_size, ..Default::default() };
            let _raw = if tty && interactive { RawTerminal::enable()? } else { None };
            Ok(ExitCode::from(exit_code(run_in_box(&sandbox, cmd, interactive, interrupts).await)))
        }
        Command::Cp { overwrite, src, dest } => {
            let options = boxlite::CopyOptions { overwrite };
            match (box_side(&src), box_side(&dest)) {
                (None, Some((b, guest))) => runtime.get(b)?.copy_in(&src, guest, options).await?,
                (Some((b, guest)), None) => runtime.get(b)?.copy_out(guest, &dest, options).await?,
                _ => {
                    return Err(boxlite::Error::InvalidArgument(format!(
                        "cp {src} {dest}: exactly one side must be BOX:PATH (the other a host path; write a host path with ':' as ./{src})"
                    )))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { boxes } => {
            for b in boxes {
                let sandbox = detached_box(&runtime, &b)?;
                sandbox.start().await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { boxes } => {
            for b in boxes {
                let sandbox = detached_box(&runtime, &b)?;
                sandbox.stop().await?;
                sandbox.start().await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { sandbox } => {
            let sandbox = runtime.get(&sandbox)?;
            let rec = sandbox.info()?;
            let mut json = to_json(&rec)?;
            if rec.status.is_up() {
                json["metrics"] = to_json(&sandbox.metrics().await?)?;
            }
            println!("{}", serde_json::to_string_pretty(&json).map_err(|e| boxlite::Error::Internal(e.to_string()))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Port { sandbox } => {
            let rec = runtime.get(&sandbox)?.info()?;
            // Ports are bound only while the box runs (as `docker port`: nothing otherwise).
            if rec.status.is_up() {
                for p in &rec.ports {
                    println!("{}/{} -> {}:{}", p.guest_port, p.protocol, p.host_ip, p.host_port);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { sandbox } => {
            let rec = runtime.get(&sandbox)?.info()?;
            let path = boxlite::engine::console_log_path(&runtime.home().join("boxes").join(&rec.id));
            match std::fs::read(&path) {
                Ok(log) => {
                    let _ = std::io::stdout().lock().write_all(&log);
                }
                // A box that never booted has no console log yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(boxlite::Error::storage("read", path, e)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { no_stream, boxes } => loop {
            print_stats(&runtime, &boxes).await?;
            if no_stream {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(STATS_INTERVAL).await;
            println!();
        },
        Command::Pull { image } => {
            let img = progress::pull(&runtime, &image).await?;
            println!("{} {} ({} layers)", img.reference, img.manifest_digest, img.layer_count);
            Ok(ExitCode::SUCCESS)
        }
        Command::Images { command: Some(ImagesCommand::Rm { force, images }) } => {
            let mut total = Removed::default();
            for image in images {
                let removed = runtime.remove_image(&image, force).await?;
                print_removed(&removed);
                total.bytes_freed += removed.bytes_freed;
            }
            println!("Total reclaimed space: {}", human_bytes(total.bytes_freed));
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { boxes, all } => {
            let removed = runtime.prune(PruneOptions { boxes, all_images: all }).await?;
            print_removed(&removed);
            println!("Total reclaimed space: {}", human_bytes(removed.bytes_freed));
            Ok(ExitCode::SUCCESS)
        }
        Command::Images { command: None | Some(ImagesCommand::Ls) } => {
            println!("{:<40} {:<20} {:>10}", "REFERENCE", "DIGEST", "SIZE");
            for img in runtime.images()? {
                let digest: String = img.manifest_digest.chars().take(19).collect();
                println!("{:<40} {:<20} {:>9}M", img.reference, digest, img.size_bytes / (1024 * 1024));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls => {
            println!("{:<14} {:<16} {:<30} {:<8} REASON", "ID", "NAME", "IMAGE", "STATUS");
            for b in runtime.list()? {
                // A reason says why a box failed or how it last stopped; an active box has none.
                let reason = b.reason.as_deref().filter(|_| !b.status.is_active()).unwrap_or("");
                let line = format!("{:<14} {:<16} {:<30} {:<8} {reason}", b.id, b.name.as_deref().unwrap_or("-"), b.image.reference, b.status);
                println!("{}", line.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { force, boxes } => {
            for b in boxes {
                let sandbox = runtime.get(&b)?;
                if force {
                    sandbox.kill().await?;
                } else {
                    sandbox.stop().await?;
                }
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { boxes } => {
            for b in boxes {
                runtime.get(&b)?.pause().await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { boxes } => {
            for b in boxes {
                runtime.get(&b)?.resume().await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Suspend { boxes } => {
            for b in boxes {
                runtime.get(&b)?.suspend().await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { command: SnapshotCommand::Create { sandbox, name } } => {
            let info = runtime.get(&sandbox)?.snapshot(&name).await?;
            println!("{}", info.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { command: SnapshotCommand::Ls } => {
            println!("{:<24} {:<16} {:<30} {:>8} {:>8}", "NAME", "BOX", "IMAGE", "MEMORY", "DISK");
            for s in runtime.snapshots()? {
                let source = s.box_name.clone().unwrap_or_else(|| s.box_id.clone());
                println!("{:<24} {:<16} {:<30} {:>8} {:>8}", s.name, source, s.image, human_bytes(s.memory_bytes), human_bytes(s.disk_bytes));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { command: SnapshotCommand::Rm { names } } => {
            for n in names {
                runtime.remove_snapshot(&n).await?;
                println!("{n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        // A box started from the CLI must outlive it: detached, as with `run -d`.
        Command::Restore { name, snapshot } => {
            let b = runtime.restore(&snapshot, boxlite::RestoreOptions { name, detach: true, ..Default::default() }).await?;
            println!("{}", b.id());
            Ok(ExitCode::SUCCESS)
        }
        Command::Fork { count, sandbox } => {
            let source = runtime.get(&sandbox)?;
            if !source.info()?.options.detach {
                return Err(boxlite::Error::InvalidState(format!(
                    "box {sandbox} is not detached: its forks would end with this command; fork it from the program that owns it"
                )));
            }
            for f in source.fork(count).await? {
                println!("{}", f.id());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Warmup { cpus, memory_mib, network } => {
            let t = runtime.warmup(boxlite::WarmupOptions { cpus, memory_mib, network: network.as_deref() != Some("none") }).await?;
            let what = if t.built { format!("built in {} ms", t.build_ms) } else { "already there".into() };
            eprintln!("template for {cpus} vCPU, {memory_mib} MiB{}: {what}, {} MiB on disk", if t.shape.network { ", network" } else { "" }, t.disk_bytes >> 20);
            println!("{}", t.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rm { force, boxes } => {
            for b in boxes {
                runtime.remove(&b, force).await?;
                println!("{b}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a removal or prune took away, one line each, as `docker image rm` and `docker system prune` print it.
fn print_removed(removed: &Removed) {
    let mut out = std::io::stdout().lock();
    let lines = (removed.boxes.iter().map(|b| format!("Deleted box: {b}")))
        .chain(removed.images.iter().map(|i| format!("Untagged: {i}")))
        .chain(removed.blobs.iter().map(|b| format!("Deleted blob: {b}")))
        .chain(removed.base_disks.iter().map(|d| format!("Deleted base disk: {d}")));
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}

/// Bytes as docker prints them (`12.3MB`), in binary units.
fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", units[unit]) }
}

/// `run -d`: creates the box, boots it and prints its id; it runs on after boxlite exits.
/// An interrupt while it boots lets the boot finish, then removes the box.
async fn run_detached(runtime: &Runtime, options: BoxOptions) -> boxlite::Result<ExitCode> {
    let mut interrupts = watch_interrupts()?;
    let sandbox = tokio::select! {
        created = progress::create(runtime, options) => created?,
        sig = interrupted(&mut interrupts) => return Ok(ExitCode::from(128 + sig as u8)),
    };
    if let Err(e) = sandbox.start().await {
        // As with `run`: a box that never booted holds nothing of the user's.
        let _ = runtime.remove(sandbox.id(), true).await;
        return Err(e);
    }
    if let Some(sig) = *interrupts.borrow() {
        runtime.remove(sandbox.id(), true).await?;
        return Ok(ExitCode::from(128 + sig as u8));
    }
    println!("{}", sandbox.id());
    Ok(ExitCode::SUCCESS)
}

/// A box that `start` can leave running: one created detached. Any other stops when the process
/// that starts it ends, which for the CLI is at once.
fn detached_box(runtime: &Runtime, id_or_name: &str) -> boxlite::Result<LiteBox> {
    let sandbox = runtime.get(id_or_name)?;
    let rec = sandbox.info()?;
    if !rec.options.detach {
        return Err(boxlite::Error::InvalidState(format!(
            "box {} was not created with `run -d`: it runs only as long as the process that starts it, \
             so boxlite cannot leave it running; run commands in it with `boxlite run`, or create it with `run -d`",
            display_name(&rec)
        )));
    }
    Ok(sandbox)
}

fn display_name(rec: &BoxRecord) -> &str {
    rec.name.as_deref().unwrap_or(&rec.id)
}

fn to_json<T: serde::Serialize>(value: &T) -> boxlite::Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| boxlite::Error::Internal(e.to_string()))
}

/// One `stats` table: the given boxes (or every running one), `-` for a box that is not running.
async fn print_stats(runtime: &Runtime, boxes: &[String]) -> boxlite::Result<()> {
    let records = if boxes.is_empty() {
        runtime.list()?.into_iter().filter(|b| b.status.is_up()).collect()
    } else {
        boxes.iter().map(|b| runtime.get(b)?.info()).collect::<boxlite::Result<Vec<_>>>()?
    };
    let mut lines = vec![format!("{:<14} {:<16} {:>7} {:>10} {:>21} {:>9}", "ID", "NAME", "CPU%", "MEM", "NET I/O", "COMMANDS")];
    for rec in records {
        let name = rec.name.as_deref().unwrap_or("-");
        let metrics = match rec.status {
            BoxStatus::Running | BoxStatus::Paused => Some(runtime.get(&rec.id)?.metrics().await?),
            _ => None,
        };
        lines.push(match metrics {
            Some(BoxMetrics { cpu_percent, memory_bytes, commands_executed, network_bytes_received, network_bytes_sent, .. }) => format!(
                "{:<14} {:<16} {:>6.1}% {:>10} {:>21} {:>9}",
                rec.id,
                name,
                cpu_percent,
                format!("{:.1}MiB", memory_bytes as f64 / (1024.0 * 1024.0)),
                format!("{} / {}", human_bytes(network_bytes_received), human_bytes(network_bytes_sent)),
                commands_executed
            ),
            None => format!("{:<14} {:<16} {:>7} {:>10} {:>21} {:>9}", rec.id, name, "-", "-", "-", "-"),
        });
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", lines.join("\n")).and_then(|_| out.flush());
    Ok(())
}

/// The exit code for how a command ended, reporting boxlite's own failures.
fn exit_code(ended: Ended) -> u8 {
    match ended {
        Ended::Exited(code) => code,
        Ended::NotStarted(e) => {
            report(&e);
            start_failure_exit_code(&e)
        }
        Ended::Failed(e) => {
            report(&e);
            EXIT_BOXLITE_ERROR
        }
        Ended::Interrupted(sig) => 128 + sig as u8,
    }
}

/// This terminal in raw mode while the guest's pseudo-terminal does the line editing, echo and
/// Ctrl-C; restored on drop. `None` when stdin is not a terminal.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enable() -> boxlite::Result<Option<RawTerminal>> {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Ok(None);
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a descriptor that is a terminal.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above; stdin is open for the life of the process.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(boxlite::Error::Internal(format!("tcgetattr: {}", std::io::Error::last_os_error())));
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: sets attributes read from the same terminal above.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(boxlite::Error::Internal(format!("tcsetattr: {}", std::io::Error::last_os_error())));
        }
        Ok(Some(RawTerminal { saved }))
    }
}

/// This terminal's (rows, columns), when stdin is one.
fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: winsize is plain data that TIOCGWINSZ fills for a terminal descriptor.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the ioctl fails harmlessly on a non-terminal.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row as u32, size.ws_col as u32))
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes this terminal had before `enable`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

/// Runs the command (default: the image's entrypoint and cmd), streaming its output here. On an interrupt the command gets the signal and
/// [`COMMAND_GRACE`] to end; the caller then stops the box.
async fn run_in_box(
    sandbox: &LiteBox,
    mut cmd: ExecCommand,
    interactive: bool,
    mut interrupts: watch::Receiver<Option<libc::c_int>>,
) -> Ended {
    if cmd.argv.is_empty() {
        match sandbox.info() {
            Ok(rec) => cmd.argv = [rec.image.config.entrypoint, rec.image.config.cmd].concat(),
            Err(e) => return Ended::NotStarted(e),
        }
    }
    if cmd.argv.is_empty() {
        return Ended::NotStarted(boxlite::Error::InvalidArgument("no command given and the image has no entrypoint or cmd".into()));
    }
    let (timeout, tty) = (cmd.timeout, cmd.tty);
    let started = tokio::select! {
        started = sandbox.exec(cmd) => started,
        sig = interrupted(&mut interrupts) => return Ended::Interrupted(sig),
    };
    let mut execution = match started {
        Ok(execution) => execution,
        Err(e) => return Ended::NotStarted(e),
    };
    let control = execution.control();
    if tty {
        // The guest's terminal follows this one's size.
        let resizer = control.clone();
        if let Ok(mut winch) = signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((rows, cols)) = terminal_size() {
                        if resizer.resize_tty(rows, cols).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    }
    let mut stdout = execution.stdout.take().expect("fresh execution has stdout");
    let mut stderr = execution.stderr.take().expect("fresh execution has stderr");
    if let Some(stdin) = execution.stdin.take() {
        if interactive {
            tokio::spawn(async move {
                let mut input = tokio::io::stdin();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = input.read(&mut buf).await {
                    if n == 0 || stdin.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = stdin.close().await;
            });
        } else {
            let _ = stdin.close().await;
        }
    }
    let finished = async {
        let copy_out = async {
            while let Some(chunk) = stdout.next().await {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&chunk).and_then(|_| out.flush());
            }
        };
        let copy_err = async {
            while let Some(chunk) = stderr.next().await {
                let _ = std::io::stderr().write_all(&chunk);
            }
        };
        tokio::join!(copy_out, copy_err);
        execution.wait().await
    };
    tokio::pin!(finished);
    // Interrupt first: a terminal's Ctrl-C also reaches the VM process, whose exit then fails the
    // command's stream at about the same time.
    let status = tokio::select! {
        biased;
        sig = interrupted(&mut interrupts) => {
            let _ = control.signal(sig).await;
            let _ = tokio::time::timeout(COMMAND_GRACE, &mut finished).await;
            return Ended::Interrupted(sig);
        }
        status = &mut finished => status,
    };
    match status {
        Ok(status) => {
            if status.timed_out {
                eprintln!("boxlite: command killed after its {}s timeout", timeout.unwrap_or_default().as_secs());
            }
            Ended::Exited(status.exit_code().clamp(0, 255) as u8)
        }
        Err(e) => Ended::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_parse() {
        let v = parse_volume("/h:/g:ro").unwrap();
        assert_eq!((v.host_path.to_str(), v.guest_path.as_str(), v.read_only), (Some("/h"), "/g", true));
        assert!(!parse_volume("/h:/g").unwrap().read_only && !parse_volume("/h:/g:rw").unwrap().read_only);
        assert!(parse_volume("data:/g").unwrap().host_path.is_absolute());
        for bad in ["/h", "/h:/g:rx", "/a:b:/g:ro", ":/g", "/h:"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_failures_map_to_shell_exit_codes() {
        let invalid = |m: &str| boxlite::Error::InvalidArgument(m.into());
        assert_eq!(start_failure_exit_code(&invalid("command 'nosuch' not found in the box")), 127);
        assert_eq!(start_failure_exit_code(&invalid("command '/etc' is not executable in the box")), 126);
        assert_eq!(start_failure_exit_code(&invalid("user 'x' not found in the box's /etc/passwd")), 125);
        assert_eq!(box_side("web:/tmp/x"), Some(("web", "/tmp/x")));
        assert_eq!(box_side("web:rel"), Some(("web", "rel")));
        for host in ["/tmp/a:b", "./web:/x", "dir/a:b", "plain", ":/x"] {
            assert_eq!(box_side(host), None, "{host}");
        }
        assert_eq!(start_failure_exit_code(&invalid("working directory '/f' is not a directory in the box")), 125);
        assert_eq!(start_failure_exit_code(&boxlite::Error::GuestBoot("command 'x' not found in the box".into())), 125);
    }
}
