//! `weir capture`: asks the daemon for a port's frames and writes the
//! stream it gets back as pcapng, to a file (as the calling user) or to
//! stdout. Ctrl-C ends the capture cleanly: the file is complete and the
//! counts are printed.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;

use weir_api::pcapng::CaptureWriter;
use weir_api::{CaptureChunk, Client, Request};

use crate::cli::{CaptureArgs, Cli};

/// Runs `weir capture`.
pub fn run(cli: &Cli, args: &CaptureArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the Ctrl-C handler")?;
    }
    let out: Box<dyn Write> = if args.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&args.write)
            .with_context(|| format!("creating {}", args.write.display()))?;
        Box::new(file)
    };
    let mut writer = CaptureWriter::new(BufWriter::new(out))
        .with_context(|| format!("writing {}", args.write.display()))?;
    let socket = cli.client_socket(args.conn.socket.clone());
    let mut client = Client::connect(&socket)?;
    let mut reply = client.call(&Request::Capture(spec))?;
    let mut last: CaptureChunk;
    let mut first = true;
    let ended = loop {
        let chunk: CaptureChunk = reply.decode().map_err(anyhow::Error::msg)?;
        if first {
            // The daemon answers once the capture is on the port's taps.
            eprintln!("capturing on {} ({})", args.port, what(&args.spec()?));
            first = false;
        }
        writer
            .write_chunk(&chunk)
            .with_context(|| format!("writing {}", args.write.display()))?;
        let done = chunk.done.clone();
        last = CaptureChunk {
            frames: Vec::new(),
            ..chunk
        };
        if let Some(why) = done {
            break why;
        }
        // Relaxed: a flag from the signal handler; checked at every chunk,
        // which comes at least every heartbeat.
        if stop.load(Ordering::Relaxed) {
            // Closing the connection ends the capture on the daemon.
            break "interrupted".to_owned();
        }
        reply = client.next_response()?;
    };
    drop(client);
    let mut out = writer.into_inner();
    out.flush()
        .with_context(|| format!("writing {}", args.write.display()))?;
    drop(out);
    eprintln!(
        "{} frames captured, {} lost ({ended})",
        last.captured, last.lost
    );
    Ok(())
}

/// What a capture takes, as the start line says it.
fn what(spec: &weir_api::CaptureSpec) -> String {
    let mut parts = Vec::new();
    for (on, name) in [(spec.rx, "rx"), (spec.tx, "tx"), (spec.drops, "drops")] {
        if on {
            parts.push(name);
        }
    }
    parts.join(", ")
}
