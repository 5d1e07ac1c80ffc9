//! 8-bit to 7-bit conversion of a message for a server that does not offer
//! 8BITMIME (RFC 6152 section 3, RFC 1652 section 3), as Postfix does it
//! with `disable_mime_output_conversion = no`: every MIME leaf part whose
//! body holds 8-bit octets and whose `Content-Transfer-Encoding` is
//! `8bit`, `binary`, `7bit` or absent is re-encoded as quoted-printable
//! (RFC 2045 section 6.7); multiparts and `message/rfc822` parts are
//! entered and then labelled `7bit`. Header fields are sent as they are
//! (8-bit header text has no encoding a relay could apply without knowing
//! its charset; Postfix does not touch it either), as is a part that
//! cannot be converted (`message/global`, a part already labelled
//! `base64` or `quoted-printable`, nesting deeper than
//! [`MAX_DEPTH`]).
//!
//! Pure: bytes in, bytes out, CRLF line ends.

/// Nesting depth of multiparts and embedded messages entered; deeper
/// parts are sent as they are.
pub const MAX_DEPTH: usize = 32;

/// Longest encoded line (RFC 2045 section 6.7 rule 5), the `=` of a soft
/// line break included.
const QP_LINE: usize = 76;

/// Whether `bytes` hold an octet above 127.
pub fn is_8bit(bytes: &[u8]) -> bool {
    !bytes.is_ascii()
}

/// `message` with its 8-bit body parts converted to quoted-printable; a
/// 7-bit message comes back unchanged. Headers stay as they are.
pub fn downgrade(message: &[u8]) -> Vec<u8> {
    if !is_8bit(message) {
        return message.to_vec();
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 4);
    entity(message, true, 0, &mut out);
    out
}

/// Splits an entity into its header (each line with its CRLF, up to and
/// without the empty line) and its body (after the empty line); `None`
/// for the body when there is no empty line.
fn split(entity: &[u8]) -> (&[u8], Option<&[u8]>) {
    if entity.starts_with(b"\r\n") {
        return (&[], entity.get(2..));
    }
    match memchr::memmem::find(entity, b"\r\n\r\n") {
        Some(i) => (entity.get(..i + 2).unwrap_or_default(), entity.get(i + 4..)),
        None => (entity, None),
    }
}

/// The header's fields, each with its continuation lines.
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header.len() {
        let end = memchr::memmem::find(header.get(pos..).unwrap_or_default(), b"\r\n")
            .map_or(header.len(), |i| pos + i + 2);
        let next_is_continuation = header.get(end).is_some_and(|&b| b == b' ' || b == b'\t');
        if !next_is_continuation {
            out.push(header.get(start..end).unwrap_or_default());
            start = end;
        }
        pos = end;
    }
    if start < header.len() {
        out.push(header.get(start..).unwrap_or_default());
    }
    out
}

/// The unfolded value of a field named `name` (case-insensitive).
fn field_value(field: &[u8], name: &str) -> Option<String> {
    let colon = memchr::memchr(b':', field)?;
    let n = field.get(..colon)?;
    if !n.trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    let v = field.get(colon + 1..)?;
    let v: Vec<u8> = v
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    Some(String::from_utf8_lossy(&v).trim().to_owned())
}

/// Content type (lowercase `type/subtype`) and its `boundary` parameter.
fn content_type(value: &str) -> (String, Option<String>) {
    let mut parts = value.split(';');
    let ty = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let boundary = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.split_once('"').map(|x| x.0))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_owned())
    });
    (ty, boundary)
}

