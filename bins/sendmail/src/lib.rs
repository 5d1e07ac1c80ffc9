//! `sendmail`: the command every Unix program that sends mail calls (cron,
//! PHP's `mail()`, git send-email, mailx): the message on standard input,
//! recipients as arguments or (`-t`) from its headers. It hands the
//! message to smtpd's pickup directory ([`mailstore::pickup`]), durably,
//! and exits 0; smtpd then delivers it locally or queues it for other
//! domains, also when it was not running at the time (Postfix's
//! `sendmail` → `postdrop` → `pickup`).
//!
//! Options, as Postfix's `sendmail(1)`: `-t`, `-i` / `-oi` (a line with a
//! single `.` does not end the message), `-f SENDER` / `-r SENDER`,
//! `-F FULLNAME`, `-C FILE` (our configuration file), `--`; `-odb`,
//! `-odi`, `-oem`, `-oee`, `-om`, `-bm`, `-v` and other `-o` options are
//! accepted and ignored; anything else is a usage error (exit 64).
//!
//! ```
//! let inv = sendmail::parse_args(["-t", "-oi", "-f", "cron@example.org"]).unwrap();
//! assert!(inv.extract_recipients && inv.ignore_dots);
//! assert_eq!(inv.sender.as_deref(), Some("cron@example.org"));
//! let (headers, rcpts) = sendmail::prepare(
//!     b"To: a@example.org, \"B\" <b@example.org>\nBcc: c@example.org\nSubject: x\n\nhi\n",
//!     &inv,
//!     "cron@example.org",
//!     "mail.example.org",
//!     std::time::UNIX_EPOCH,
//! );
//! assert_eq!(rcpts, ["a@example.org", "b@example.org", "c@example.org"]);
//! let text = String::from_utf8(headers).unwrap();
//! assert!(!text.contains("Bcc:") && text.contains("\r\n\r\nhi\r\n"));
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::SystemTime;

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `-t`: recipients from To, Cc and Bcc (Bcc removed), added to
    /// those given as arguments.
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line with a single `.` is content.
    pub ignore_dots: bool,
    /// `-f` / `-r`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` header that is added.
    pub full_name: Option<String>,
    /// `-C`: the configuration file.
    pub config: Option<PathBuf>,
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
}

/// A command line sendmail does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An option it does not know.
    #[error("unsupported option {0}")]
    Unknown(String),
    /// An option without its value.
    #[error("option {0} needs a value")]
    MissingValue(String),
}

/// Parses the arguments after the program name.
pub fn parse_args<I, S>(args: I) -> Result<Invocation, UsageError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut inv = Invocation::default();
    let mut it = args.into_iter().map(Into::into);
    while let Some(a) = it.next() {
        if a == "--" {
            inv.recipients.extend(it.by_ref());
            break;
        }
        let Some(opt) = a.strip_prefix('-').filter(|o| !o.is_empty()) else {
            inv.recipients.push(a);
            continue;
        };
        let mut value = |name: &str, rest: &str| -> Result<String, UsageError> {
            if rest.is_empty() {
                it.next()
                    .ok_or_else(|| UsageError::MissingValue(format!("-{name}")))
            } else {
                Ok(rest.to_owned())
            }
        };
        // The option letter is one character, which need not be one byte
        // (an argument is any text the caller gave).
        let cut = opt.chars().next().map_or(0, char::len_utf8);
        let (flag, rest) = opt.split_at(cut);
        match flag {
            "t" if rest.is_empty() => inv.extract_recipients = true,
            "i" if rest.is_empty() => inv.ignore_dots = true,
            "o" if rest == "i" => inv.ignore_dots = true,
            // Delivery mode, error mode and the like: we always queue.
            "o" => {}
            "f" | "r" => inv.sender = Some(value(flag, rest)?),
            "F" => inv.full_name = Some(value(flag, rest)?),
            "C" => inv.config = Some(PathBuf::from(value(flag, rest)?)),
            "b" if rest == "m" => {}
            "v" if rest.is_empty() => {}
            _ => return Err(UsageError::Unknown(a)),
        }
    }
    // Addresses may come as "a@x, b@y" in one argument (mailx does).
    inv.recipients = inv
        .recipients
        .iter()
        .flat_map(|r| split_addresses(r))
        .collect();
    Ok(inv)
}

