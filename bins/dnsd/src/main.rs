//! `dnsd` command line: serve zones, or check a zone file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Authoritative DNS server for the mail system.
#[derive(Parser, Debug)]
#[command(name = "dnsd", version, about)]
struct Args {
    /// Shared configuration file (its `[dnsd]` section is used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to answer on, UDP and TCP (repeatable; replaces the
    /// configuration's `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<std::net::SocketAddr>,
    /// Zone to serve (repeatable; added to the configuration's zones).
    #[arg(long, value_name = "ORIGIN=FILE")]
    zone: Vec<String>,
    /// Worker sockets per address (0: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Log one line per query.
    #[arg(long)]
    query_log: bool,
    /// Check a zone file, print every error and exit (non-zero on errors).
    /// ORIGIN defaults to the file name without a `.zone` suffix.
    #[arg(long, num_args = 1..=2, value_names = ["FILE", "ORIGIN"])]
    check: Option<Vec<String>>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(check) = &args.check {
        return check_zone(check);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match &args.config {
        Some(p) => match dnsd::DnsdConfig::from_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("dnsd: {e}");
                return ExitCode::from(2);
            }
        },
        None => dnsd::DnsdConfig::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    for z in &args.zone {
        let Some((origin, file)) = z.split_once('=') else {
            eprintln!("dnsd: --zone wants ORIGIN=FILE, got {z:?}");
            return ExitCode::from(2);
        };
        config.zones.push(dnsd::ZoneConfig {
            origin: origin.to_string(),
            file: file.into(),
        });
    }
    if let Some(w) = args.workers {
        config.workers = w;
    }
    config.query_log |= args.query_log;
    if config.zones.is_empty() {
        eprintln!("dnsd: no zones (use --zone ORIGIN=FILE or a [dnsd] zones entry)");
        return ExitCode::from(2);
    }
    let threads = if config.workers > 0 {
        config.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dnsd: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let server = dnsd::Server::bind(config).await?;
        server
            .serve(async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return std::future::pending().await,
                    };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `named-checkzone`-style check: every error and warning, then a summary.
fn check_zone(args: &[String]) -> ExitCode {
    let Some(file) = args.first() else {
        return ExitCode::from(2);
    };
    let origin = match args.get(1) {
        Some(o) => o.clone(),
        None => {
            let base = std::path::Path::new(file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            base.strip_suffix(".zone").unwrap_or(&base).to_string()
        }
    };
    match dnsd::load_zone(&origin, &dnsd::ZoneSource::File(file.into())) {
        Ok((zone, warnings)) => {
            for w in &warnings {
                println!("warning: {w}");
            }
            println!(
                "zone {}/IN: loaded serial {} ({} records)",
                zone.origin(),
                zone.serial().unwrap_or(0),
                zone.record_count()
            );
            println!("OK");
            // The process ends now: skip freeing a possibly huge zone.
            std::mem::forget(zone);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            println!("zone {origin}/IN: {} error(s); not loaded", errors.len());
            ExitCode::FAILURE
        }
    }
}