/// Appends the converted `entity`. `top`: the message itself (which gets
/// `MIME-Version` when it had none and is converted).
fn entity(entity: &[u8], top: bool, depth: usize, out: &mut Vec<u8>) {
    let (header, body) = split(entity);
    let Some(body) = body.filter(|b| is_8bit(b)) else {
        out.extend_from_slice(entity);
        return;
    };
    let fs = fields(header);
    let ctype = fs.iter().find_map(|f| field_value(f, "content-type"));
    let cte = fs
        .iter()
        .find_map(|f| field_value(f, "content-transfer-encoding"))
        .map(|v| v.to_ascii_lowercase());
    let (ty, boundary) = ctype.as_deref().map(content_type).unwrap_or_default();
    let convertible_cte = matches!(cte.as_deref(), None | Some("7bit" | "8bit" | "binary"));
    if depth >= MAX_DEPTH || !convertible_cte || ty == "message/global" {
        out.extend_from_slice(entity);
        return;
    }
    let mut new_body = Vec::with_capacity(body.len() + body.len() / 4);
    let new_cte = if ty.starts_with("multipart/") {
        let Some(b) = boundary else {
            out.extend_from_slice(entity);
            return;
        };
        multipart(body, b.as_bytes(), depth, &mut new_body);
        "7bit"
    } else if ty.starts_with("message/") {
        // An embedded message is a message: it gets MIME-Version too.
        self::entity(body, true, depth + 1, &mut new_body);
        "7bit"
    } else {
        qp_encode(body, &mut new_body);
        "quoted-printable"
    };
    // The header: every field but the old encoding, then the new one.
    let mut has_version = false;
    for f in &fs {
        if field_value(f, "content-transfer-encoding").is_some() {
            continue;
        }
        has_version |= field_value(f, "mime-version").is_some();
        out.extend_from_slice(f);
    }
    if top && !has_version {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: ");
    out.extend_from_slice(new_cte.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(&new_body);
}

/// Converts the parts of a multipart body (RFC 2046 section 5.1.1): the
/// preamble and epilogue are kept, each part between delimiter lines
/// converted.
fn multipart(body: &[u8], boundary: &[u8], depth: usize, out: &mut Vec<u8>) {
    // Positions of delimiter lines: (line start, line end after CRLF,
    // closing).
    let mut delims = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memmem::find(body.get(pos..).unwrap_or_default(), b"\r\n")
            .map_or(body.len(), |i| pos + i + 2);
        let line = body.get(pos..end).unwrap_or_default();
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let closing = rest.starts_with(b"--");
            let rest = if closing {
                rest.get(2..).unwrap_or_default()
            } else {
                rest
            };
            if rest.iter().all(|b| b" \t\r\n".contains(b)) {
                delims.push((pos, end, closing));
                if closing {
                    break;
                }
            }
        }
        pos = end;
    }
    let Some(&(first, _, _)) = delims.first() else {
        out.extend_from_slice(body);
        return;
    };
    out.extend_from_slice(body.get(..first).unwrap_or_default());
    for (k, &(start, end, closing)) in delims.iter().enumerate() {
        out.extend_from_slice(body.get(start..end).unwrap_or_default());
        if closing {
            out.extend_from_slice(body.get(end..).unwrap_or_default());
            return;
        }
        // The part runs up to the CRLF before the next delimiter, which
        // belongs to the delimiter (RFC 2046 section 5.1.1).
        let next = delims.get(k + 1).map_or(body.len(), |d| d.0);
        let part_end = if next > end && body.get(next - 2..next) == Some(b"\r\n") {
            next - 2
        } else {
            next
        };
        let part = body.get(end..part_end.max(end)).unwrap_or_default();
        entity(part, false, depth + 1, out);
        out.extend_from_slice(body.get(part_end.max(end)..next).unwrap_or_default());
    }
}

/// Quoted-printable (RFC 2045 section 6.7): CRLF pairs stay line breaks,
/// every other octet outside `!`..`~` (and `=`) is `=XX`, as are a space
/// or tab before a line end; lines are cut with soft breaks at 76.
pub fn qp_encode(body: &[u8], out: &mut Vec<u8>) {
    let mut rest = body;
    loop {
        let (line, more) = match memchr::memmem::find(rest, b"\r\n") {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                Some(rest.get(i + 2..).unwrap_or_default()),
            ),
            None => (rest, None),
        };
        let mut col = 0;
        for (k, &b) in line.iter().enumerate() {
            let last = k + 1 == line.len();
            let literal =
                (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !last;
            let width = if literal { 1 } else { 3 };
            // Room for the soft break's `=` unless this is the line's end.
            let room = if last { QP_LINE } else { QP_LINE - 1 };
            if col + width > room {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.push(b'=');
                out.push(hex_digit(b >> 4));
                out.push(hex_digit(b & 15));
            }
            col += width;
        }
        match more {
            Some(m) => {
                out.extend_from_slice(b"\r\n");
                rest = m;
            }
            None => return,
        }
    }
}

