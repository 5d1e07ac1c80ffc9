//! The header section of a message as DKIM signing and the inbound checks
//! need it: its fields, the `From:` domain, and the removal of forged
//! `Authentication-Results:` fields. Pure functions over bytes.

use std::ops::Range;

/// Where the body starts: after the first empty line (RFC 5322 section
/// 2.1), or the message's length when it has none.
pub fn body_offset(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let rest = message.get(at..).unwrap_or_default();
        if rest.starts_with(b"\r\n") {
            return at + 2;
        }
        if rest.starts_with(b"\n") {
            return at + 1;
        }
        match memchr_nl(rest) {
            Some(i) => at += i + 1,
            None => return message.len(),
        }
    }
    message.len()
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// One header field: its name and the byte range of the whole field,
/// continuation lines and line end included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written.
    pub name: &'a str,
    /// The whole field in the message.
    pub range: Range<usize>,
}

impl Field<'_> {
    /// The value: what follows the colon, unfolded lines kept as they are.
    pub fn value<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        let field = message.get(self.range.clone()).unwrap_or_default();
        let colon = field
            .iter()
            .position(|&c| c == b':')
            .map_or(field.len(), |i| i + 1);
        field.get(colon..).unwrap_or_default()
    }
}

/// The header fields, in order. A line that is not a field (no colon
/// before any whitespace) ends nothing: it is skipped, as verifiers do.
pub fn fields(message: &[u8]) -> Vec<Field<'_>> {
    let end = body_offset(message);
    let head = message.get(..end).unwrap_or_default();
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    while at < head.len() {
        let rest = head.get(at..).unwrap_or_default();
        let line_end = memchr_nl(rest).map_or(head.len(), |i| at + i + 1);
        let line = head.get(at..line_end).unwrap_or_default();
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        if folded {
            // RFC 5322 section 2.2.3: a continuation of the field above.
            if let Some(last) = out.last_mut() {
                last.range.end = line_end;
            }
        } else if let Some(colon) = line.iter().position(|&c| c == b':') {
            let name = line.get(..colon).unwrap_or_default();
            if !name.is_empty() && name.iter().all(|c| c.is_ascii_graphic()) {
                if let Ok(name) = std::str::from_utf8(name) {
                    out.push(Field {
                        name,
                        range: at..line_end,
                    });
                }
            }
        }
        at = line_end;
    }
    out
}

/// The domain of the single address in `From:` (RFC 5322 section 3.6.2),
/// lowercased; `None` with no `From:`, several of them, or no address.
/// DMARC (RFC 7489 section 6.6.1) and the signing table key on it.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let fs = fields(message);
    let mut froms = fs.iter().filter(|f| f.name.eq_ignore_ascii_case("from"));
    let from = froms.next()?;
    if froms.next().is_some() {
        return None;
    }
    let value = String::from_utf8_lossy(from.value(message)).into_owned();
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value.get(a + 1..b)?.to_string(),
        _ => value.trim().to_string(),
    };
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    ok.then_some(domain)
}

/// The names among `wanted` that the message has, in `wanted`'s order,
/// each once: the `h=` list of a signature that signs what is there, as
/// OpenDKIM does by default.
pub fn present<'w>(message: &[u8], wanted: &'w [String]) -> Vec<&'w str> {
    let fs = fields(message);
    wanted
        .iter()
        .filter(|w| fs.iter().any(|f| f.name.eq_ignore_ascii_case(w)))
        .map(String::as_str)
        .collect()
}

/// The authserv-id of an `Authentication-Results:` value (RFC 8601
/// section 2.2): the first token, after comments and whitespace.
fn authserv_id(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            ';' => break,
            c if c.is_whitespace() => {
                if !out.is_empty() {
                    break;
                }
            }
            c => out.push(c),
        }
    }
    out.trim_matches('"').to_ascii_lowercase()
}

/// The message without the `Authentication-Results:` fields that claim to
/// come from `authserv_id` (RFC 8601 section 5: a border MTA removes them,
/// since only it writes them); `None` when there are none.
pub fn strip_forged_results(message: &[u8], authserv_id_ours: &str) -> Option<Vec<u8>> {
    let ours = authserv_id_ours.to_ascii_lowercase();
    let forged: Vec<Range<usize>> = fields(message)
        .into_iter()
        .filter(|f| {
            f.name.eq_ignore_ascii_case("authentication-results")
                && authserv_id(f.value(message)) == ours
        })
        .map(|f| f.range)
        .collect();
    if forged.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for r in forged {
        out.extend_from_slice(message.get(at..r.start).unwrap_or_default());
        at = r.end;
    }
    out.extend_from_slice(message.get(at..).unwrap_or_default());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nFrom: Joe <Joe@Example.COM>\r\nSubject: hi\r\n\r\nbody\r\nFrom: not@header\r\n";

    #[test]
    fn fields_and_body() {
        let fs = fields(MSG);
        let names: Vec<_> = fs.iter().map(|f| f.name).collect();
        assert_eq!(names, ["Received", "From", "Subject"]);
        assert_eq!(&MSG[fs[0].range.clone()], b"Received: from x\r\n\tby y\r\n");
        assert_eq!(&MSG[body_offset(MSG)..], b"body\r\nFrom: not@header\r\n");
        assert_eq!(body_offset(b"A: b\r\n"), 6);
    }

    #[test]
    fn from_domain_cases() {
        assert_eq!(from_domain(MSG).as_deref(), Some("example.com"));
        assert_eq!(
            from_domain(b"From: a@b.org\r\n\r\n").as_deref(),
            Some("b.org")
        );
        assert_eq!(from_domain(b"From: a@b.org\r\nFrom: c@d.org\r\n\r\n"), None);
        assert_eq!(from_domain(b"Subject: x\r\n\r\n"), None);
        assert_eq!(from_domain(b"From: nobody\r\n\r\n"), None);
    }

    #[test]
    fn present_keeps_order_and_case() {
        let wanted = vec!["From".to_string(), "To".into(), "Subject".into()];
        assert_eq!(present(MSG, &wanted), ["From", "Subject"]);
    }

    #[test]
    fn strips_only_ours() {
        let m = b"Authentication-Results: (c) MX.example.net;\r\n spf=pass\r\nAuthentication-Results: other.example; dkim=pass\r\nFrom: a@b\r\n\r\nx\r\n";
        let out = strip_forged_results(m, "mx.example.net").unwrap();
        assert_eq!(
            out,
            b"Authentication-Results: other.example; dkim=pass\r\nFrom: a@b\r\n\r\nx\r\n"
        );
        assert!(strip_forged_results(MSG, "mx.example.net").is_none());
    }

    proptest! {
        // Any input: no panic, ranges inside the header section and in order.
        #[test]
        fn fields_never_panic(m in proptest::collection::vec(any::<u8>(), 0..300)) {
            let end = body_offset(&m);
            let mut last = 0;
            for f in fields(&m) {
                prop_assert!(f.range.start >= last && f.range.end <= end);
                last = f.range.end;
            }
            let _ = from_domain(&m);
            let _ = strip_forged_results(&m, "h");
        }
    }
}