/// The message as read: ends at end of input, or at a line with a single
/// `.` unless `ignore_dots`.
pub fn read_message(input: &[u8], ignore_dots: bool) -> &[u8] {
    if ignore_dots {
        return input;
    }
    let mut start = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare == b"." {
            return input.get(..start).unwrap_or(input);
        }
        start += line.len();
    }
    input
}

/// Addresses in a header value or argument: `a@x, "Name, Q" <b@y>,
/// group: c@z;` → `a@x`, `b@y`, `c@z` (comments and display names
/// dropped; a bare `root` is kept, for [`prepare`] to qualify).
pub fn split_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut depth, mut angle) = (false, 0u32, None::<String>);
    let mut chars = value.chars();
    let mut push = |current: &mut String, angle: &mut Option<String>| {
        let a = angle.take().unwrap_or_else(|| current.trim().to_owned());
        let a = a.trim();
        if !a.is_empty() {
            out.push(a.to_owned());
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '"' if depth == 0 => quoted = !quoted,
            _ if quoted => {}
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            '<' => angle = Some(String::new()),
            '>' => {
                if let Some(a) = angle.take() {
                    angle = Some(format!("{a}\u{0}"));
                }
            }
            // A group's name ends at ':'.
            ':' if angle.is_none() => current.clear(),
            ',' | ';' if angle.as_ref().is_none_or(|a| a.ends_with('\u{0}')) => {
                if let Some(a) = angle.as_mut() {
                    a.pop();
                }
                push(&mut current, &mut angle);
            }
            _ => match angle.as_mut() {
                Some(a) if !a.ends_with('\u{0}') => a.push(c),
                Some(_) => {}
                None => current.push(c),
            },
        }
    }
    if let Some(a) = angle.as_mut() {
        if a.ends_with('\u{0}') {
            a.pop();
        }
    }
    push(&mut current, &mut angle);
    out
}