/// The upper-case hex digit of a nibble.
fn hex_digit(n: u8) -> u8 {
    match n & 15 {
        d @ 0..=9 => b'0' + d,
        d => b'A' + d - 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Quoted-printable decoding, for the round trip.
    fn qp_decode(enc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < enc.len() {
            match enc[i] {
                b'=' if enc.get(i + 1..i + 3) == Some(b"\r\n") => i += 3,
                b'=' => {
                    let h = std::str::from_utf8(&enc[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(h, 16).unwrap());
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    fn body_of(m: &[u8]) -> &[u8] {
        split(m).1.unwrap()
    }

    #[test]
    fn seven_bit_is_unchanged() {
        let m = b"Subject: x\r\n\r\nhello\r\n";
        assert_eq!(downgrade(m), m.to_vec());
    }

    #[test]
    fn single_part_text() {
        let m = "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\nGrüße = 1 \r\n";
        let d = downgrade(m.as_bytes());
        assert_eq!(
            String::from_utf8(d).unwrap(),
            "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe =3D 1=20\r\n"
        );
        // No MIME header at all: MIME-Version is added.
        let d = downgrade("Subject: x\r\n\r\nä\r\n".as_bytes());
        assert_eq!(
            d,
            b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A4\r\n"
        );
    }

    #[test]
    fn multipart_and_embedded_message() {
        let m = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\npre\r\n--b1\r\n\
                 Content-Type: text/plain\r\n\r\nascii\r\n--b1\r\n\
                 Content-Type: text/plain; charset=latin1\r\n\r\ncaf\u{e9}\r\n--b1\r\n\
                 Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\n\u{fc}\r\n--b1--\r\nepi\r\n";
        let d = String::from_utf8(downgrade(m.as_bytes())).unwrap();
        assert!(d.is_ascii(), "{d}");
        assert_eq!(
            d,
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\npre\r\n--b1\r\n\
             Content-Type: text/plain\r\n\r\nascii\r\n--b1\r\n\
             Content-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--b1\r\n\
             Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
             Subject: in\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--b1--\r\nepi\r\n"
        );
    }

    #[test]
    fn what_cannot_be_converted_is_sent_as_is() {
        for m in [
            "Content-Type: message/global\r\n\r\nSubject: ü\r\n\r\nü\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\nü\r\n",
            "Content-Type: multipart/mixed\r\n\r\nü\r\n",
            "Subject: ü\r\n",
        ] {
            assert_eq!(downgrade(m.as_bytes()), m.as_bytes());
        }
        // 8-bit headers stay, the body is converted.
        let d = downgrade("Subject: ü\r\n\r\nü\r\n".as_bytes());
        assert!(d.starts_with("Subject: ü\r\n".as_bytes()));
        assert!(d.ends_with(b"\r\n\r\n=C3=BC\r\n"));
    }

    #[test]
    fn long_lines_get_soft_breaks() {
        let body = "é".repeat(100);
        let mut out = Vec::new();
        qp_encode(body.as_bytes(), &mut out);
        for l in out.split(|&b| b == b'\n') {
            assert!(l.len() <= QP_LINE + 1, "{}", l.len());
        }
        assert_eq!(qp_decode(&out), body.as_bytes());
    }

    proptest! {
        #[test]
        fn text_body_round_trips_and_is_7bit(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let head = "Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
            let mut m = head.as_bytes().to_vec();
            m.extend_from_slice(&body);
            let d = downgrade(&m);
            prop_assert!(d.is_ascii());
            if is_8bit(&body) {
                let b = body_of(&d);
                prop_assert_eq!(qp_decode(b), body);
                for l in b.split(|&c| c == b'\n') {
                    prop_assert!(l.len() <= QP_LINE + 1);
                }
            } else {
                prop_assert_eq!(d, m);
            }
        }

        #[test]
        fn qp_round_trips(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut out = Vec::new();
            qp_encode(&body, &mut out);
            prop_assert!(out.iter().all(|&b| (b' '..=b'~').contains(&b) || b"\t\r\n".contains(&b)));
            prop_assert_eq!(qp_decode(&out), body);
        }
    }
}
