//! Response rate limiting (RRL) for UDP answers, with BIND 9's semantics
//! (`rate-limit { responses-per-second; window; slip; ... }`), so that an
//! authoritative server cannot be used to amplify spoofed-source floods.
//!
//! Sans-I/O: the caller passes the response it is about to send and the
//! current time in milliseconds; the limiter says send, drop or slip.
//!
//! * Accounting is per *(client network, response kind, key)*: the client
//!   address masked to `/24` (IPv4) or `/56` (IPv6) by default; the kind
//!   and key as BIND forms them: positive answers per (qname, qtype),
//!   NXDOMAIN and NODATA per zone (the owner of the SOA in the authority
//!   section), referrals per delegation point, errors (REFUSED, FORMERR,
//!   ...) per client network alone.
//! * Each entry holds a credit balance: `rate` credits a second, at most
//!   `rate` saved up (one second's burst); each response costs one. A
//!   response that finds the balance negative is limited. The balance can
//!   fall to `-window * rate`, so a client must slow down for up to
//!   `window` seconds before its answers come back, as in BIND.
//! * Of limited responses every `slip`-th is sent as a truncated, empty
//!   answer (TC=1, question kept) instead of dropped, so a real client
//!   whose address is spoofed retries over TCP (RFC 7766 section 5),
//!   which cannot be spoofed; `slip = 0` never slips, `1` always.
//! * The table is fixed-size and set-associative (8 entries a set, each
//!   set behind its own uncontended mutex); a new key evicts the least
//!   recently used entry of its set, like BIND's `max-table-size`. Keys
//!   are hashed with a per-process random seed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::responder::{rcode, Prefix};

/// Entries per set of the table.
const WAYS: usize = 8;
/// Credits are counted in thousandths of a response so that time can be
/// credited per millisecond.
const MILLI: i64 = 1000;

/// Limiter settings (`[dnsd]`'s `rrl_*` keys).
#[derive(Debug, Clone)]
pub struct RrlConfig {
    /// Responses a second per client network and key (BIND's
    /// `responses-per-second`); 0 turns limiting off.
    pub responses_per_second: u32,
    /// Seconds over which a client's excess is remembered (BIND's
    /// `window`, 1 to 3600).
    pub window_secs: u32,
    /// Every `slip`-th limited response is sent truncated (0: none).
    pub slip: u32,
    /// Client IPv4 addresses are grouped by this prefix length.
    pub ipv4_prefix: u8,
    /// Client IPv6 addresses are grouped by this prefix length.
    pub ipv6_prefix: u8,
    /// Entries in the table (BIND's `max-table-size`).
    pub table_size: usize,
    /// Clients never limited (BIND's `exempt-clients`).
    pub exempt: Vec<Prefix>,
    /// Count and report, but send every response (BIND's `log-only`).
    pub log_only: bool,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 20,
            window_secs: 15,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: 20_000,
            exempt: Vec::new(),
            log_only: false,
        }
    }
}

/// What a response is, for accounting (BIND's response classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// NOERROR with answers: keyed by qname and qtype.
    Response,
    /// NOERROR, authoritative, no answer: keyed by zone.
    NoData,
    /// NXDOMAIN: keyed by zone.
    NxDomain,
    /// NOERROR, not authoritative, no answer: keyed by delegation point.
    Referral,
    /// Any other RCODE: keyed by client network alone.
    Error,
}

/// The limiter's verdict on one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the response as it is.
    Send,
    /// Send nothing.
    Drop,
    /// Send [`truncate`]'s form of the response instead.
    Slip,
}

/// A verdict and what to log about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The response's class.
    pub kind: Kind,
    /// Limiting of this entry starts with this response (log it once,
    /// as BIND's "limit ... responses to ..." line).
    pub started: bool,
    /// In `log_only` mode: this response would have been limited.
    pub would_limit: bool,
}

