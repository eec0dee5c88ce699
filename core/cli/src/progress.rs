//! Pull progress on stderr: one bar redrawn in place when stderr is a terminal, plain lines
//! otherwise (logs, CI, pipes). Per layer: the runtime reports each layer once it is stored.

use boxlite::{BoxOptions, Image, LiteBox, PullProgress, Runtime};
use std::io::{IsTerminal, Write};

/// Width of the bar, in characters.
const BAR_WIDTH: usize = 30;

/// Pulls `reference`, showing its progress.
pub async fn pull(runtime: &Runtime, reference: &str) -> boxlite::Result<Image> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut view = View::new(std::io::stderr().is_terminal());
    let show = async {
        while let Some(event) = rx.recv().await {
            view.show(event);
        }
    };
    let (pulled, ()) = tokio::join!(runtime.pull(reference, Some(tx)), show);
    view.finish(pulled.as_ref().ok());
    pulled
}

/// Creates a box, pulling its image first (with progress) if this home does not have it yet.
pub async fn create(runtime: &Runtime, options: BoxOptions) -> boxlite::Result<LiteBox> {
    if runtime.find_image(&options.image)?.is_none() {
        pull(runtime, &options.image).await?;
    }
    runtime.create(options).await
}

/// What has been shown so far.
struct View {
    terminal: bool,
    reference: String,
    layers: usize,
    done: usize,
    bytes: u64,
    /// A bar is drawn on the current terminal line.
    drawn: bool,
}

impl View {
    fn new(terminal: bool) -> Self {
        View { terminal, reference: String::new(), layers: 0, done: 0, bytes: 0, drawn: false }
    }

    fn show(&mut self, event: PullProgress) {
        let line = match event {
            PullProgress::Resolved { reference, layers } => {
                self.reference = reference;
                self.layers = layers;
                format!("pulling {} ({layers} layer{})", self.reference, if layers == 1 { "" } else { "s" })
            }
            PullProgress::LayerDone { digest, bytes } => {
                self.done += 1;
                self.bytes += bytes;
                let short: String = digest.chars().take("sha256:".len() + 12).collect();
                format!("layer {}/{} {short} ({})", self.done, self.layers, mib(bytes))
            }
            PullProgress::DiskBuilt { .. } => "base disk ready".to_string(),
        };
        if !self.terminal {
            eprintln!("{line}");
            return;
        }
        let stage = if self.done < self.layers { "downloading" } else { "building the base disk" };
        let filled = (self.done * BAR_WIDTH).checked_div(self.layers).unwrap_or(BAR_WIDTH);
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{} [{bar}] {}/{} layers, {}: {stage}", self.reference, self.done, self.layers, mib(self.bytes));
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar's line: replaced by a summary once the pull is done, kept (with what it
    /// reached) before the error is printed when it failed.
    fn finish(&mut self, pulled: Option<&Image>) {
        if !self.terminal {
            if let Some(image) = pulled {
                eprintln!("pulled {}", image.reference);
            }
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match (pulled, self.drawn) {
            (Some(image), _) => writeln!(err, "\r\x1b[2Kpulled {} ({} layers, {})", image.reference, image.layer_count, mib(image.size_bytes)),
            (None, true) => writeln!(err),
            (None, false) => Ok(()),
        };
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
