//! Property tests: codec round trips, split independence of the server
//! session, and SMTP smuggling vectors in any split.

use std::time::Duration;

use proptest::prelude::*;
use smtp_proto::{
    AuthResult, BareLf, BodyType, Command, Delivery, EnhancedStatus, Event, ForwardPath, Interrupt,
    MailParameters, Mailbox, Mechanism, RcptParameters, Reply, ReversePath, ServerConfig,
    ServerSession, Verdict,
};

// ---- strategies -------------------------------------------------------------

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4})?(\\.[a-z][a-z0-9]{0,8}){0,3}",
        1 => (1u8..=254, 0u8..=255).prop_map(|(a, b)| format!("[192.0.{b}.{a}]")),
        1 => Just("[IPv6:2001:db8::1]".to_string()),
        1 => Just("例子.广告".to_string()),
    ]
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,8}){0,2}",
        1 => "\"[ -!#-\\[\\]-~]{0,10}\"",
        1 => "\"[a-z]{1,3}\\\\[\" ]{1}[a-z]{0,3}\"",
        1 => Just("用户".to_string()),
    ]
}

fn mailbox() -> impl Strategy<Value = Mailbox<'static>> {
    (local_part(), domain()).prop_map(|(l, d)| Mailbox {
        local_part: l.into(),
        domain: d.into(),
    })
}

fn value() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+.;,@-]{1,12}"
}

fn other_params() -> impl Strategy<
    Value = Vec<(
        std::borrow::Cow<'static, str>,
        Option<std::borrow::Cow<'static, str>>,
    )>,
> {
    prop::collection::vec(
        ("X-[A-Z0-9]{1,6}", prop::option::of(value()))
            .prop_map(|(k, v)| (k.into(), v.map(Into::into))),
        0..3,
    )
}