impl Decision {
    fn send(kind: Kind) -> Self {
        Decision {
            action: Action::Send,
            kind,
            started: false,
            would_limit: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Hash of the key; 0 marks an empty slot.
    key: u64,
    /// Credits in thousandths of a response.
    balance: i64,
    /// Time of the last response, ms.
    last_ms: u64,
    /// Limited responses since the last slip.
    slip_count: u32,
    /// The entry is being limited (for the "started" log line).
    limiting: bool,
}

/// The response rate limiter; shared by every UDP worker (`&self`).
#[derive(Debug)]
pub struct RateLimiter {
    config: RrlConfig,
    sets: Box<[Mutex<[Entry; WAYS]>]>,
    seed: u64,
}

/// A seeded multiply-rotate hash over 64-bit words with a final avalanche
/// (MurmurHash3's fmix64): several times cheaper than SipHash, and enough
/// here: colliding keys only share a set, and an attacker who wanted fresh
/// accounts could as well ask for other names (BIND hashes the same way).
struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        if let Some(dst) = w.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.mix(u64::from_le_bytes(w) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, v: u8) {
        self.mix(u64::from(v));
    }

    fn write_u16(&mut self, v: u16) {
        self.mix(u64::from(v));
    }

    fn write_u32(&mut self, v: u32) {
        self.mix(u64::from(v));
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn finish(&self) -> u64 {
        crate::zone::fmix64(self.0)
    }
}

impl RateLimiter {
    /// A limiter with `config`, or `None` when `responses_per_second` is 0.
    pub fn new(config: RrlConfig) -> Option<Self> {
        if config.responses_per_second == 0 {
            return None;
        }
        let sets = config.table_size.div_ceil(WAYS).max(1);
        Some(RateLimiter {
            config,
            sets: (0..sets)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect(),
            // A per-process random seed, so that which keys share a set
            // cannot be worked out from outside.
            seed: RandomState::new().build_hasher().finish(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &RrlConfig {
        &self.config
    }

    /// Entries the table can hold.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Entries in use (for tests and statistics; locks every set).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.iter().filter(|e| e.key != 0).count(),
                Err(p) => p.into_inner().iter().filter(|e| e.key != 0).count(),
            })
            .sum()
    }

    /// Whether no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `client` is exempt.
    pub fn is_exempt(&self, client: IpAddr) -> bool {
        self.config.exempt.iter().any(|p| p.contains(client))
    }

    /// Accounts for `response` (a complete DNS message about to go to
    /// `client` over UDP) at `now_ms` (any monotonic clock) and says what
    /// to send. Unparsable responses count as errors.
    pub fn check(&self, now_ms: u64, client: IpAddr, response: &[u8]) -> Decision {
        if self.is_exempt(client) {
            return Decision::send(Kind::Error);
        }
        let (kind, name, qtype) = classify(response);
        let mut h = KeyHasher(self.seed);
        self.hash_network(&mut h, client);
        h.write_u8(kind as u8);
        if let Some(name) = name {
            hash_name(&mut h, response, name);
        }
        if kind == Kind::Response {
            h.write_u16(qtype);
        }
        // 0 marks an empty slot.
        let key = h.finish() | 1;
        self.debit(now_ms, key, kind)
    }

    fn hash_network(&self, h: &mut impl Hasher, client: IpAddr) {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        match client {
            IpAddr::V4(a) => {
                let bits = u32::from(self.config.ipv4_prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                h.write_u8(4);
                h.write_u32(u32::from(a) & mask);
            }
            IpAddr::V6(a) => {
                let bits = u32::from(self.config.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                h.write_u8(6);
                let net = u128::from(a) & mask;
                h.write_u64((net >> 64) as u64);
                h.write_u64(net as u64);
            }
        }
    }

    fn debit(&self, now_ms: u64, key: u64, kind: Kind) -> Decision {
        let set_count = self.sets.len() as u64;
        let Some(set) = self.sets.get(((key >> 32) % set_count) as usize) else {
            return Decision::send(kind);
        };
        let mut guard = match set.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let rate = i64::from(self.config.responses_per_second) * MILLI;
        let window_ms = u64::from(self.config.window_secs.max(1)) * 1000;
        let entries: &mut [Entry; WAYS] = &mut guard;
        // This key's entry, else an empty slot, else the least recently
        // used one (plain loops: this runs for every UDP answer).
        let mut found = None;
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (i, e) in entries.iter().enumerate() {
            if e.key == key {
                found = Some(i);
                break;
            }
            let age_key = if e.key == 0 { 0 } else { e.last_ms.max(1) };
            if age_key < oldest {
                oldest = age_key;
                victim = i;
            }
        }
        let e = match found.and_then(|i| entries.get_mut(i)) {
            Some(e) => e,
            None => {
                let Some(e) = entries.get_mut(victim) else {
                    return Decision::send(kind);
                };
                *e = Entry {
                    key,
                    balance: rate,
                    last_ms: now_ms,
                    slip_count: 0,
                    limiting: false,
                };
                e
            }
        };
        // Credit the time since the last response: `rate` a second, at
        // most one second's worth saved; a clock going backwards credits
        // nothing.
        let age = now_ms.saturating_sub(e.last_ms);
        if age >= window_ms {
            e.balance = rate;
        } else if age > 0 {
            let credit = i64::try_from(age)
                .unwrap_or(i64::MAX)
                .saturating_mul(i64::from(self.config.responses_per_second));
            e.balance = e.balance.saturating_add(credit).min(rate);
        }
        e.last_ms = e.last_ms.max(now_ms);
        e.balance -= MILLI;
        if e.balance >= 0 {
            e.limiting = false;
            e.slip_count = 0;
            return Decision::send(kind);
        }
        // BIND keeps at most `window` seconds of debt.
        let floor = -(rate.saturating_mul(i64::from(self.config.window_secs.max(1))));
        e.balance = e.balance.max(floor);
        let started = !e.limiting;
        e.limiting = true;
        if self.config.log_only {
            return Decision {
                action: Action::Send,
                kind,
                started,
                would_limit: true,
            };
        }
        let action = match self.config.slip {
            0 => Action::Drop,
            slip => {
                e.slip_count += 1;
                if e.slip_count >= slip {
                    e.slip_count = 0;
                    Action::Slip
                } else {
                    Action::Drop
                }
            }
        };
        Decision {
            action,
            kind,
            started,
            would_limit: true,
        }
    }
}

/// Rewrites `response` in place into its slipped form with TC set:
/// [`slip`] without a cookie to answer.
pub fn truncate(response: &mut Vec<u8>) -> bool {
    slip(response, false)
}

/// Rewrites `response` in place into its slipped form: the header, the
/// question and the OPT record (our EDNS, with the COOKIE option) kept,
/// every other record dropped. The client is told to ask again where it
/// cannot be spoofed:
///
/// * with `bad_cookie` (the query had a Client Cookie and no valid Server
///   Cookie of ours), as BADCOOKIE (RFC 7873 5.2.3, AA and AD clear): the
///   client repeats the query over UDP with the Server Cookie it has just
///   received, which is not rate-limited, as BIND does;
/// * otherwise with TC set (RFC 1035 section 4.1.1): it repeats it over
///   TCP. A response without an OPT record cannot carry BADCOOKIE and
///   gets TC too.
///
/// Returns false, leaving `response` unusable, when it has no readable
/// header or question.
pub fn slip(response: &mut Vec<u8>, bad_cookie: bool) -> bool {
    let end = match question_end(response) {
        Some(end) => end,
        None => return false,
    };
    let lean = find_opt(response, end).and_then(|r| lean_opt(response.get(r)?));
    response.truncate(end);
    if let Some((opt, len)) = &lean {
        response.extend_from_slice(opt.get(..*len).unwrap_or_default());
    }
    // RFC 6891 6.1.3: BADCOOKIE (23) is an extended RCODE: its low four
    // bits in the header, the rest in the OPT TTL's first octet, right
    // after the root owner, type and class.
    let bad_cookie = bad_cookie && lean.is_some();
    if let (Some(f1), true) = (response.get_mut(2), bad_cookie) {
        *f1 &= !0x06;
    } else if let Some(f1) = response.get_mut(2) {
        *f1 |= 0x02;
    }
    if bad_cookie {
        if let Some(f2) = response.get_mut(3) {
            *f2 = (*f2 & 0xd0) | (rcode::BADCOOKIE & 0xf) as u8;
        }
        if let Some(ext) = response.get_mut(end + 5) {
            *ext = (rcode::BADCOOKIE >> 4) as u8;
        }
    }
    // QDCOUNT stays; ANCOUNT and NSCOUNT become 0, ARCOUNT 1 with an OPT.
    if let Some(counts) = response.get_mut(6..12) {
        counts.copy_from_slice(&[0, 0, 0, 0, 0, u8::from(lean.is_some())]);
    }
    true
}

/// Our OPT record `opt` cut down for a slipped answer: its payload size,
/// version and flags, and of its options only the COOKIE (NSID or an
/// Extended DNS Error would make the slip, meant to be small, larger than
/// the query). The extended RCODE starts at 0. At most 55 octets.
fn lean_opt(opt: &[u8]) -> Option<([u8; 55], usize)> {
    let mut out = [0u8; 55];
    out.get_mut(..11)?.copy_from_slice(opt.get(..11)?);
    // Extended RCODE 0 (a BADCOOKIE sets it); RDLENGTH is set below.
    *out.get_mut(5)? = 0;
    let mut options = opt.get(11..)?;
    let mut len = 0usize;
    while let Some((code_len, more)) = options.split_first_chunk::<4>() {
        let [c0, c1, l0, l1] = *code_len;
        let olen = usize::from(u16::from_be_bytes([l0, l1]));
        let data = more.get(..olen)?;
        if u16::from_be_bytes([c0, c1]) == crate::cookie::OPTION_CODE && olen <= 40 {
            out.get_mut(11..15)?.copy_from_slice(code_len);
            out.get_mut(15..15 + olen)?.copy_from_slice(data);
            len = 4 + olen;
            break;
        }
        options = more.get(olen..)?;
    }
    out.get_mut(9..11)?
        .copy_from_slice(&(len as u16).to_be_bytes());
    Some((out, 11 + len))
}

/// Where the OPT record of `msg` is: in the additional section, owned by
/// the root (RFC 6891 6.1.1); `end` is where the question ends.
fn find_opt(msg: &[u8], end: usize) -> Option<std::ops::Range<usize>> {
    let count = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(at)?,
            *msg.get(at + 1)?,
        ])))
    };
    let (an, ns, ar) = (count(6)?, count(8)?, count(10)?);
    let mut pos = end;
    for i in 0..an + ns + ar {
        let start = pos;
        let at = skip_name(msg, pos)?;
        let fixed: [u8; 10] = msg.get(at..at + 10)?.try_into().ok()?;
        let [t0, t1, _, _, _, _, _, _, l0, l1] = fixed;
        let rtype = u16::from_be_bytes([t0, t1]);
        let rdlen = usize::from(u16::from_be_bytes([l0, l1]));
        pos = at + 10 + rdlen;
        if pos > msg.len() {
            return None;
        }
        if i >= an + ns && rtype == 41 && at == start + 1 && msg.get(start) == Some(&0) {
            return Some(start..pos);
        }
    }
    None
}

