//! `pop3d --config FILE`: the POP3 server as a service of its own.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// POP3 server over the Maildir store.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The shared configuration file (sections `[pop3d]` and `[global]`).
    /// Without it, the built-in lab configuration is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log every protocol line (`C:`/`S:`), as `transcript = true` does.
    #[arg(long)]
    transcript: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    netkit::init_tracing("info");
    let cfg = match mail_config::Config::load_or_builtin(args.config.as_deref()) {
        Ok(mut c) => {
            c.global.transcript |= args.transcript;
            c
        }
        Err(e) => {
            eprintln!("pop3d: {e}");
            return ExitCode::from(2);
        }
    };
    match pop3d::serve_until_signalled(cfg, args.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop3d: {e}");
            ExitCode::FAILURE
        }
    }
}
