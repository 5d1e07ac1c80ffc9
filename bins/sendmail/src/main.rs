//! `sendmail`: see the library docs. Exit codes are sendmail's
//! (sysexits.h): 64 usage, 65 no recipients, 75 the message could not be
//! handed over (try again).
use std::io::Read;
use std::process::ExitCode;

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

fn main() -> ExitCode {
    let inv = match sendmail::parse_args(std::env::args().skip(1)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let cfg = match mail_config::Config::load_or_builtin(inv.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        eprintln!("sendmail: reading the message: {e}");
        return ExitCode::from(EX_TEMPFAIL);
    }
    let user = sendmail::login_name();
    let sender = inv
        .sender
        .clone()
        .unwrap_or_else(|| format!("{user}@{}", cfg.global.hostname));
    let message = sendmail::read_message(&input, inv.ignore_dots);
    let (content, recipients) = sendmail::prepare(
        message,
        &inv,
        &sender,
        &cfg.global.hostname,
        std::time::SystemTime::now(),
    );
    if recipients.is_empty() {
        eprintln!("sendmail: no recipient addresses found");
        return ExitCode::from(EX_DATAERR);
    }
    let dir = cfg.smtpd.queue_directory.join(mailstore::pickup::DIR_NAME);
    let dropped = mailstore::pickup::Dropped {
        user,
        // `-f <>` is the null sender.
        sender: if sender == "<>" {
            String::new()
        } else {
            sender
        },
        recipients,
        content,
    };
    match std::fs::create_dir_all(&dir)
        .map_err(|e| mailstore::Error::Io {
            path: dir.clone(),
            source: e,
        })
        .and_then(|()| mailstore::pickup::drop_message(&dir, &dropped))
    {
        Ok(_) => {
            sendmail::wake_smtpd(&cfg.smtpd.queue_directory);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sendmail: {e}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}