/// The end of the header and question section (QDCOUNT 0 or 1).
fn question_end(msg: &[u8]) -> Option<usize> {
    let qd = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    match qd {
        // A header is 12 octets (RFC 1035 section 4.1.1).
        0 => (msg.len() >= 12).then_some(12),
        1 => {
            let end = skip_name(msg, 12)?.checked_add(4)?;
            (end <= msg.len()).then_some(end)
        }
        _ => None,
    }
}

/// The offset just after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// Feeds the lowercased, decompressed name at `pos` to `h` (at most 128
/// labels, so a pointer loop ends), in one write: hashing byte by byte
/// would cost more than the rest of the accounting.
fn hash_name(h: &mut impl Hasher, msg: &[u8], mut pos: usize) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for _ in 0..128 {
        let Some(&len) = msg.get(pos) else { break };
        match len {
            0 => break,
            l if l & 0xc0 == 0xc0 => {
                let Some(&low) = msg.get(pos + 1) else { break };
                pos = usize::from(u16::from_be_bytes([l & 0x3f, low]));
            }
            l if l & 0xc0 == 0 => {
                let l = usize::from(l);
                let (Some(label), Some(dst)) = (msg.get(pos..=pos + l), buf.get_mut(n..=n + l))
                else {
                    break;
                };
                // The length octet, then the label (lengths are < 64, so
                // lowercasing leaves them alone).
                dst.copy_from_slice(label);
                dst.make_ascii_lowercase();
                n += 1 + l;
                pos += 1 + l;
            }
            _ => break,
        }
    }
    h.write(buf.get(..n).unwrap_or_default());
}