fn command() -> impl Strategy<Value = Command<'static>> {
    let mail = (
        prop::option::of(mailbox()),
        prop::option::of(0u64..10_000_000_000),
        prop::option::of(prop_oneof![
            Just(BodyType::SevenBit),
            Just(BodyType::EightBitMime),
            Just(BodyType::BinaryMime)
        ]),
        any::<bool>(),
        prop::option::of(prop_oneof![
            Just("<>".to_string()),
            "[A-Za-z0-9+]{1,10}".prop_map(String::from)
        ]),
        prop::option::of(prop_oneof![Just("FULL"), Just("HDRS")]),
        prop::option::of(value()),
        other_params(),
    )
        .prop_map(
            |(from, size, body, smtputf8, auth, ret, envid, other)| Command::Mail {
                from: from.map_or(ReversePath::Null, ReversePath::Mailbox),
                params: MailParameters {
                    size,
                    body,
                    smtputf8,
                    auth: auth.map(Into::into),
                    ret: ret.map(Into::into),
                    envid: envid.map(Into::into),
                    other,
                },
            },
        );
    let rcpt = (
        prop::option::of(mailbox()),
        // RFC 3461 section 4.1: the values a server accepts.
        prop::option::of(prop_oneof![
            Just("NEVER"),
            Just("SUCCESS"),
            Just("FAILURE,DELAY"),
            Just("success,failure,delay")
        ]),
        // RFC 3461 section 4.2: addr-type ";" xtext.
        prop::option::of(
            (prop_oneof![Just("rfc822"), Just("utf-8")], value())
                .prop_map(|(t, v)| format!("{t};{v}")),
        ),
        other_params(),
    )
        .prop_map(|(to, notify, orcpt, other)| Command::Rcpt {
            to: to.map_or(ForwardPath::Postmaster, ForwardPath::Mailbox),
            params: RcptParameters {
                notify: notify.map(Into::into),
                orcpt: orcpt.map(Into::into),
                other,
            },
        });
    let word = "[A-Za-z0-9.@_-]{1,12}";
    prop_oneof![
        domain().prop_map(|d| Command::Ehlo(d.into())),
        domain().prop_map(|d| Command::Helo(d.into())),
        mail,
        rcpt,
        Just(Command::Data),
        Just(Command::Rset),
        Just(Command::Quit),
        Just(Command::StartTls),
        word.prop_map(|w| Command::Vrfy(w.into())),
        word.prop_map(|w| Command::Expn(w.into())),
        prop::option::of(word).prop_map(|w| Command::Help(w.map(Into::into))),
        prop::option::of(word).prop_map(|w| Command::Noop(w.map(Into::into))),
        (
            prop_oneof![
                Just("PLAIN"),
                Just("LOGIN"),
                Just("CRAM-MD5"),
                Just("X-TOKEN_2")
            ],
            prop::option::of(prop_oneof![
                Just("=".to_string()),
                "[A-Za-z0-9+/]{4,16}={0,2}".prop_map(String::from)
            ])
        )
            .prop_map(|(m, ir)| Command::Auth {
                mechanism: m.into(),
                initial_response: ir.map(Into::into)
            }),
        (0u64..=9_999_999_999_999_999_999, any::<bool>())
            .prop_map(|(size, last)| Command::Bdat { size, last }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    (
        2u16..=5,
        0u16..=99,
        any::<bool>(),
        0u16..=999,
        0u16..=999,
        prop::collection::vec("[A-Za-z][A-Za-z0-9 .,:<>()=-]{0,40}", 1..5),
    )
        .prop_map(|(first, rest, with_status, s, d, lines)| {
            let code = first * 100 + rest;
            let status =
                (with_status && first != 3).then(|| EnhancedStatus::new(first as u8, s, d));
            Reply::multiline(code, status, lines)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_round_trip(cmd in command()) {
        let line = cmd.to_string();
        let parsed = Command::parse(line.as_bytes());
        prop_assert_eq!(parsed.as_ref(), Ok(&cmd), "line {:?}", line);
        prop_assert!(cmd.to_line().ends_with(b"\r\n"));
    }

    #[test]
    fn command_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Command::parse(&bytes);
    }

    #[test]
    fn reply_round_trip(r in reply()) {
        let bytes = r.to_bytes();
        let (parsed, n) = Reply::parse(&bytes).unwrap();
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(parsed, r);
    }
}

// ---- session driving ----------------------------------------------------------

/// Events with adjacent body chunks merged (chunking depends on the split).
fn normalise(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        if let (Some(Event::BodyChunk(prev)), Event::BodyChunk(b)) = (out.last_mut(), &e) {
            prev.extend_from_slice(b);
            continue;
        }
        out.push(e);
    }
    out
}

fn config(policy: BareLf) -> ServerConfig {
    let mut c = ServerConfig::new("mx.test");
    c.bare_lf = policy;
    c.auth_mechanisms = vec![Mechanism::Plain, Mechanism::Login];
    c.tls_available = true;
    c.max_message_size = 200;
    c.max_errors = 1000;
    c
}

/// Run a session over `input` cut at `cuts`; answers depend only on the
/// events. Returns all output and the normalised events.
fn run(policy: BareLf, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<Event>) {
    let mut s = ServerSession::new(config(policy), Duration::ZERO);
    let mut pieces = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        pieces.push(&input[last..c]);
        last = c;
    }
    pieces.push(&input[last..]);
    let mut pieces = pieces.into_iter();
    let (mut out, mut events) = (Vec::new(), Vec::new());
    loop {
        match s.next() {
            Ok(e) => {
                match &e {
                    Event::Mail { .. } | Event::Vrfy { .. } => s.decide(Verdict::Accept).unwrap(),
                    Event::Rcpt { to, .. } => {
                        let bad =
                            matches!(to, ForwardPath::Mailbox(m) if m.domain == "nowhere.invalid");
                        s.decide(if bad {
                            Verdict::Reject(Reply::new(550, (5, 1, 1), "User unknown"))
                        } else {
                            Verdict::Accept
                        })
                        .unwrap()
                    }
                    Event::Auth(c) => s
                        .auth_result(if c.verify_password(c.username()) {
                            AuthResult::Success
                        } else {
                            AuthResult::Failure
                        })
                        .unwrap(),
                    Event::AuthChallenge => s.provide_challenge("<c@mx.test>").unwrap(),
                    Event::MessageEnd(_) => s
                        .message_result(Delivery::Accepted {
                            queue_id: "Q".into(),
                        })
                        .unwrap(),
                    Event::StartTls => s.tls_established().unwrap(),
                    _ => {}
                }
                events.push(e);
            }
            Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
            Err(Interrupt::NeedInput) => match pieces.next() {
                Some(p) => s.enqueue_input(Duration::ZERO, p),
                None => break,
            },
            Err(Interrupt::Close) => break,
            Err(Interrupt::AwaitingHost) => panic!("unanswered"),
        }
    }
    (out, normalise(events))
}

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "EHLO c.test\r\n",
        "HELO c\r\n",
        "MAIL FROM:<a@b.c>\r\n",
        "MAIL FROM:<>  SIZE=1000\r\n",
        "RCPT TO:<d@e.f>\r\n",
        "RCPT TO:<x@nowhere.invalid>\r\n",
        "DATA\r\n",
        "line one\r\n",
        "..dotted\r\n",
        ".\r\n",
        "\n.\n",
        "\r\n.\r\n",
        "\r.\r\n",
        "bare\n",
        "RSET\r\n",
        "NOOP\r\n",
        "BDAT 3\r\nabc",
        "BDAT 4 LAST\r\n.\r\n\r",
        "AUTH PLAIN AHUAdQ==\r\n",
        "AUTH LOGIN\r\n",
        "dQ==\r\n",
        "*\r\n",
        "VRFY u\r\n",
        "garbage\r\n",
        "QUIT\r\n",
        "x",
        "\r",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any split of the input gives the same output and events as the
    /// whole input, under both bare-LF policies.
    #[test]
    fn any_split_equals_whole(
        parts in prop::collection::vec(piece(), 0..40),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        reject in any::<bool>(),
    ) {
        let policy = if reject { BareLf::Reject } else { BareLf::Normalize };
        let input = parts.concat().into_bytes();
        let whole = run(policy, &input, &[]);
        let split = run(policy, &input, &cuts);
        prop_assert_eq!(&split.0, &whole.0);
        prop_assert_eq!(&split.1, &whole.1);
    }

    /// One byte at a time equals all at once.
    #[test]
    fn byte_at_a_time(parts in prop::collection::vec(piece(), 0..25)) {
        let input = parts.concat().into_bytes();
        let whole = run(BareLf::Normalize, &input, &[]);
        let cuts: Vec<usize> = (1..input.len()).collect();
        let bytes = run(BareLf::Normalize, &input, &cuts);
        prop_assert_eq!(bytes, whole);
    }

    /// Every smuggling vector, in any split and under either policy, gives
    /// exactly one message or one rejection; the smuggled MAIL is never
    /// executed.
    #[test]
    fn smuggling_gives_one_message(
        vector in prop::sample::select(vec!["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\r\n.\rX\r\n", "\n.\n\r\n"]),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        reject in any::<bool>(),
    ) {
        let policy = if reject { BareLf::Reject } else { BareLf::Normalize };
        let input = format!(
            "EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nSubject: x\r\n\r\nbody{vector}MAIL FROM:<evil@b.c>\r\nRCPT TO:<victim@e.f>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n"
        );
        let (out, events) = run(policy, input.as_bytes(), &cuts);
        let out = String::from_utf8(out).unwrap();
        let ends = events.iter().filter(|e| matches!(e, Event::MessageEnd(_))).count();
        let rejected = out.matches("550 5.5.2 Error: bare <LF> received").count();
        prop_assert_eq!(ends + rejected, 1, "{}", out);
        let mails = events.iter().filter(|e| matches!(e, Event::Mail { .. })).count();
        prop_assert_eq!(mails, 1);
        if ends == 1 {
            let body: Vec<u8> = events.iter().filter_map(|e| match e {
                Event::BodyChunk(b) => Some(b.clone()),
                _ => None,
            }).flatten().collect();
            let body = String::from_utf8(body).unwrap();
            prop_assert!(body.contains("MAIL FROM:<evil@b.c>\r\n"));
        }
    }
}

