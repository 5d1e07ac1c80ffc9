//! `smtpd --config FILE`: the SMTP server as a service of its own.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// ESMTP server with AUTH and durable local delivery.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The shared configuration file (section `[smtpd]` and `[global]`).
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
            eprintln!("smtpd: {e}");
            return ExitCode::from(2);
        }
    };
    match smtpd::serve_until_signalled(cfg, args.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd: {e}");
            ExitCode::FAILURE
        }
    }
}
