//! `pop3d --config FILE`: the POP3 server as a service of its own.
//! SIGHUP rereads the configuration; SIGTERM or SIGINT stops gracefully.

fn main() -> std::process::ExitCode {
    netkit::daemon_main("pop3d", "POP3 server over the Maildir store", pop3d::start)
}