/// The message as it is handed over: CRLF line ends, `Bcc:` removed when
/// recipients come from the headers, and `From:`, `Date:` and
/// `Message-ID:` added when missing (as Postfix's cleanup does for local
/// submissions). Returns it with the recipients (arguments, then with
/// `-t` those of To, Cc and Bcc; duplicates removed).
pub fn prepare(
    message: &[u8],
    inv: &Invocation,
    sender: &str,
    hostname: &str,
    now: SystemTime,
) -> (Vec<u8>, Vec<String>) {
    let mut lines: Vec<&[u8]> = message
        .split_inclusive(|&b| b == b'\n')
        .map(|l| {
            let l = l.strip_suffix(b"\n").unwrap_or(l);
            l.strip_suffix(b"\r").unwrap_or(l)
        })
        .collect();
    let body_at = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    let body = lines.split_off(body_at);
    // Header fields, with their continuation lines (RFC 5322 2.2.3).
    let mut fields: Vec<Vec<&[u8]>> = Vec::new();
    for l in lines {
        match fields.last_mut() {
            Some(f) if l.first().is_some_and(|c| *c == b' ' || *c == b'\t') => f.push(l),
            _ => fields.push(vec![l]),
        }
    }
    let name_of = |f: &[&[u8]]| -> String {
        let first = f.first().copied().unwrap_or_default();
        let name = first.split(|&b| b == b':').next().unwrap_or_default();
        String::from_utf8_lossy(name).trim().to_ascii_lowercase()
    };
    let value_of = |f: &[&[u8]]| -> String {
        let joined: Vec<u8> = f.join(&b" "[..]);
        let text = String::from_utf8_lossy(&joined).into_owned();
        text.split_once(':')
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default()
    };
    let mut rcpts: Vec<String> = inv.recipients.clone();
    if inv.extract_recipients {
        for f in &fields {
            if matches!(name_of(f).as_str(), "to" | "cc" | "bcc") {
                rcpts.extend(split_addresses(&value_of(f)));
            }
        }
        fields.retain(|f| name_of(f) != "bcc");
    }
    // A bare name is a user here (Postfix's append_at_myorigin).
    for r in &mut rcpts {
        if !r.contains('@') {
            *r = format!("{r}@{hostname}");
        }
    }
    let mut seen = std::collections::HashSet::new();
    rcpts.retain(|r| seen.insert(r.to_ascii_lowercase()));
    let has = |name: &str| fields.iter().any(|f| name_of(f) == name);
    let mut out = Vec::with_capacity(message.len() + 256);
    for f in &fields {
        for l in f {
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !has("from") {
        let from = match &inv.full_name {
            Some(n) => format!("From: {} <{sender}>", quote_phrase(n)),
            None => format!("From: {sender}"),
        };
        out.extend_from_slice(from.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has("date") {
        out.extend_from_slice(format!("Date: {}\r\n", mailstore::rfc5322_date(now)).as_bytes());
    }
    if !has("message-id") {
        let t = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "Message-ID: <{}.{:09}.{}@{hostname}>\r\n",
            t.as_secs(),
            t.subsec_nanos(),
            std::process::id()
        );
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for l in body.iter().skip(1) {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    (out, rcpts)
}

/// A display name as an RFC 5322 phrase: quoted unless it is plain atoms.
fn quote_phrase(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.to_owned()
    } else {
        let escaped: String = name
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// The invoking user's login name: from `/etc/passwd` by the real user
/// id, else `$LOGNAME`/`$USER`, else the uid itself.
pub fn login_name() -> String {
    let uid = rustix::process::getuid().as_raw();
    let from_passwd = std::fs::read_to_string("/etc/passwd").ok().and_then(|t| {
        t.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
    });
    from_passwd
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty() && !n.contains(['\t', '\r', '\n', '@']))
        .unwrap_or_else(|| uid.to_string())
}

/// Tells a running smtpd to look at its pickup directory now (SIGUSR1 to
/// the process holding the queue, as `mailctl queue flush`); without one,
/// or without the right to signal it, smtpd finds the message at its next
/// scan or start.
pub fn wake_smtpd(queue_dir: &std::path::Path) {
    if let Ok(Some(pid)) = mailstore::queue::holder(queue_dir) {
        let _ = std::process::Command::new("kill")
            .arg("-USR1")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_cron_php_and_git_use() {
        // cron: sendmail -FCronDaemon -i -B8BITMIME -oem user
        // (-B is not supported: a usage error says so)
        assert!(matches!(
            parse_args(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]),
            Err(UsageError::Unknown(o)) if o == "-B8BITMIME"
        ));
        let inv = parse_args(["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "root"]).unwrap();
        assert_eq!(inv.full_name.as_deref(), Some("CronDaemon"));
        assert!(inv.ignore_dots);
        assert_eq!(inv.recipients, ["root"]);
        // PHP: sendmail -t -i
        let inv = parse_args(["-t", "-i"]).unwrap();
        assert!(inv.extract_recipients && inv.recipients.is_empty());
        // git send-email: sendmail -i a@x b@y, or -f sender
        let inv = parse_args(["-i", "-f", "me@x", "--", "a@x", "-b@y"]).unwrap();
        assert_eq!(inv.sender.as_deref(), Some("me@x"));
        assert_eq!(inv.recipients, ["a@x", "-b@y"]);
        let inv = parse_args(["-rme@x", "a@x, b@y"]).unwrap();
        assert_eq!(inv.sender.as_deref(), Some("me@x"));
        assert_eq!(inv.recipients, ["a@x", "b@y"]);
        assert_eq!(
            parse_args(["-f"]),
            Err(UsageError::MissingValue("-f".into()))
        );
        assert!(parse_args(["-q"]).is_err());
    }

    #[test]
    fn an_option_letter_outside_ascii_is_a_usage_error() {
        // Found by the sendmail_headers fuzz target: `-Ғ` was cut inside
        // its letter and panicked.
        assert_eq!(
            parse_args(["-\u{492}"]),
            Err(UsageError::Unknown("-\u{492}".into()))
        );
        assert_eq!(
            parse_args(["-\u{e9}x", "a@b"]),
            Err(UsageError::Unknown("-\u{e9}x".into()))
        );
    }

    #[test]
    fn a_single_dot_ends_the_message_unless_ignored() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(read_message(input, false), b"Subject: x\n\nline\n");
        assert_eq!(read_message(input, true), input);
        assert_eq!(read_message(b"a\r\n.\r\n", false), b"a\r\n");
        assert_eq!(read_message(b"a\n..\n", false), b"a\n..\n");
    }

    #[test]
    fn addresses_in_headers() {
        assert_eq!(
            split_addresses(
                r#" "Doe, John" <john@x.org>, plain@y.org (comment, with, commas), Group: g1@z.org, g2@z.org;"#
            ),
            ["john@x.org", "plain@y.org", "g1@z.org", "g2@z.org"]
        );
        assert_eq!(
            split_addresses("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(split_addresses("<a@b>"), ["a@b"]);
        assert_eq!(split_addresses("root, (x) "), ["root"]);
    }

    #[test]
    fn headers_added_and_bcc_removed() {
        let inv = Invocation {
            extract_recipients: true,
            full_name: Some("Cron \"Daemon\"".into()),
            recipients: vec!["A@x.org".into()],
            ..Invocation::default()
        };
        let (msg, rcpts) = prepare(
            b"To: a@x.org,\n\tb@x.org\nBcc: hidden@y.org\nSubject: s\n\nbody\n\nend",
            &inv,
            "cron@host.example",
            "host.example",
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(rcpts, ["A@x.org", "b@x.org", "hidden@y.org"]);
        let bare = Invocation {
            recipients: vec!["root".into()],
            ..Invocation::default()
        };
        let (_, r) = prepare(b"\n", &bare, "s", "host.example", SystemTime::UNIX_EPOCH);
        assert_eq!(r, ["root@host.example"]);
        let text = String::from_utf8(msg).unwrap();
        assert!(text.starts_with("To: a@x.org,\r\n\tb@x.org\r\nSubject: s\r\nFrom: \"Cron \\\"Daemon\\\"\" <cron@host.example>\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\nMessage-ID: <0.000000000."), "{text}");
        assert!(
            text.ends_with("@host.example>\r\n\r\nbody\r\n\r\nend\r\n"),
            "{text}"
        );
        // Headers only, no body.
        let (msg, _) = prepare(
            b"From: me@x\nDate: d\nMessage-ID: <i@x>\n",
            &inv,
            "s",
            "h",
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(msg, b"From: me@x\r\nDate: d\r\nMessage-ID: <i@x>\r\n\r\n");
    }

    proptest::proptest! {
        #[test]
        fn prepare_ends_every_line_in_crlf(input in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let inv = Invocation { extract_recipients: true, ..Invocation::default() };
            let (msg, _) = prepare(&input, &inv, "s@h", "h", SystemTime::UNIX_EPOCH);
            for (i, b) in msg.iter().enumerate() {
                if *b == b'\n' {
                    proptest::prop_assert!(i > 0 && msg[i - 1] == b'\r');
                }
            }
            proptest::prop_assert!(msg.ends_with(b"\r\n"));
        }

        #[test]
        fn split_addresses_never_panics(s in "\\PC{0,80}") {
            let _ = split_addresses(&s);
        }
    }
}
