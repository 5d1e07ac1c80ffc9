//! `maillab`: DNS, SMTP and POP3 for the lab's domain, in one command.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Run the whole mail lab (dnsd + smtpd + pop3d) on loopback.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Where Maildirs, accounts, aliases and the queue live (not used with
    /// --config: the file's paths are).
    #[arg(long, value_name = "DIR", default_value = "lab-data")]
    data_dir: PathBuf,
    /// Use this configuration file instead of the built-in lab setup (its
    /// [dnsd] zones if it lists any, else the lab's zone).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set a user's password, e.g. `--password user1=secret` (repeatable;
    /// creates the user if missing).
    #[arg(long = "password", value_name = "USER=PASSWORD", value_parser = parse_password)]
    passwords: Vec<(String, String)>,
    /// SMTP inbound address [default: 127.0.0.1:2525].
    #[arg(long, value_name = "ADDR:PORT")]
    smtp: Option<SocketAddr>,
    /// SMTP submission address [default: 127.0.0.1:2587].
    #[arg(long, value_name = "ADDR:PORT")]
    submission: Option<SocketAddr>,
    /// SMTP submissions (implicit TLS) address [default: 127.0.0.1:2465].
    #[arg(long, value_name = "ADDR:PORT")]
    submissions: Option<SocketAddr>,
    /// POP3 address [default: 127.0.0.1:1110].
    #[arg(long, value_name = "ADDR:PORT")]
    pop3: Option<SocketAddr>,
    /// POP3S (implicit TLS) address [default: 127.0.0.1:1995].
    #[arg(long, value_name = "ADDR:PORT")]
    pop3s: Option<SocketAddr>,
    /// DNS address, UDP and TCP [default: 127.0.0.1:5300].
    #[arg(long, value_name = "ADDR:PORT")]
    dns: Option<SocketAddr>,
    /// Log only warnings: no protocol transcripts or DNS query lines.
    #[arg(long)]
    quiet: bool,
}

fn parse_password(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok((u.to_string(), p.to_string())),
        _ => Err(format!("{s:?}: expected USER=PASSWORD")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = Args::parse();
    netkit::init_tracing(if a.quiet { "warn" } else { "info" });
    let opts = maillab::Options {
        data_dir: a.data_dir,
        config: a.config,
        passwords: a.passwords,
        smtp: a.smtp,
        submission: a.submission,
        submissions: a.submissions,
        pop3: a.pop3,
        pop3s: a.pop3s,
        dns: a.dns,
        transcript: !a.quiet,
    };
    match maillab::run(opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maillab: {e}");
            ExitCode::FAILURE
        }
    }
}