/// The class of `response` and the offset of the name that keys it: the
/// question name for answers, the first authority owner (the zone's SOA,
/// or the delegation's NS) for negative answers and referrals; and qtype.
fn classify(msg: &[u8]) -> (Kind, Option<usize>, u16) {
    let Some(&[_, _, flags, rc, qd0, qd1, an0, an1, ns0, ns1, _, _]) = msg.first_chunk::<12>()
    else {
        return (Kind::Error, None, 0);
    };
    let rc = u16::from(rc & 0x0f);
    let (qd, an, ns) = (
        u16::from_be_bytes([qd0, qd1]),
        u16::from_be_bytes([an0, an1]),
        u16::from_be_bytes([ns0, ns1]),
    );
    if qd != 1 || (rc != rcode::NOERROR && rc != rcode::NXDOMAIN) {
        return (Kind::Error, None, 0);
    }
    let Some(qend) = question_end(msg) else {
        return (Kind::Error, None, 0);
    };
    let qtype = match msg.get(qend.saturating_sub(4)..qend.saturating_sub(2)) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    };
    if rc == rcode::NOERROR && an > 0 {
        return (Kind::Response, Some(12), qtype);
    }
    // The first authority record follows the answers (none here).
    let authority = (ns > 0).then_some(qend);
    let kind = if rc == rcode::NXDOMAIN {
        Kind::NxDomain
    } else if flags & 0x04 != 0 {
        Kind::NoData
    } else {
        Kind::Referral
    };
    (kind, authority, qtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A response: header, question `name`/`qtype`, and `an` answers or an
    /// authority SOA at the zone `example.com` (compressed pointer).
    fn response(id: u16, name: &str, qtype: u16, flags: u8, rc: u8, an: u16, ns: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x80 | flags, rc]);
        for c in [1, an, ns, 0] {
            m.extend_from_slice(&c.to_be_bytes());
        }
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        let zone_at = 12 + name.find("example").unwrap_or(0);
        for _ in 0..an {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        for _ in 0..ns {
            m.extend_from_slice(&[0xc0 | (zone_at >> 8) as u8, zone_at as u8, 0, 6, 0, 1]);
            m.extend_from_slice(&[0, 0, 0, 60, 0, 2, 0, 0]);
        }
        m
    }

    fn answer(name: &str) -> Vec<u8> {
        response(7, name, 1, 0x04, 0, 1, 0)
    }

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RrlConfig {
            responses_per_second: rate,
            slip,
            ..RrlConfig::default()
        })
        .unwrap()
    }

    fn actions(l: &RateLimiter, now: u64, client: &str, msg: &[u8], n: usize) -> Vec<Action> {
        (0..n)
            .map(|_| l.check(now, ip(client), msg).action)
            .collect()
    }

    #[test]
    fn zero_rate_is_off() {
        assert!(RateLimiter::new(RrlConfig {
            responses_per_second: 0,
            ..RrlConfig::default()
        })
        .is_none());
    }

    #[test]
    fn rate_per_network_and_slip_sequence() {
        let l = limiter(5, 2);
        let msg = answer("www.example.com");
        let a = actions(&l, T, "198.51.100.7", &msg, 11);
        use Action::*;
        assert_eq!(
            a,
            [Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip, Drop, Slip]
        );
        // Another address of the same /24 shares the account...
        assert_eq!(l.check(T, ip("198.51.100.200"), &msg).action, Drop);
        // ...another /24 has its own, and so has another qname.
        assert_eq!(actions(&l, T, "198.51.101.7", &msg, 5), [Send; 5]);
        assert_eq!(
            l.check(T, ip("198.51.100.7"), &answer("mail.example.com"))
                .action,
            Send
        );
        // Case does not make a new key (RFC 4343).
        assert_ne!(
            l.check(T, ip("198.51.100.7"), &answer("WWW.example.COM"))
                .action,
            Send
        );
    }

    #[test]
    fn slip_zero_never_and_one_always() {
        let msg = answer("www.example.com");
        let l = limiter(1, 0);
        let a = actions(&l, T, "192.0.2.1", &msg, 4);
        assert_eq!(a, [Action::Send, Action::Drop, Action::Drop, Action::Drop]);
        let l = limiter(1, 1);
        let a = actions(&l, T, "192.0.2.1", &msg, 3);
        assert_eq!(a, [Action::Send, Action::Slip, Action::Slip]);
        let l = limiter(1, 3);
        let a = actions(&l, T, "192.0.2.1", &msg, 7);
        use Action::*;
        assert_eq!(a, [Send, Drop, Drop, Slip, Drop, Drop, Slip]);
    }

    #[test]
    fn credit_returns_with_time_and_debt_lasts_the_window() {
        let l = limiter(10, 0);
        let msg = answer("www.example.com");
        let c = "203.0.113.9";
        assert_eq!(actions(&l, T, c, &msg, 10), [Action::Send; 10]);
        assert_eq!(l.check(T, ip(c), &msg).action, Action::Drop);
        // Limited responses cost credit too (as in BIND): 200 ms later the
        // balance is back above zero for one response.
        assert_eq!(l.check(T + 100, ip(c), &msg).action, Action::Drop);
        assert_eq!(l.check(T + 300, ip(c), &msg).action, Action::Send);
        assert_eq!(l.check(T + 300, ip(c), &msg).action, Action::Drop);
        // A flood runs the balance down to -window * rate (150 here)...
        for _ in 0..1000 {
            let _ = l.check(T + 300, ip(c), &msg);
        }
        // ...so 14 s of silence are not enough, but a whole window is.
        assert_eq!(l.check(T + 300 + 14_000, ip(c), &msg).action, Action::Drop);
        assert_eq!(l.check(T + 300 + 29_200, ip(c), &msg).action, Action::Send);
        // Time going backwards credits nothing.
        let l = limiter(1, 0);
        assert_eq!(l.check(T, ip(c), &msg).action, Action::Send);
        assert_eq!(l.check(T - 5000, ip(c), &msg).action, Action::Drop);
    }

    #[test]
    fn kinds_and_keys() {
        let nx_a = response(1, "a.example.com", 1, 0x04, 3, 0, 1);
        let nx_b = response(1, "b.example.com", 28, 0x04, 3, 0, 1);
        let nodata = response(1, "www.example.com", 28, 0x04, 0, 0, 1);
        let referral = response(1, "x.sub.example.com", 1, 0, 0, 0, 1);
        let refused = response(1, "other.org", 1, 0, 5, 0, 0);
        assert_eq!(classify(&answer("www.example.com")).0, Kind::Response);
        assert_eq!(classify(&nx_a).0, Kind::NxDomain);
        assert_eq!(classify(&nodata).0, Kind::NoData);
        assert_eq!(classify(&referral).0, Kind::Referral);
        assert_eq!(classify(&refused).0, Kind::Error);
        assert_eq!(classify(b"\x00").0, Kind::Error);
        // NXDOMAIN is counted per zone: random names share one account.
        let l = limiter(2, 0);
        let c = "192.0.2.1";
        assert_eq!(l.check(T, ip(c), &nx_a).action, Action::Send);
        assert_eq!(l.check(T, ip(c), &nx_b).action, Action::Send);
        assert_eq!(l.check(T, ip(c), &nx_a).action, Action::Drop);
        // NODATA of the same zone is another class.
        assert_eq!(l.check(T, ip(c), &nodata).action, Action::Send);
        // Errors are per client network, whatever the name.
        let refused2 = response(1, "another.net", 1, 0, 5, 0, 0);
        assert_eq!(l.check(T, ip(c), &refused).action, Action::Send);
        assert_eq!(l.check(T, ip(c), &refused2).action, Action::Send);
        assert_eq!(l.check(T, ip(c), &refused).action, Action::Drop);
    }

    #[test]
    fn exempt_clients_and_ipv6_prefix() {
        let l = RateLimiter::new(RrlConfig {
            responses_per_second: 1,
            slip: 0,
            exempt: vec![Prefix::parse("192.0.2.0/24").unwrap()],
            ..RrlConfig::default()
        })
        .unwrap();
        let msg = answer("www.example.com");
        assert_eq!(actions(&l, T, "192.0.2.9", &msg, 50), [Action::Send; 50]);
        assert_eq!(
            actions(&l, T, "::ffff:192.0.2.9", &msg, 5),
            [Action::Send; 5]
        );
        assert!(l.is_empty(), "exempt clients take no table entry");
        // IPv6: one /56 shares an account; the next /56 does not.
        assert_eq!(l.check(T, ip("2001:db8:0:1::1"), &msg).action, Action::Send);
        assert_eq!(
            l.check(T, ip("2001:db8:0:ff::2"), &msg).action,
            Action::Drop
        );
        assert_eq!(
            l.check(T, ip("2001:db8:0:100::1"), &msg).action,
            Action::Send
        );
    }

    #[test]
    fn log_only_sends_but_reports_once() {
        let l = RateLimiter::new(RrlConfig {
            responses_per_second: 1,
            log_only: true,
            ..RrlConfig::default()
        })
        .unwrap();
        let msg = answer("www.example.com");
        let d: Vec<Decision> = (0..3).map(|_| l.check(T, ip("192.0.2.1"), &msg)).collect();
        assert!(d.iter().all(|d| d.action == Action::Send));
        assert_eq!(
            d.iter()
                .map(|d| (d.would_limit, d.started))
                .collect::<Vec<_>>(),
            [(false, false), (true, true), (true, false)]
        );
    }

    #[test]
    fn table_stays_bounded() {
        let l = RateLimiter::new(RrlConfig {
            responses_per_second: 1,
            table_size: 64,
            ..RrlConfig::default()
        })
        .unwrap();
        assert_eq!(l.capacity(), 64);
        for i in 0..10_000u32 {
            let msg = answer(&format!("n{i}.example.com"));
            assert_eq!(
                l.check(T + u64::from(i), ip("192.0.2.1"), &msg).action,
                Action::Send
            );
        }
        assert_eq!(l.len(), 64);
    }

    #[test]
    fn truncated_form_keeps_header_and_question() {
        let mut full = response(0xbeef, "www.example.com", 1, 0x04 | 0x01, 0, 2, 1);
        let q_end = 12 + 17 + 4;
        let original = full.clone();
        assert!(truncate(&mut full));
        assert_eq!(full.len(), q_end);
        assert_eq!(&full[..2], &original[..2], "ID kept");
        assert_eq!(full[2], original[2] | 0x02, "TC set, other flags kept");
        assert_eq!(full[3], original[3]);
        assert_eq!(&full[4..6], &[0, 1], "one question");
        assert_eq!(&full[6..12], &[0; 6], "no answer, authority, additional");
        assert_eq!(&full[12..], &original[12..q_end], "question kept");
        assert!(!truncate(&mut vec![0, 1, 2]));
        let mut no_question = vec![0u8; 12];
        assert!(truncate(&mut no_question));
        let mut cut = original[..20].to_vec();
        assert!(!truncate(&mut cut));
    }

    #[test]
    fn slipped_form_keeps_the_opt_and_says_badcookie_to_cookie_clients() {
        use hickory_proto::op::{Message, ResponseCode};
        // Two answers, one authority record, then our OPT with a cookie.
        let mut full = response(0xbeef, "www.example.com", 1, 0x04 | 0x01, 0, 2, 1);
        full[11] = 1;
        let opt_at = full.len();
        full.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 28, 0, 10, 0, 24]);
        full.extend_from_slice(&[0x5a; 24]);
        let opt = full[opt_at..].to_vec();
        let q_end = 12 + 17 + 4;

        let mut tc = full.clone();
        assert!(slip(&mut tc, false));
        assert_eq!(tc.len(), q_end + opt.len());
        assert_eq!(tc[2], full[2] | 0x02, "TC set, AA kept");
        assert_eq!(&tc[6..12], &[0, 0, 0, 0, 0, 1], "the OPT alone");
        assert_eq!(&tc[q_end..], &opt[..], "OPT and cookie kept");
        let m = Message::from_vec(&tc).unwrap();
        assert!(m.truncated());
        assert_eq!(m.response_code(), ResponseCode::NoError);

        let mut bad = full.clone();
        assert!(slip(&mut bad, true));
        assert_eq!(bad.len(), q_end + opt.len());
        assert_eq!(bad[2], (full[2] & !0x04), "AA clear, TC clear, RD kept");
        let m = Message::from_vec(&bad).unwrap();
        assert!(!m.truncated());
        assert_eq!(m.response_code(), ResponseCode::BADCOOKIE);
        assert_eq!(m.queries().len(), 1);
        assert!(m.answers().is_empty() && m.name_servers().is_empty());
        assert!(m.extensions().is_some());

        // NSID and an Extended DNS Error do not come along: a slip stays
        // small (here 300 octets of NSID would make it ten times the query).
        let mut big = response(0xbeef, "www.example.com", 1, 0x04, 0, 1, 0);
        big[11] = 1;
        big.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0]);
        big.extend_from_slice(&((4 + 300 + 6 + 28) as u16).to_be_bytes());
        big.extend_from_slice(&[0, 3, 1, 44]);
        big.extend_from_slice(&[b'n'; 300]);
        big.extend_from_slice(&[0, 15, 0, 2, 0, 20]);
        big.extend_from_slice(&[0, 10, 0, 24]);
        big.extend_from_slice(&[0x5a; 24]);
        assert!(slip(&mut big, true));
        assert_eq!(big.len(), q_end + opt.len());
        assert_eq!(&big[q_end..q_end + 5], &[0, 0, 41, 0x04, 0xd0]);
        assert_eq!(&big[q_end + 7..q_end + 11], &[0x80, 0, 0, 28]);
        assert_eq!(&big[q_end + 11..], &opt[11..]);
        assert_eq!(big[q_end + 5], 1, "BADCOOKIE's upper bits");
        // Without a COOKIE the OPT stays, empty.
        let mut plain_opt = response(0xbeef, "www.example.com", 1, 0x04, 0, 1, 0);
        plain_opt[11] = 1;
        plain_opt.extend_from_slice(&[
            0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 8, 0, 3, 0, 4, 1, 2, 3, 4,
        ]);
        assert!(slip(&mut plain_opt, false));
        assert_eq!(
            &plain_opt[q_end..],
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        );
        // No OPT: BADCOOKIE cannot be said; TC it is.
        let mut plain = response(0xbeef, "www.example.com", 1, 0x04, 0, 1, 0);
        assert!(slip(&mut plain, true));
        assert_eq!(plain.len(), q_end);
        assert_eq!(plain[2] & 0x02, 0x02);
        assert_eq!(plain[3] & 0x0f, 0);
        // An OPT not owned by the root is not ours to keep.
        let mut odd = full.clone();
        odd[opt_at] = 0xc0;
        odd.insert(opt_at + 1, 12);
        assert!(slip(&mut odd, true));
        assert_eq!(odd.len(), q_end);
    }

    proptest::proptest! {
        /// Any bytes (a response is ours, but the limiter must not trust
        /// it): no panic, and a slipped form is a header plus at most the
        /// question, with TC set and no records.
        #[test]
        fn arbitrary_responses_never_panic(msg in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let l = limiter(1, 1);
            let _ = l.check(T, ip("192.0.2.1"), &msg);
            let _ = l.check(T, ip("192.0.2.1"), &msg);
            let mut m = msg.clone();
            if truncate(&mut m) {
                proptest::prop_assert!(m.len() >= 12 && m.len() <= msg.len());
                proptest::prop_assert_eq!(m[2] & 0x02, 0x02);
                proptest::prop_assert_eq!(&m[6..11], &[0u8; 5][..]);
                proptest::prop_assert!(m[11] <= 1);
                proptest::prop_assert_eq!(&m[..2], &msg[..2]);
            }
            let mut m = msg.clone();
            if slip(&mut m, true) {
                proptest::prop_assert!(m.len() >= 12 && m.len() <= msg.len());
                proptest::prop_assert_eq!(&m[..2], &msg[..2]);
            }
        }
    }

    /// Cost of one `check` (`cargo test -p dns-zone --lib rrl_check_cost
    /// -- --ignored --nocapture`); timing, so not run by default.
    #[test]
    #[ignore]
    fn rrl_check_cost() {
        let l = limiter(100_000_000, 2);
        let msgs: Vec<Vec<u8>> = (0..64)
            .map(|i| answer(&format!("h{i}.example.com")))
            .collect();
        let n = 1_000_000u64;
        let start = std::time::Instant::now();
        for i in 0..n {
            let m = &msgs[(i % 64) as usize];
            let c = IpAddr::from([198, 51, (i % 251) as u8, 7]);
            assert_eq!(l.check(T + i / 1000, c, m).action, Action::Send);
        }
        let ns = start.elapsed().as_nanos() / u128::from(n);
        println!("rrl check: {ns} ns per response");
        let l = RateLimiter::new(RrlConfig {
            exempt: vec![
                Prefix::parse("127.0.0.0/8").unwrap(),
                Prefix::parse("::1").unwrap(),
            ],
            ..RrlConfig::default()
        })
        .unwrap();
        let start = std::time::Instant::now();
        for i in 0..n {
            let m = &msgs[(i % 64) as usize];
            assert_eq!(l.check(T, ip("127.0.0.1"), m).action, Action::Send);
        }
        let ns = start.elapsed().as_nanos() / u128::from(n);
        println!("rrl check, exempt client: {ns} ns per response");
    }

    #[test]
    fn hostile_names_end() {
        // A pointer loop in the authority owner and bogus label types.
        let mut m = response(1, "a.example.com", 1, 0x04, 3, 0, 1);
        let at = m.len() - 14;
        m[at] = 0xc0;
        m[at + 1] = at as u8;
        let l = limiter(1, 0);
        let _ = l.check(T, ip("192.0.2.1"), &m);
        let mut bad = m.clone();
        bad[12] = 0x80;
        assert_eq!(classify(&bad).0, Kind::Error);
        let _ = l.check(T, ip("192.0.2.1"), &bad);
    }
}
