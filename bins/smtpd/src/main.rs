//! `smtpd --config FILE`: the SMTP server as a service of its own.
//! SIGHUP rereads the configuration; SIGTERM or SIGINT stops gracefully.

fn main() -> std::process::ExitCode {
    netkit::daemon_main(
        "smtpd",
        "ESMTP server with AUTH and durable local Maildir delivery",
        smtpd::start,
    )
}
