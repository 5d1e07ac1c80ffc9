//! `dnsd --config FILE`: the DNS server as a service of its own, or
//! `dnsd --check FILE` to check a zone file. SIGHUP reloads the
//! configuration and the zones; SIGTERM or SIGINT stops.

use std::process::ExitCode;

use clap::Parser;
use mail_config::DnsZone;

/// Authoritative DNS server for the mail system.
#[derive(Parser, Debug)]
#[command(name = "dnsd", version, about)]
struct Args {
    #[command(flatten)]
    common: netkit::CommonArgs,
    /// Address to answer on, UDP and TCP (repeatable; replaces the
    /// configuration's `listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<std::net::SocketAddr>,
    /// Zone to serve (repeatable; added to the configuration's zones).
    #[arg(long, value_name = "ORIGIN=FILE", value_parser = parse_zone)]
    zone: Vec<DnsZone>,
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

fn parse_zone(s: &str) -> Result<DnsZone, String> {
    match s.split_once('=') {
        Some((origin, file)) if !origin.is_empty() && !file.is_empty() => Ok(DnsZone {
            origin: origin.to_string(),
            file: file.into(),
            notify: Vec::new(),
            key: None,
            primaries: Vec::new(),
        }),
        _ => Err(format!("{s:?}: expected ORIGIN=FILE")),
    }
}

impl netkit::DaemonArgs for Args {
    fn common(&self) -> &netkit::CommonArgs {
        &self.common
    }

    fn apply(&self, cfg: &mut mail_config::Config) -> Result<(), String> {
        let d = &mut cfg.dnsd;
        if !self.listen.is_empty() {
            d.listen.clone_from(&self.listen);
        }
        d.zones.extend(self.zone.iter().cloned());
        if let Some(w) = self.workers {
            d.workers = w;
        }
        d.query_log |= self.query_log;
        if d.zones.is_empty() {
            return Err("no zones (use --zone ORIGIN=FILE or a [dnsd] zones entry)".into());
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(check) = &args.check {
        return check_zone(check);
    }
    netkit::run_daemon("dnsd", args, dnsd::start)
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

#[cfg(test)]
mod tests {
    use super::*;
    use netkit::DaemonArgs;

    #[test]
    fn common_flags_and_overrides() {
        let a = Args::try_parse_from([
            "dnsd",
            "--transcript",
            "--listen",
            "127.0.0.1:5353",
            "--zone",
            "csuvnetwork.com=zones/csuvnetwork.com.zone",
            "--workers",
            "1",
        ])
        .unwrap();
        let cfg = a.load().unwrap();
        assert!(cfg.global.transcript);
        assert_eq!(cfg.dnsd.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(cfg.dnsd.zones[0].origin, "csuvnetwork.com");
        assert_eq!(cfg.dnsd.workers, 1);
        assert!(Args::try_parse_from(["dnsd", "--zone", "nofile"]).is_err());
        // No zone from anywhere: refused before anything starts.
        let a = Args::try_parse_from(["dnsd"]).unwrap();
        assert!(a.load().unwrap_err().contains("no zones"));
        let a = Args::try_parse_from(["dnsd", "-c", "/nonexistent/mail.toml"]).unwrap();
        assert!(a.load().unwrap_err().contains("/nonexistent/mail.toml"));
    }
}