/// What the server receives for a body: the client turns a bare LF into
/// CRLF and adds a missing final line end; the server turns a bare CR
/// into a space (RFC 5321 section 2.3.8).
fn normalise_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in body.iter().enumerate() {
        if b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    for i in 0..out.len() {
        if out[i] == b'\r' && out.get(i + 1) != Some(&b'\n') {
            out[i] = b' ';
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The client's dot-stuffing and the server's framer are inverse: the
    /// server gets the (normalised) body back and the end exactly at the
    /// end, in any split.
    #[test]
    fn dot_stuff_then_unstuff(
        parts in prop::collection::vec(prop::sample::select(vec![".", "..", "\r\n", "\n", "\r", "a", "b c", ".\r\n", "\r\n.\r\n"]), 0..40),
        step in 1usize..50,
    ) {
        let body = parts.concat().into_bytes();
        let wire = smtp_proto::stuff_data(&body);
        let mut f = smtp_proto::Framer::new(512, BareLf::Normalize);
        f.expect_data();
        let mut got = Vec::new();
        let mut ended = false;
        for piece in wire.chunks(step) {
            prop_assert!(!ended, "data ended before the last piece");
            f.push(piece);
            loop {
                match f.next_frame() {
                    smtp_proto::Frame::Data(d) => got.extend_from_slice(&d),
                    smtp_proto::Frame::DataEnd { bare_lf } => {
                        prop_assert!(!bare_lf);
                        ended = true;
                        break;
                    }
                    smtp_proto::Frame::NeedMore => break,
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
        prop_assert!(ended);
        prop_assert_eq!(f.buffered(), 0);
        prop_assert_eq!(got, normalise_body(&body));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// RFC 3207 section 4.2 / CVE-2011-0411: whatever follows STARTTLS in
    /// the same write, under any TLS policy and in any split before the
    /// handshake, is never executed; inside TLS the session starts afresh.
    #[test]
    fn nothing_pipelined_behind_starttls_runs(
        after in prop::collection::vec(command(), 0..12),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        policy in 0u8..8,
    ) {
        let mut input = b"EHLO c.test\r\nSTARTTLS\r\n".to_vec();
        for c in &after {
            input.extend_from_slice(c.to_string().as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        let mut cfg = config(BareLf::Normalize);
        cfg.auth_mechanisms.push(Mechanism::CramMd5);
        cfg.plaintext_auth_requires_tls = policy & 1 != 0;
        cfg.tls_required = policy & 2 != 0;
        cfg.auth_required = policy & 4 != 0;
        let mut s = ServerSession::new(cfg, Duration::ZERO);
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.push(input.len());
        cuts.sort_unstable();
        let (mut out, mut events, mut last) = (Vec::new(), Vec::new(), 0);
        for cut in cuts {
            s.enqueue_input(Duration::ZERO, &input[last..cut]);
            last = cut;
            loop {
                match s.next() {
                    Ok(e) => events.push(e),
                    Err(Interrupt::Output(b)) => out.extend_from_slice(&b),
                    // The handshake waits until all input is in.
                    Err(Interrupt::NeedInput | Interrupt::AwaitingHost) => break,
                    Err(Interrupt::Close) => prop_assert!(false, "closed"),
                }
            }
        }
        prop_assert_eq!(events.len(), 2, "{:?}", events);
        prop_assert_eq!(&events[1], &Event::StartTls);
        prop_assert!(out.ends_with(b"220 2.0.0 Ready to start TLS\r\n"));
        s.tls_established().unwrap();
        prop_assert_eq!(s.buffered_input(), 0);
        prop_assert_eq!(s.next(), Err(Interrupt::NeedInput));
        s.enqueue_input(Duration::ZERO, b"MAIL FROM:<a@b.c>\r\n");
        prop_assert_eq!(
            s.next(),
            Err(Interrupt::Output(b"503 5.5.1 Error: send HELO/EHLO first\r\n".to_vec()))
        );
    }
}
