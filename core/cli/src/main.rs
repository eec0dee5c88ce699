//! `boxlite`: run commands in micro-VMs from OCI images.

use boxlite::{BoxOptions, ExecCommand, LiteBox, RegistryConfig, Runtime, RuntimeOptions};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Exit code for BoxLite's own failures (as `docker run` does), so they differ from the command's.
const EXIT_BOXLITE_ERROR: u8 = 125;

#[derive(Parser)]
#[command(name = "boxlite", version, about = "Run commands in micro-VMs booted from OCI images")]
struct Cli {
    /// State directory (default: $BOXLITE_HOME or ~/.boxlite).
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Registry searched for unqualified image names, spoken to over https (repeatable).
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

#[derive(Subcommand)]
enum Command {
    /// Create a box from IMAGE, run a command in it (default: the image's entrypoint and cmd), stop it.
    Run {
        /// Remove the box when the command ends.
        #[arg(long)]
        rm: bool,
        /// Name the box.
        #[arg(long)]
        name: Option<String>,
        /// vCPUs.
        #[arg(long, default_value_t = boxlite::options::DEFAULT_CPUS)]
        cpus: u32,
        /// Guest memory in MiB.
        #[arg(long = "memory", default_value_t = boxlite::options::DEFAULT_MEMORY_MIB)]
        memory_mib: u32,
        /// Environment variable KEY=VALUE (repeatable).
        #[arg(short = 'e', long = "env")]
        env: Vec<String>,
        /// Working directory inside the box.
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        /// User inside the box (name, uid or uid:gid).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Kill the command after this many seconds.
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
    /// Pull an image and build its base disk.
    Pull { image: String },
    /// List pulled images.
    Images,
    /// List boxes.
    #[command(alias = "list", alias = "ps")]
    Ls,
    /// Stop boxes (their disks are kept).
    Stop { boxes: Vec<String> },
    /// Remove boxes and their disks.
    Rm {
        /// Stop running boxes first.
        #[arg(short, long)]
        force: bool,
        boxes: Vec<String>,
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
            eprintln!("boxlite: error [{}]: {e}", e.code());
            ExitCode::from(EXIT_BOXLITE_ERROR)
        }
    }
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
    let registries = cli
        .insecure_registries
        .iter()
        .map(|h| RegistryConfig { host: h.clone(), insecure: true, ..Default::default() })
        .chain(cli.registries.iter().map(|h| RegistryConfig { host: h.clone(), ..Default::default() }))
        .collect();
    let accel = cli.accel.as_deref().map(str::parse).transpose()?;
    let runtime = Runtime::new(RuntimeOptions { home: cli.home, registries, accel, assets_dir: None })?;
    match cli.command {
        Command::Run { rm, name, cpus, memory_mib, env, workdir, user, timeout, interactive, image, command } => {
            let options = BoxOptions { image, name, cpus, memory_mib, env: parse_env(&env)?, working_dir: workdir, user, ..Default::default() };
            let sandbox = runtime.create(options).await?;
            let result = run_in_box(&sandbox, command, timeout, interactive).await;
            let cleanup = if rm { runtime.remove(sandbox.id(), true).await } else { sandbox.stop().await };
            let code = result?;
            cleanup?;
            Ok(code)
        }
        Command::Pull { image } => {
            let img = runtime.pull(&image, None).await?;
            println!("{} {} ({} layers)", img.reference, img.manifest_digest, img.layer_count);
            Ok(ExitCode::SUCCESS)
        }
        Command::Images => {
            println!("{:<40} {:<20} {:>10}", "REFERENCE", "DIGEST", "SIZE");
            for img in runtime.images()? {
                let digest: String = img.manifest_digest.chars().take(19).collect();
                println!("{:<40} {:<20} {:>9}M", img.reference, digest, img.size_bytes / (1024 * 1024));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls => {
            println!("{:<14} {:<16} {:<30} {:<8}", "ID", "NAME", "IMAGE", "STATUS");
            for b in runtime.list()? {
                println!("{:<14} {:<16} {:<30} {:<8}", b.id, b.name.as_deref().unwrap_or("-"), b.image.reference, b.status);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { boxes } => {
            for b in boxes {
                runtime.get(&b)?.stop().await?;
                println!("{b}");
            }
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

/// Runs the command, streaming its output here; returns its exit code (128 + signal if killed).
async fn run_in_box(sandbox: &LiteBox, command: Vec<String>, timeout: Option<u64>, interactive: bool) -> boxlite::Result<ExitCode> {
    let argv = if command.is_empty() {
        let config = sandbox.info()?.image.config;
        [config.entrypoint, config.cmd].concat()
    } else {
        command
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(boxlite::Error::InvalidArgument("no command given and the image has no entrypoint or cmd".into()));
    };
    let cmd = ExecCommand { timeout: timeout.map(Duration::from_secs), ..ExecCommand::new(program.clone(), args.to_vec()) };
    let mut execution = sandbox.exec(cmd).await?;
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
    let status = execution.wait().await?;
    if status.timed_out {
        eprintln!("boxlite: command killed after its {}s timeout", timeout.unwrap_or_default());
    }
    Ok(ExitCode::from(status.exit_code().clamp(0, 255) as u8))
}
