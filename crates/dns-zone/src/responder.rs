//! Sans-I/O authoritative responder (RFC 1034 section 4.3.2).
//!
//! Query bytes and the transport in, response bytes out. The query is
//! read with a small strict reader (header, one question, EDNS OPT; the
//! other sections are only skipped, never decompressed, so pointer loops
//! cannot matter) and the answer is written straight from the RRsets'
//! prepared wire fragments, compressing owner names and the names in
//! the RDATA of the RFC 1035 types (RFC 3597 4).

use std::net::IpAddr;
use std::sync::Arc;

use crate::cookie::QueryCookie;
use crate::dnssec::{label_offsets, wildcard_of};
use crate::name::MAX_NAME_LEN;
use crate::tsig::{Checked, Key, RequestTsig, Signer};
use crate::types::{class, rtype};
use crate::zone::{Catalog, Node, RRset, Zone};

/// Extended DNS Error INFO-CODEs we send (RFC 8914 section 4), in the
/// OPT of answers to queries that had one.
pub mod ede {
    #![allow(missing_docs)]
    /// A secondary zone not transferred yet, or past its expiry.
    pub const NOT_READY: u16 = 14;
    /// A transfer or NOTIFY from a client the access lists do not name.
    pub const PROHIBITED: u16 = 18;
    /// A name in none of our zones.
    pub const NOT_AUTHORITATIVE: u16 = 20;
    /// A CHAOS query other than the server's identity and version.
    pub const NOT_SUPPORTED: u16 = 21;
}

/// Response codes (RFC 1035 4.1.1, RFC 6891 9, RFC 7873 8).
pub mod rcode {
    #![allow(missing_docs)]
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const YXDOMAIN: u16 = 6;
    pub const NOTAUTH: u16 = 9;
    pub const BADVERS: u16 = 16;
    /// RFC 7873 8.
    pub const BADCOOKIE: u16 = 23;
}

/// How the query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: answers are limited by the EDNS payload size (or 512).
    Udp,
    /// TCP: answers up to 65535 bytes; AXFR allowed.
    Tcp,
}

/// An address prefix, for the AXFR access list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// Parses `192.0.2.0/24`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max)?,
            None => max,
        };
        Some(Prefix { addr, len })
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A zone needing TSIG for transfers: (apex, key name), lowercased wire.
pub type TransferKey = (Box<[u8]>, Box<[u8]>);

/// Responder settings.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Largest UDP answer, whatever the requester offers (DNS Flag Day
    /// 2020 default: 1232).
    pub udp_payload_max: u16,
    /// Clients allowed to AXFR (over TCP).
    pub axfr_allow: Vec<Prefix>,
    /// TSIG keys (RFC 8945) signed requests are checked against.
    pub tsig_keys: Vec<Key>,
    /// Zones (lowercased wire apex) whose transfers need a TSIG with the
    /// named key (lowercased wire), besides `axfr_allow`.
    pub transfer_keys: Vec<TransferKey>,
    /// Secondary zones (lowercased wire apex) and the primaries whose
    /// NOTIFY they accept (RFC 1996 3.10).
    pub notify_allow: Vec<(Box<[u8]>, Vec<Prefix>)>,
    /// The name server identifier sent to queries that ask for it with
    /// an NSID option (RFC 5001); `None` sends none (at most 512 octets
    /// are sent).
    pub nsid: Option<Box<[u8]>>,
    /// The text of `CH TXT id.server` and `hostname.bind` (RFC 4892);
    /// `None` refuses them (at most 255 octets are sent).
    pub identity: Option<Box<[u8]>>,
    /// The text of `CH TXT version.server` and `version.bind`; `None`
    /// refuses them (at most 255 octets are sent).
    pub version: Option<Box<[u8]>>,
    /// The secret of our Server Cookies (RFC 7873, RFC 9018): a query
    /// with a COOKIE option gets its Client Cookie back with a Server
    /// Cookie made with it; `None` ignores COOKIE options (as NSD and
    /// Knot do by default). Servers behind one address share it.
    pub cookie_secret: Option<[u8; 16]>,
    /// Further secrets whose Server Cookies are accepted, never used for
    /// new ones: the secret being rolled in or out (RFC 9018 4.5; BIND's
    /// second `cookie-secret`, NSD's staging secret).
    pub cookie_secrets_accepted: Vec<[u8; 16]>,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            udp_payload_max: 1232,
            axfr_allow: vec![],
            tsig_keys: vec![],
            transfer_keys: vec![],
            notify_allow: vec![],
            nsid: None,
            identity: None,
            version: None,
            cookie_secret: None,
            cookie_secrets_accepted: vec![],
        }
    }
}

/// What a query's COOKIE option (RFC 7873) was worth, as the responder
/// judged it: what a host's rate limiter needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCheck {
    /// No usable Client Cookie, or cookies are off.
    None,
    /// A Client Cookie, and no Server Cookie of ours still fresh for
    /// this client: the address may be spoofed.
    Unverified,
    /// A Server Cookie we made for this client address (RFC 7873 5.2.4):
    /// the query comes from where it says.
    Valid,
}

/// The result of [`Responder::respond`].
#[derive(Debug)]
#[must_use]
pub struct Response {
    /// What to do.
    pub outcome: Outcome,
    /// The query's cookie, as checked.
    pub cookie: CookieCheck,
}

/// What to do with a query.
#[derive(Debug)]
#[must_use]
pub enum Outcome {
    /// Send nothing (garbage or a response packet).
    Drop,
    /// Send the bytes written to `out`.
    Reply,
    /// Zone transfer: send each message of [`Transfer::messages`] (or
    /// [`Transfer::each_message`]).
    Transfer(Box<Transfer>),
    /// A listed primary's NOTIFY for this secondary zone (lowercased wire
    /// apex): send the reply in `out`, then check the primary's SOA.
    Notify(Box<[u8]>),
}

/// A pending zone transfer: AXFR (RFC 5936: SOA, every other record,
/// SOA) or IXFR (RFC 1995: the differences since the client's serial, or
/// the whole zone AXFR-style when the history does not reach back).
#[derive(Debug)]
pub struct Transfer {
    zone: Arc<Zone>,
    id: u16,
    flags_rd: u8,
    question: Vec<u8>,
    /// Our OPT record, as written.
    opt: Option<Box<[u8]>>,
    /// IXFR: the client's serial.
    ixfr_from: Option<u32>,
    /// Signs every message when the request was signed (RFC 8945 5.3.1).
    signer: Option<Signer>,
}

/// How a transfer is answered (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// The whole zone (AXFR, or IXFR answered AXFR-style).
    Full,
    /// IXFR from the history (RFC 1995 4).
    Incremental,
    /// IXFR from a client as new as we are: one SOA (RFC 1995 2).
    UpToDate,
}

impl Transfer {
    /// The zone being transferred.
    pub fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    /// IXFR: the serial the client has.
    pub fn ixfr_from(&self) -> Option<u32> {
        self.ixfr_from
    }

    /// How [`messages`](Self::messages) will answer.
    pub fn kind(&self) -> TransferKind {
        let Some(from) = self.ixfr_from else {
            return TransferKind::Full;
        };
        let current = self.zone.serial().unwrap_or(0);
        if !crate::ixfr::serial_gt(current, from) {
            TransferKind::UpToDate
        } else if self.zone.diffs_since(from).is_some() {
            TransferKind::Incremental
        } else {
            TransferKind::Full
        }
    }

    /// Encodes the transfer as messages of about 16 KiB each (RFC 5936
    /// 2.2: many records per message), each signed when the request was.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        self.each_message(|m| {
            msgs.push(m);
            true
        });
        msgs
    }

    /// The messages of [`messages`](Self::messages) handed to `f` one by
    /// one as they are encoded, so that a host sends the first while the
    /// rest are built (a million-record zone is 40 MB; building it all
    /// first delays the first byte and holds it all). `f` returning
    /// false stops the encoding (the client has gone).
    pub fn each_message(&self, mut f: impl FnMut(Vec<u8>) -> bool) {
        let mut signer = self.signer.clone();
        let mut emit = |mut m: Vec<u8>| {
            if let Some(s) = &mut signer {
                s.sign(&mut m, 0, &[]);
            }
            f(m)
        };
        let zone = &*self.zone;
        match (self.kind(), self.ixfr_from) {
            (TransferKind::UpToDate, _) => {
                let Some(apex) = zone.node(zone.apex_key()) else {
                    return;
                };
                let Some(soa) = apex.rrset(rtype::SOA) else {
                    return;
                };
                let items = soa
                    .wire_records()
                    .map(|r| (zone.apex_key(), apex.name_wire(), r));
                self.pack(items, &mut emit);
            }
            (TransferKind::Incremental, Some(from)) => {
                let chain = zone.diffs_since(from).unwrap_or_default();
                let records = crate::ixfr::ixfr_records(chain);
                // The differences keep owners as written; compression
                // compares lowercased keys.
                let keys: Vec<Vec<u8>> = records
                    .iter()
                    .map(|(o, _)| o.to_ascii_lowercase())
                    .collect();
                let items = records
                    .iter()
                    .zip(&keys)
                    .map(|(&(o, r), k)| (k.as_slice(), o, r));
                self.pack(items, &mut emit);
            }
            _ => self.full(&mut emit),
        }
    }

    fn full(&self, emit: &mut dyn FnMut(Vec<u8>) -> bool) {
        let zone = &*self.zone;
        let apex = zone.apex_key();
        let Some(apex_node) = zone.node(apex) else {
            return;
        };
        let Some(soa) = apex_node.rrset(rtype::SOA) else {
            return;
        };
        let apex_name = apex_node.name_wire();
        let soa_recs = || soa.wire_records().map(move |r| (apex, apex_name, r));
        // RFC 5936 2.2: the SOA first, every other record, the SOA last.
        let apex_rest = apex_node
            .rrsets()
            .filter(|set| set.rtype != rtype::SOA)
            .flat_map(move |set| set.wire_records().map(move |r| (apex, apex_name, r)));
        let others = zone
            .nodes()
            .filter(move |(key, _)| *key != apex)
            .flat_map(|(key, node)| {
                let written = node.name_wire();
                node.rrsets()
                    .flat_map(move |set| set.wire_records().map(move |r| (key, written, r)))
            });
        self.pack(
            soa_recs().chain(apex_rest).chain(others).chain(soa_recs()),
            emit,
        );
    }

    /// (lowercased owner, owner as written, fragment) into messages, each
    /// handed to `emit` when full; at least one message.
    fn pack<'b>(
        &self,
        items: impl Iterator<Item = (&'b [u8], &'b [u8], &'b [u8])>,
        emit: &mut dyn FnMut(Vec<u8>) -> bool,
    ) {
        const SOFT_MAX: usize = 16 * 1024;
        let mut items = items.peekable();
        let mut first = true;
        loop {
            let mut w = Writer::new(Vec::with_capacity(SOFT_MAX + 1024));
            w.header(self.id, 0x84 | self.flags_rd, 0);
            if first {
                w.buf.extend_from_slice(&self.question);
                w.qd = 1;
                first = false;
            }
            while w.buf.len() <= SOFT_MAX {
                let Some((key, written, rec)) = items.next() else {
                    break;
                };
                w.rr(key, written, rec, None);
                w.an += 1;
            }
            if let Some(opt) = &self.opt {
                w.buf.extend_from_slice(opt);
                w.ar += 1;
            }
            w.patch_counts();
            if !emit(w.buf) || items.peek().is_none() {
                return;
            }
        }
    }
}

/// A cheap fingerprint of a (lowercased) wire name for the compression
/// search: its first 8 octets (the first label's length and start, where
/// names of one zone differ) mixed with its length; a few instructions,
/// no loop, as it is computed for every name of every answer.
fn tag(name: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(name) {
        // Lowercased: names in RDATA are kept as written (RFC 4343).
        *d = s.to_ascii_lowercase();
    }
    u64::from_le_bytes(b) ^ (name.len() as u64).rotate_right(8)
}

/// Where the names are in the RDATA of `rt`: (octets before the first
/// name, number of names in a row, whether they may be compressed).
/// RFC 3597 4: only the RFC 1035 types' names may be compressed; SRV's
/// target must not be (RFC 2782) but later names may point to it.
fn rdata_names(rt: u16) -> Option<(usize, usize, bool)> {
    match rt {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR (RFC 1035 3.3).
        rtype::NS | 3 | 4 | rtype::CNAME | 7 | 8 | 9 | rtype::PTR => Some((0, 1, true)),
        // SOA: MNAME, RNAME; MINFO: RMAILBX, EMAILBX.
        rtype::SOA | 14 => Some((0, 2, true)),
        rtype::MX => Some((2, 1, true)),
        rtype::SRV => Some((6, 1, false)),
        _ => None,
    }
}

/// Builds a message: header, sections, owner-name compression.
struct Writer<'a> {
    buf: Vec<u8>,
    /// Names already written, as (lowercased suffix, offset, its
    /// [`tag`]).
    names: Vec<(&'a [u8], u16, u64)>,
    /// The last owner written and where its whole name can be pointed
    /// to: records of one node follow each other (RRsets, a transfer),
    /// and such a repeat then needs no search of `names`.
    last: Option<(&'a [u8], u16)>,
    /// Compress the names inside RDATA too (answers; a transfer's
    /// records are written as stored).
    rdata_names: bool,
    qd: u16,
    an: u16,
    ns: u16,
    ar: u16,
}

impl<'a> Writer<'a> {
    fn new(buf: Vec<u8>) -> Self {
        Writer {
            buf,
            // An answer registers a dozen names or so (the question's
            // suffixes, owners, RDATA names): one allocation, not three.
            names: Vec::with_capacity(16),
            last: None,
            rdata_names: false,
            qd: 0,
            an: 0,
            ns: 0,
            ar: 0,
        }
    }

    fn header(&mut self, id: u16, flags1: u8, flags2: u8) {
        self.buf.clear();
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.buf.push(flags1);
        self.buf.push(flags2);
        self.buf.extend_from_slice(&[0; 8]);
    }

    fn patch_counts(&mut self) {
        let counts = [self.qd, self.an, self.ns, self.ar];
        for (i, c) in counts.iter().enumerate() {
            if let Some(dst) = self.buf.get_mut(4 + 2 * i..6 + 2 * i) {
                dst.copy_from_slice(&c.to_be_bytes());
            }
        }
    }

    /// Writes a name: `key` (lowercased) finds earlier suffixes to point
    /// to (RFC 1035 4.1.4); `written` is the case to emit.
    fn name(&mut self, key: &'a [u8], written: &'a [u8]) {
        if let Some((last, off)) = self.last {
            if last == key {
                self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes());
                return;
            }
        }
        let mut pos = 0usize;
        let hit = loop {
            let suffix = key.get(pos..).unwrap_or_default();
            // Keys and the suffixes kept are lowercased already, so a
            // byte comparison finds every case-insensitive match (RFC
            // 4343) at a fraction of the cost; it was most of an AXFR's.
            // The tag first: in a zone of names of one shape (h1234.x,
            // h1235.x) most entries have the same length, and a byte
            // comparison for each was most of an AXFR's CPU time.
            let t = tag(suffix);
            // Names from RDATA keep their case, hence the fallback.
            if let Some(&(_, off, _)) = self
                .names
                .iter()
                .find(|(n, _, nt)| *nt == t && (*n == suffix || n.eq_ignore_ascii_case(suffix)))
            {
                break Some(off);
            }
            match key.get(pos) {
                Some(&0) | None => break None,
                Some(&len) => pos += 1 + usize::from(len),
            }
        };
        let prefix_end = if hit.is_some() { pos } else { written.len() };
        let base = self.buf.len();
        // Where this whole name now is: a pointer's target when nothing
        // of it was written out, else here (if a pointer can reach it).
        self.last = match hit {
            Some(off) if pos == 0 => Some((key, off)),
            _ if base < 0x3fff => Some((key, base as u16)),
            _ => None,
        };
        // Remember the new suffixes for later names.
        let mut p = 0usize;
        while p < prefix_end {
            let off = base + p;
            if off < 0x3fff && self.names.len() < 64 {
                if let Some(sfx) = key.get(p..) {
                    self.names.push((sfx, off as u16, tag(sfx)));
                }
            }
            p += 1 + usize::from(*key.get(p).unwrap_or(&0));
            if key.get(p) == Some(&0) {
                break;
            }
        }
        self.buf
            .extend_from_slice(written.get(..prefix_end).unwrap_or_default());
        if let Some(off) = hit {
            self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes());
        }
    }

    /// Registers every suffix of the question's name (lowercased `key`,
    /// written at offset 12) for later names to point to.
    fn question_names(&mut self, key: &'a [u8]) {
        let mut p = 0usize;
        while let Some(&len) = key.get(p) {
            if len == 0 || self.names.len() >= 64 {
                break;
            }
            if let Some(sfx) = key.get(p..) {
                self.names.push((sfx, (12 + p) as u16, tag(sfx)));
            }
            p += 1 + usize::from(len);
        }
    }

    /// Writes one record: owner then the prepared fragment; a negative
    /// answer's SOA gets `ttl` instead (RFC 2308 3).
    fn rr(&mut self, key: &'a [u8], written: &'a [u8], rec: &'a [u8], ttl: Option<u32>) {
        self.name(key, written);
        let at = self.buf.len();
        if !(self.rdata_names && self.rdata(rec)) {
            self.buf.extend_from_slice(rec);
        }
        if let Some(t) = ttl {
            if let Some(dst) = self.buf.get_mut(at + 4..at + 8) {
                dst.copy_from_slice(&t.to_be_bytes());
            }
        }
    }

    /// Writes fragment `rec` with the names in its RDATA compressed
    /// (RFC 1035 4.1.4) and RDLENGTH adjusted; false, with nothing
    /// written, for a type without such names or RDATA that does not
    /// hold them. NSD, Knot and BIND do the same: an SOA is 24 octets
    /// shorter, a CNAME chain or an NS RRset with glue a third shorter.
    fn rdata(&mut self, rec: &'a [u8]) -> bool {
        let (Some(&t0), Some(&t1)) = (rec.first(), rec.get(1)) else {
            return false;
        };
        let Some((fixed, count, compress)) = rdata_names(u16::from_be_bytes([t0, t1])) else {
            return false;
        };
        let Some(rdata) = rec.get(10..) else {
            return false;
        };
        // Check the layout before writing anything: a name registered
        // for compression must stay in the message as written.
        let mut names = [(0usize, 0usize); 2];
        let mut pos = fixed;
        for slot in names.iter_mut().take(count) {
            let Some(len) = rdata.get(pos..).and_then(crate::name::wire_name_len) else {
                return false;
            };
            *slot = (pos, pos + len);
            pos += len;
        }
        let Some(head) = rec.get(..10 + fixed) else {
            return false;
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(head);
        // Owners of one RRset follow each other; keep their shortcut.
        let last = self.last;
        for &(from, to) in names.iter().take(count) {
            let name = rdata.get(from..to).unwrap_or_default();
            if compress {
                self.name(name, name);
            } else {
                self.remember(name);
            }
        }
        self.last = last;
        self.buf
            .extend_from_slice(rdata.get(pos..).unwrap_or_default());
        let rdlen = self.buf.len() - start - 10;
        match (
            u16::try_from(rdlen),
            self.buf.get_mut(start + 8..start + 10),
        ) {
            (Ok(n), Some(dst)) => dst.copy_from_slice(&n.to_be_bytes()),
            _ => {
                // Unreachable (compressed RDATA is never longer), but
                // nothing may point into what is taken back.
                self.buf.truncate(start);
                self.names.retain(|&(_, off, _)| usize::from(off) < start);
                return false;
            }
        }
        true
    }

    /// Writes `name` uncompressed, registering its suffixes as pointer
    /// targets for later names.
    fn remember(&mut self, name: &'a [u8]) {
        let base = self.buf.len();
        let mut p = 0usize;
        while let Some(&len) = name.get(p) {
            if len == 0 || self.names.len() >= 64 || base + p >= 0x3fff {
                break;
            }
            if let Some(sfx) = name.get(p..) {
                self.names.push((sfx, (base + p) as u16, tag(sfx)));
            }
            p += 1 + usize::from(len);
        }
        self.buf.extend_from_slice(name);
    }
}
/// The responder: a catalog of zones plus settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Responder {
    catalog: Arc<Catalog>,
    config: Arc<ResponderConfig>,
}

#[derive(Debug)]
struct Edns {
    payload: u16,
    version: u8,
    /// DO (RFC 3225): the client wants DNSSEC records.
    dnssec_ok: bool,
    /// The query has an NSID option (RFC 5001 2.1).
    nsid: bool,
    /// The query's COOKIE option (RFC 7873 4).
    cookie: Option<QueryCookie>,
    /// Our COOKIE option for the answer: the Client Cookie and a fresh
    /// Server Cookie (RFC 7873 5.2.3), when cookies are on.
    cookie_reply: Option<[u8; 24]>,
}

/// Our OPT record (RFC 6891 6.1.2) with its options.
#[derive(Debug, Clone, Copy)]
struct Opt<'c> {
    payload: u16,
    ext_rcode: u8,
    /// DO echoed (RFC 3225 3).
    dnssec_ok: bool,
    /// Our NSID, when the query asked for it (RFC 5001 2.2).
    nsid: Option<&'c [u8]>,
    /// Extended DNS Error INFO-CODE, no EXTRA-TEXT (RFC 8914 2).
    ede: Option<u16>,
    /// The Client Cookie and our Server Cookie (RFC 7873 5.2.3).
    cookie: Option<[u8; 24]>,
}

impl Opt<'_> {
    fn len(&self) -> usize {
        11 + self.nsid.map_or(0, |n| 4 + n.len())
            + self.ede.map_or(0, |_| 6)
            + self.cookie.map_or(0, |_| 28)
    }

    /// Without NSID and the Extended DNS Error when the reply would not
    /// fit in `limit` octets with them (`used` written so far): they give
    /// way before any record, as NSD leaves them out when the buffer has
    /// no room. The cookie stays (RFC 7873 5.2.3: the reply SHALL have
    /// it); header, question and a lean OPT always fit in 512 octets.
    fn fit(self, used: usize, limit: usize) -> Self {
        if used + self.len() <= limit {
            return self;
        }
        Opt {
            nsid: None,
            ede: None,
            ..self
        }
    }

    fn write(&self, buf: &mut Vec<u8>) {
        let size = self.payload.to_be_bytes();
        let flags = if self.dnssec_ok { 0x80 } else { 0 };
        let rdlen = u16::try_from(self.len() - 11).unwrap_or(0).to_be_bytes();
        buf.extend_from_slice(&[0, 0, 41, size[0], size[1], self.ext_rcode, 0, flags, 0]);
        buf.extend_from_slice(&rdlen);
        if let Some(n) = self.nsid {
            buf.extend_from_slice(&[0, 3]);
            buf.extend_from_slice(&u16::try_from(n.len()).unwrap_or(0).to_be_bytes());
            buf.extend_from_slice(n);
        }
        if let Some(code) = self.ede {
            buf.extend_from_slice(&[0, 15, 0, 2]);
            buf.extend_from_slice(&code.to_be_bytes());
        }
        if let Some(c) = &self.cookie {
            buf.extend_from_slice(&[0, 10, 0, 24]);
            buf.extend_from_slice(c);
        }
    }
}

#[derive(Debug)]
struct Query<'a> {
    id: u16,
    opcode: u8,
    rd: u8,
    cd: u8,
    /// Question bytes (name, type, class) as received.
    question: &'a [u8],
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
    /// The TSIG record, last in the message (RFC 8945 4.2).
    tsig: Option<RequestTsig<'a>>,
    /// IXFR: the serial of the SOA in the authority section (RFC 1995 3).
    ixfr_serial: Option<u32>,
}

enum ParseFail {
    /// No readable header, or a response: stay silent.
    Silent,
    /// Header readable, rest malformed.
    FormErr,
    /// No question (QDCOUNT 0) but the rest well formed, with the EDNS
    /// OPT if there was one: FORMERR with our OPT (RFC 6891 6.1.1).
    NoQuestion(Option<Edns>),
}

/// Largest number of CNAMEs followed inside a zone (loops end here).
const MAX_CHAIN: usize = 12;

impl Responder {
    /// Creates a responder.
    pub fn new(catalog: Arc<Catalog>, config: ResponderConfig) -> Self {
        Responder {
            catalog,
            config: Arc::new(config),
        }
    }

    /// The zones served.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The settings.
    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    /// Answers one query from `client`. `out` is cleared and holds the
    /// response when the outcome is [`Outcome::Reply`]. Without the time,
    /// a TSIG-signed query gets BADTIME and Server Cookies are stamped
    /// 1970 (never valid when returned): hosts that take signed queries
    /// or answer cookies call [`handle_at`](Self::handle_at).
    pub fn handle(
        &self,
        query: &[u8],
        transport: Transport,
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> Outcome {
        self.handle_at(query, transport, client, 0, out)
    }

    /// [`handle`](Self::handle) at `now` (seconds since 1970), for TSIG
    /// (RFC 8945): a signed query is checked (NOTAUTH with BADKEY, BADSIG
    /// or BADTIME when it fails) and its answer signed.
    pub fn handle_at(
        &self,
        query: &[u8],
        transport: Transport,
        client: IpAddr,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        self.respond(query, transport, client, now, out).outcome
    }

    /// [`handle_at`](Self::handle_at), also telling what the query's
    /// cookie was worth: a host applying response rate limiting spares a
    /// [`CookieCheck::Valid`] query (as BIND does) and slips a
    /// [`CookieCheck::Unverified`] one as BADCOOKIE
    /// ([`rrl::slip`](crate::rrl::slip)).
    pub fn respond(
        &self,
        query: &[u8],
        transport: Transport,
        client: IpAddr,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Response {
        let mut cookie = CookieCheck::None;
        let outcome = self.respond_inner(query, transport, client, now, out, &mut cookie);
        Response { outcome, cookie }
    }

    fn respond_inner(
        &self,
        query: &[u8],
        transport: Transport,
        client: IpAddr,
        now: u64,
        out: &mut Vec<u8>,
        cookie: &mut CookieCheck,
    ) -> Outcome {
        out.clear();
        let mut q = match parse_query(query) {
            Ok(q) => q,
            Err(ParseFail::Silent) => return Outcome::Drop,
            Err(ParseFail::FormErr) => {
                // RFC 1035 4.1.1: echo the ID, opcode and RD; no sections.
                let mut w = Writer::new(std::mem::take(out));
                let id = u16::from_be_bytes([
                    query.first().copied().unwrap_or(0),
                    query.get(1).copied().unwrap_or(0),
                ]);
                let flags1 = query.get(2).copied().unwrap_or(0);
                w.header(id, 0x80 | (flags1 & 0x79), rcode::FORMERR as u8);
                w.patch_counts();
                *out = w.buf;
                return Outcome::Reply;
            }
            Err(ParseFail::NoQuestion(mut edns)) => {
                // No question to answer; the OPT is answered with ours
                // (RFC 6891 6.1.1), BADVERS first like any query (6.1.3).
                // NSD answers such a query NOERROR, Knot and BIND as here.
                let mut w = Writer::new(std::mem::take(out));
                let id = u16::from_be_bytes([
                    query.first().copied().unwrap_or(0),
                    query.get(1).copied().unwrap_or(0),
                ]);
                let flags1 = query.get(2).copied().unwrap_or(0);
                // RFC 7873 5.4: a QUERY with no question but a Client
                // Cookie asks for a Server Cookie: NOERROR with it.
                *cookie = self.set_cookie_reply(&mut edns, client, now);
                let cookie_asked = flags1 & 0x78 == 0 && *cookie != CookieCheck::None;
                let (rc, ext) = match &edns {
                    Some(e) if e.version != 0 => (rcode::BADVERS, (rcode::BADVERS >> 4) as u8),
                    _ if cookie_asked => (rcode::NOERROR, 0),
                    _ => (rcode::FORMERR, 0),
                };
                w.header(id, 0x80 | (flags1 & 0x79), (rc & 0xf) as u8);
                if let Some(e) = &edns {
                    self.opt(e, ext, None)
                        .fit(w.buf.len(), 512)
                        .write(&mut w.buf);
                    w.ar = 1;
                }
                w.patch_counts();
                *out = w.buf;
                return Outcome::Reply;
            }
        };
        *cookie = self.set_cookie_reply(&mut q.edns, client, now);
        let limit = match transport {
            Transport::Tcp => 65_535,
            Transport::Udp => match &q.edns {
                // RFC 6891 6.2.5: below 512 counts as 512.
                Some(e) => usize::from(e.payload.clamp(512, self.config.udp_payload_max.max(512))),
                None => 512,
            },
        };
        let Some(t) = &q.tsig else {
            return self.answer(&q, transport, client, out, limit, None);
        };
        match crate::tsig::check(query, t, &self.config.tsig_keys, now) {
            Checked::Valid { key, mac } => {
                let mut signer = Signer::new(key, mac, now);
                // Room for our TSIG record (key name, algorithm, MAC).
                let limit = limit.saturating_sub(160);
                match self.answer(&q, transport, client, out, limit, Some(&signer)) {
                    Outcome::Reply => {
                        signer.sign(out, 0, &[]);
                        Outcome::Reply
                    }
                    Outcome::Transfer(mut x) => {
                        x.signer = Some(signer);
                        Outcome::Transfer(x)
                    }
                    other => other,
                }
            }
            Checked::Unsigned => self.answer(&q, transport, client, out, limit, None),
            Checked::Invalid {
                error,
                key_name,
                algorithm,
                signer,
            } => {
                // The reply carries no OPT, so no cookie: the verdict must
                // not promise one (a host would slip it as BADCOOKIE).
                *cookie = CookieCheck::None;
                // RFC 8945 5.2: NOTAUTH, the TSIG error in our TSIG record;
                // BADTIME signed, with our time as other data.
                let mut w = Writer::new(std::mem::take(out));
                w.header(
                    q.id,
                    0x80 | (q.opcode << 3) | q.rd,
                    crate::tsig::error::NOTAUTH as u8,
                );
                w.buf.extend_from_slice(q.question);
                w.qd = 1;
                w.patch_counts();
                *out = w.buf;
                match signer {
                    Some((key, mac)) => {
                        let now48 = now.to_be_bytes();
                        Signer::new(key, mac, now).sign(
                            out,
                            error,
                            now48.get(2..).unwrap_or_default(),
                        );
                    }
                    None => {
                        crate::tsig::append_unsigned_error(out, &key_name, &algorithm, now, error)
                    }
                }
                Outcome::Reply
            }
        }
    }

    fn answer(
        &self,
        q: &Query<'_>,
        transport: Transport,
        client: IpAddr,
        out: &mut Vec<u8>,
        limit: usize,
        signed: Option<&Signer>,
    ) -> Outcome {
        let signed_by = signed.map(|s| s.key_name().to_vec());
        // Lowercased question name (RFC 4343).
        let qname = q
            .question
            .get(..q.question.len().saturating_sub(4))
            .unwrap_or_default();
        let mut lc_buf = [0u8; MAX_NAME_LEN];
        let lc: &[u8] = match lc_buf.get_mut(..qname.len()) {
            Some(dst) => {
                dst.copy_from_slice(qname);
                dst.make_ascii_lowercase();
                dst
            }
            None => &[],
        };
        // Room for the CNAMEs DNAMEs synthesize; allocated only then.
        let mut synth = Vec::new();
        let mut w = Writer::new(std::mem::take(out));
        w.rdata_names = true;
        let outcome = self.answer_with(
            q,
            transport,
            client,
            &mut w,
            limit,
            lc,
            signed_by.as_deref(),
            &mut synth,
        );
        *out = w.buf;
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_with<'a>(
        &'a self,
        q: &Query<'_>,
        transport: Transport,
        client: IpAddr,
        w: &mut Writer<'a>,
        limit: usize,
        lc: &'a [u8],
        signed_by: Option<&[u8]>,
        synth: &'a mut Vec<u8>,
    ) -> Outcome {
        let do_bit = q.edns.as_ref().is_some_and(|e| e.dnssec_ok);
        let opt = q.edns.as_ref().map(|e| self.opt(e, 0, None));
        // An answer with no records: the question, and our OPT when the
        // query had one, with the Extended DNS Error if any (RFC 8914).
        let simple = |w: &mut Writer<'a>, rc: u16, ext: u8, ede: Option<u16>| {
            w.header(q.id, 0x80 | (q.opcode << 3) | q.rd, (rc & 0xf) as u8 | q.cd);
            w.buf.extend_from_slice(q.question);
            w.qd = 1;
            if let Some(e) = &q.edns {
                self.opt(e, ext, ede)
                    .fit(w.buf.len(), limit)
                    .write(&mut w.buf);
                w.ar = 1;
            }
            w.patch_counts();
            Outcome::Reply
        };
        if let Some(e) = &q.edns {
            if e.version != 0 {
                // RFC 6891 6.1.3: BADVERS, upper RCODE bits in the OPT TTL.
                return simple(w, rcode::BADVERS, (rcode::BADVERS >> 4) as u8, None);
            }
            if self.config.cookie_secret.is_some() && e.cookie == Some(QueryCookie::Malformed) {
                // RFC 7873 5.2.2.
                return simple(w, rcode::FORMERR, 0, None);
            }
        }
        if q.opcode == 4 {
            // RFC 1996 3.7: a NOTIFY for one of our secondary zones, from
            // one of its primaries, is acknowledged; the host refreshes.
            if let Some((apex, from)) = self.config.notify_allow.iter().find(|(a, _)| **a == *lc) {
                // With a zone key, the NOTIFY must be signed with it.
                let key_ok = self
                    .config
                    .transfer_keys
                    .iter()
                    .find(|(a, _)| **a == **apex)
                    .is_none_or(|(_, key)| signed_by == Some(&**key));
                if q.qtype != rtype::SOA || !key_ok || !from.iter().any(|p| p.contains(client)) {
                    return simple(w, rcode::REFUSED, 0, Some(ede::PROHIBITED));
                }
                w.header(q.id, 0x80 | (4 << 3) | 0x04 | q.rd, 0);
                w.buf.extend_from_slice(q.question);
                w.qd = 1;
                if let Some(opt) = opt {
                    opt.fit(w.buf.len(), limit).write(&mut w.buf);
                    w.ar = 1;
                }
                w.patch_counts();
                return Outcome::Notify(apex.clone());
            }
        }
        if q.opcode == 4 {
            // A NOTIFY for a zone we are primary of, or do not serve: we
            // take none from anyone (NSD: REFUSED; RFC 1996 leaves it open).
            let ede = if self.catalog.find(lc).is_some() {
                ede::PROHIBITED
            } else {
                ede::NOT_AUTHORITATIVE
            };
            return simple(w, rcode::REFUSED, 0, Some(ede));
        }
        if q.opcode != 0 {
            // UPDATE, IQUERY, STATUS...: not implemented.
            return simple(w, rcode::NOTIMP, 0, None);
        }
        match q.qtype {
            rtype::MAILA | rtype::MAILB => return simple(w, rcode::NOTIMP, 0, None),
            rtype::OPT | rtype::TSIG => return simple(w, rcode::FORMERR, 0, None),
            // RFC 5936 4.2: AXFR is a TCP-only exchange (NSD and Knot:
            // NOTIMP, whatever the name).
            rtype::AXFR if transport == Transport::Udp => return simple(w, rcode::NOTIMP, 0, None),
            _ => {}
        }
        let catalog: &'a Catalog = &self.catalog;
        let mut found = catalog.find(lc);
        if q.qtype == rtype::DS {
            // RFC 4035 3.1.4.1: DS is the parent side's record. When we
            // serve both sides of the cut, the parent zone answers.
            if let Some(parent) = found
                .filter(|z| z.apex_key() == lc)
                .and_then(|z| Some((z, catalog.find(crate::name::parent(lc)?)?)))
                .filter(|(z, p)| p.class() == z.class() && !p.is_expired())
                .map(|(_, p)| p)
                .filter(|p| is_cut_of(p, lc))
            {
                found = Some(parent);
            }
        }
        let zone: &'a Arc<Zone> = match found {
            Some(z)
                if q.qclass == z.class() || (q.qclass == class::ANY && q.qtype != rtype::AXFR) =>
            {
                z
            }
            // A secondary zone not transferred yet: ours, but nothing to
            // serve (BIND answers SERVFAIL too).
            None if self
                .config
                .notify_allow
                .iter()
                .any(|(apex, _)| crate::name::is_subdomain(lc, apex)) =>
            {
                return simple(w, rcode::SERVFAIL, 0, Some(ede::NOT_READY))
            }
            // The server's name and version, as NSD, Knot and BIND answer
            // them (RFC 4892 2).
            _ if q.qclass == class::CH => {
                let text = match lc {
                    b"\x02id\x06server\x00" | b"\x08hostname\x04bind\x00" => &self.config.identity,
                    b"\x07version\x06server\x00" | b"\x07version\x04bind\x00" => {
                        &self.config.version
                    }
                    _ => return simple(w, rcode::REFUSED, 0, Some(ede::NOT_SUPPORTED)),
                };
                // The type first, as NSD checks it.
                if q.qtype != rtype::TXT && q.qtype != rtype::ANY {
                    return simple(w, rcode::REFUSED, 0, Some(ede::NOT_SUPPORTED));
                }
                let Some(text) = text else {
                    return simple(w, rcode::REFUSED, 0, Some(ede::PROHIBITED));
                };
                chaos_txt(w, q, text, opt, limit);
                return Outcome::Reply;
            }
            // A transfer of a zone we do not serve: NSD, Knot and BIND
            // all say NOTAUTH (RFC 5936 2.2.1 names no code).
            _ if matches!(q.qtype, rtype::AXFR | rtype::IXFR) => {
                return simple(w, rcode::NOTAUTH, 0, None)
            }
            // Not ours: no recursion, RA clear.
            _ => return simple(w, rcode::REFUSED, 0, Some(ede::NOT_AUTHORITATIVE)),
        };
        if zone.is_expired() {
            // A secondary zone past its SOA expire (RFC 1035 4.3.5).
            return simple(w, rcode::SERVFAIL, 0, Some(ede::NOT_READY));
        }
        if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
            if lc != zone.apex_key() {
                // Not a zone's name: NOTAUTH, as NSD, Knot and BIND say.
                return simple(w, rcode::NOTAUTH, 0, None);
            }
            if q.qtype == rtype::IXFR && q.ixfr_serial.is_none() {
                // RFC 1995 3: an IXFR query carries the client's SOA.
                return simple(w, rcode::FORMERR, 0, None);
            }
            // IXFR has AXFR's access list (BIND's allow-transfer), and
            // the zone's TSIG key when it has one.
            let key_ok = self
                .config
                .transfer_keys
                .iter()
                .find(|(apex, _)| **apex == *zone.apex_key())
                .is_none_or(|(_, key)| signed_by == Some(&**key));
            if !key_ok || !self.config.axfr_allow.iter().any(|p| p.contains(client)) {
                return simple(w, rcode::REFUSED, 0, Some(ede::PROHIBITED));
            }
            if transport == Transport::Udp {
                // RFC 1995 2: over UDP, the current SOA tells the client
                // to come back over TCP (or that it is up to date).
                w.header(q.id, 0x84 | q.rd, q.cd);
                w.buf.extend_from_slice(q.question);
                w.qd = 1;
                w.question_names(lc);
                let mut s = Sections::default();
                if let Some((k, node)) = zone.node_entry(zone.apex_key()) {
                    if let Some(soa) = node.rrset(rtype::SOA) {
                        s.answer.push(((k, node.name_wire()), soa));
                    }
                }
                render(w, zone, &s, rcode::NOERROR, true, limit, opt, false);
                return Outcome::Reply;
            }
            return Outcome::Transfer(Box::new(Transfer {
                zone: zone.clone(),
                id: q.id,
                flags_rd: q.rd,
                question: q.question.to_vec(),
                opt: opt.map(|o| {
                    let mut b = Vec::with_capacity(o.len());
                    o.write(&mut b);
                    b.into()
                }),
                ixfr_from: if q.qtype == rtype::IXFR {
                    q.ixfr_serial
                } else {
                    None
                },
                signer: None,
            }));
        }
        w.header(q.id, 0x80 | q.rd, q.cd);
        w.buf.extend_from_slice(q.question);
        w.qd = 1;
        w.question_names(lc);
        // RFC 4035 3.1: DNSSEC records only when the query has DO.
        let sec = do_bit && zone.is_signed();
        let (rc, aa, sections) =
            resolve(zone, lc, q.qtype, transport == Transport::Udp, sec, synth);
        render(w, zone, &sections, rc, aa, limit, opt, sec);
        Outcome::Reply
    }

    /// RFC 7873 5.2.3/5.2.4: with cookies on and a Client Cookie in the
    /// query, our COOKIE option for the answer: the Client Cookie with a
    /// fresh Server Cookie, whether or not the one sent was valid. Returns
    /// what the one sent was worth.
    fn set_cookie_reply(&self, edns: &mut Option<Edns>, client: IpAddr, now: u64) -> CookieCheck {
        let (Some(secret), Some(e)) = (&self.config.cookie_secret, edns) else {
            return CookieCheck::None;
        };
        let Some(sent) = e.cookie else {
            return CookieCheck::None;
        };
        let Some(cc) = sent.client() else {
            return CookieCheck::None;
        };
        let mut r = [0u8; 24];
        r[..8].copy_from_slice(&cc);
        r[8..].copy_from_slice(&crate::cookie::server_cookie(secret, &cc, client, now));
        e.cookie_reply = Some(r);
        let valid = std::iter::once(secret)
            .chain(&self.config.cookie_secrets_accepted)
            .any(|s| sent.is_valid(s, client, now));
        if valid {
            CookieCheck::Valid
        } else {
            CookieCheck::Unverified
        }
    }

    /// Our OPT record for a query with `edns`.
    fn opt(&self, edns: &Edns, ext_rcode: u8, ede: Option<u16>) -> Opt<'_> {
        Opt {
            payload: self.config.udp_payload_max.max(512),
            ext_rcode,
            dnssec_ok: edns.dnssec_ok,
            nsid: self
                .config
                .nsid
                .as_deref()
                .filter(|_| edns.nsid)
                .map(|n| n.get(..512).unwrap_or(n)),
            ede,
            cookie: edns.cookie_reply,
        }
    }
}

/// The answer to a CHAOS TXT query for the server's name or version: one
/// TXT record, TTL 0, owner the question's name, not authoritative (as
/// NSD, Knot and BIND send it).
fn chaos_txt(w: &mut Writer<'_>, q: &Query<'_>, text: &[u8], opt: Option<Opt<'_>>, limit: usize) {
    let text = text.get(..255).unwrap_or(text);
    w.header(q.id, 0x80 | q.rd, q.cd);
    w.buf.extend_from_slice(q.question);
    w.qd = 1;
    // Owner: a pointer to the question name (offset 12).
    w.buf
        .extend_from_slice(&[0xc0, 12, 0, 16, 0, 3, 0, 0, 0, 0]);
    let len = text.len() as u8;
    w.buf.extend_from_slice(&(u16::from(len) + 1).to_be_bytes());
    w.buf.push(len);
    w.buf.extend_from_slice(text);
    w.an = 1;
    // The question is one of four short names and the text at most 255
    // octets: without options this fits the 512 octets every client takes.
    if let Some(opt) = opt {
        opt.fit(w.buf.len(), limit).write(&mut w.buf);
        w.ar = 1;
    }
    w.patch_counts();
}

/// Writes an RRset and, with DNSSEC, its RRSIGs right after it (RFC 4035
/// 3.1.1); returns the number of records written.
fn write_set<'a>(
    w: &mut Writer<'a>,
    owner: Owner<'a>,
    set: &RRset<'a>,
    ttl: Option<u32>,
    sec: bool,
) -> u16 {
    let mut n = 0u16;
    for rec in set.wire_records() {
        w.rr(owner.0, owner.1, rec, ttl);
        n += 1;
    }
    if sec {
        for rec in set.signatures() {
            w.rr(owner.0, owner.1, rec, ttl);
            n += 1;
        }
    }
    n
}

#[allow(clippy::too_many_arguments)]
fn render<'a>(
    w: &mut Writer<'a>,
    zone: &'a Zone,
    s: &Sections<'a>,
    rc: u16,
    aa: bool,
    limit: usize,
    opt: Option<Opt<'_>>,
    sec: bool,
) {
    let neg_ttl = zone.negative_ttl();
    for (owner, set) in &s.answer {
        w.an += write_set(w, *owner, set, None, sec);
    }
    for (owner, set, negative) in &s.authority {
        w.ns += write_set(w, *owner, set, negative.then_some(neg_ttl), sec);
    }
    let main_end = w.buf.len();
    // The OPT's options give way before the answer and authority do.
    let opt = opt.map(|o| o.fit(main_end, limit));
    let opt_len = opt.map_or(0, |o| o.len());
    // Additional data is dropped RRset by RRset, never separating an
    // RRset from its signatures.
    let mut ends_ar: Vec<(usize, u16)> = Vec::new();
    for (owner, set) in &s.additional {
        w.ar += write_set(w, *owner, set, None, sec);
        ends_ar.push((w.buf.len(), w.ar));
    }
    let mut tc = false;
    if w.buf.len() + opt_len > limit {
        if main_end + opt_len <= limit {
            // RFC 2181 9: additional data may be dropped without TC.
            let keep = ends_ar
                .iter()
                .rev()
                .find(|(end, _)| end + opt_len <= limit)
                .copied()
                .unwrap_or((main_end, 0));
            // RFC 9471: a referral missing glue must make the client retry.
            tc = s.referral && keep.1 < w.ar;
            w.buf.truncate(keep.0);
            w.ar = keep.1;
        } else {
            // Clean truncation: header and question only, TC set, so the
            // client retries over TCP (RFC 7766 5).
            let qend = 12 + question_len(&w.buf);
            w.buf.truncate(qend);
            w.an = 0;
            w.ns = 0;
            w.ar = 0;
            tc = true;
        }
    }
    if let Some(opt) = opt {
        opt.write(&mut w.buf);
        w.ar += 1;
    }
    if let Some(b) = w.buf.get_mut(2) {
        *b |= u8::from(aa) << 2 | u8::from(tc) << 1;
    }
    if let Some(b) = w.buf.get_mut(3) {
        *b |= (rc & 0xf) as u8;
    }
    w.patch_counts();
}

/// Reads a query: header, exactly one question, then skips the other
/// sections, picking up the EDNS OPT record (RFC 6891).
fn parse_query(msg: &[u8]) -> Result<Query<'_>, ParseFail> {
    let header = msg.get(..12).ok_or(ParseFail::Silent)?;
    let [id0, id1, f1, f2, qd0, qd1, an0, an1, ns0, ns1, ar0, ar1] =
        <[u8; 12]>::try_from(header).map_err(|_| ParseFail::Silent)?;
    if f1 & 0x80 != 0 {
        // A response: never answer it (avoids reflection loops).
        return Err(ParseFail::Silent);
    }
    let qdcount = u16::from_be_bytes([qd0, qd1]);
    let ancount = u16::from_be_bytes([an0, an1]);
    let nscount = u16::from_be_bytes([ns0, ns1]);
    let arcount = u16::from_be_bytes([ar0, ar1]);
    let opcode = (f1 >> 3) & 0xf;
    if qdcount > 1 {
        return Err(ParseFail::FormErr);
    }
    // The question name: plain labels only (a pointer here could only
    // point into the header).
    let mut p = 12usize;
    let tc: [u8; 4] = if qdcount == 1 {
        loop {
            let len = *msg.get(p).ok_or(ParseFail::FormErr)?;
            if len & 0xc0 != 0 {
                return Err(ParseFail::FormErr);
            }
            p += 1 + usize::from(len);
            if p - 12 > MAX_NAME_LEN {
                return Err(ParseFail::FormErr);
            }
            if len == 0 {
                break;
            }
        }
        let tc = msg
            .get(p..p + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(ParseFail::FormErr)?;
        p += 4;
        tc
    } else {
        [0; 4]
    };
    let qtype = u16::from_be_bytes([tc[0], tc[1]]);
    let qclass = u16::from_be_bytes([tc[2], tc[3]]);
    let question = msg.get(12..p).ok_or(ParseFail::FormErr)?;
    if opcode == 0 && ancount != 0 {
        return Err(ParseFail::FormErr);
    }
    let mut edns = None;
    let mut tsig = None;
    let mut ixfr_serial = None;
    let total = u32::from(ancount) + u32::from(nscount) + u32::from(arcount);
    for i in 0..total {
        let in_additional = i >= u32::from(ancount) + u32::from(nscount);
        let name_start = p;
        // Skip the owner name without following pointers.
        loop {
            let len = *msg.get(p).ok_or(ParseFail::FormErr)?;
            match len & 0xc0 {
                0x00 => {
                    p += 1 + usize::from(len);
                    if len == 0 {
                        break;
                    }
                }
                0xc0 => {
                    p += 2;
                    break;
                }
                _ => return Err(ParseFail::FormErr),
            }
            if p - name_start > MAX_NAME_LEN {
                return Err(ParseFail::FormErr);
            }
        }
        let fixed: [u8; 10] = msg
            .get(p..p + 10)
            .and_then(|s| s.try_into().ok())
            .ok_or(ParseFail::FormErr)?;
        let rt = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rclass = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = [fixed[4], fixed[5], fixed[6], fixed[7]];
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        p += 10;
        let rdata = msg.get(p..p + rdlen).ok_or(ParseFail::FormErr)?;
        p += rdlen;
        let in_authority = !in_additional && i >= u32::from(ancount);
        if rt == rtype::SOA && in_authority && ixfr_serial.is_none() {
            // The serial sits 20 octets from the end whatever the names'
            // compression.
            ixfr_serial = rdata
                .len()
                .checked_sub(20)
                .and_then(|at| rdata.get(at..at + 4))
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes);
        }
        if tsig.is_some() {
            // RFC 8945 5.1: the TSIG must be the last record.
            return Err(ParseFail::FormErr);
        }
        if rt == rtype::TSIG {
            if !in_additional {
                return Err(ParseFail::FormErr);
            }
            tsig =
                Some(crate::tsig::parse_request(msg, name_start, rdata).ok_or(ParseFail::FormErr)?);
        }
        if rt == rtype::OPT {
            // RFC 6891 6.1.1: one OPT, owner is the root, additional section only.
            if !in_additional
                || edns.is_some()
                || msg.get(name_start) != Some(&0)
                || p - rdlen - 10 - name_start != 1
            {
                return Err(ParseFail::FormErr);
            }
            // Options must tile the RDATA exactly.
            let mut o = 0usize;
            let mut nsid = false;
            let mut cookie = None;
            while o < rdata.len() {
                let h: [u8; 4] = rdata
                    .get(o..o + 4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(ParseFail::FormErr)?;
                let code = u16::from_be_bytes([h[0], h[1]]);
                let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
                nsid |= code == 3;
                if code == crate::cookie::OPTION_CODE && cookie.is_none() {
                    // RFC 7873 5.2: only the first COOKIE option counts.
                    cookie = rdata.get(o + 4..o + 4 + len).map(QueryCookie::parse);
                }
                o += 4 + len;
            }
            if o != rdata.len() {
                return Err(ParseFail::FormErr);
            }
            edns = Some(Edns {
                payload: rclass,
                version: ttl[1],
                dnssec_ok: ttl[2] & 0x80 != 0,
                nsid,
                cookie,
                cookie_reply: None,
            });
        }
    }
    if p != msg.len() {
        return Err(ParseFail::FormErr);
    }
    if qdcount == 0 {
        return Err(ParseFail::NoQuestion(edns));
    }
    Ok(Query {
        id: u16::from_be_bytes([id0, id1]),
        opcode,
        rd: f1 & 0x01,
        cd: f2 & 0x10,
        question,
        qtype,
        qclass,
        edns,
        tsig,
        ixfr_serial,
    })
}

fn question_len(buf: &[u8]) -> usize {
    crate::name::wire_name_len(buf.get(12..).unwrap_or_default()).map_or(0, |l| l + 4)
}

/// (lowercased key for compression, name as written)
type Owner<'a> = (&'a [u8], &'a [u8]);

#[derive(Default)]
struct Sections<'a> {
    answer: Vec<(Owner<'a>, RRset<'a>)>,
    /// (owner, rrset, is the negative-answer SOA)
    authority: Vec<(Owner<'a>, RRset<'a>, bool)>,
    additional: Vec<(Owner<'a>, RRset<'a>)>,
    /// The answer ends in a referral (possibly after a CNAME or DNAME).
    referral: bool,
}

/// RFC 1034 4.3.2 steps 3 and 4 inside one zone, with RFC 4592 wildcards.
fn resolve<'a>(
    zone: &'a Zone,
    qlc: &'a [u8],
    qtype: u16,
    any_minimal: bool,
    sec: bool,
    synth: &'a mut Vec<u8>,
) -> (u16, bool, Sections<'a>) {
    let mut s = Sections::default();
    // Synthesized CNAMEs are cut from `synth`, sized when first needed.
    let mut synth = Some(synth);
    let mut free: &'a mut [u8] = &mut [];
    let apex_labels = zone.apex_labels();
    let apex_key = zone.apex_key();
    let soa_auth = |s: &mut Sections<'a>| {
        if let Some((k, node)) = zone.node_entry(apex_key) {
            if let Some(soa) = node.rrset(rtype::SOA) {
                s.authority.push(((k, node.name_wire()), soa, true));
            }
        }
    };
    // The name being looked up (lowercased): the question, then CNAME targets.
    let mut buf = [0u8; MAX_NAME_LEN];
    let mut cur_len = qlc.len();
    if let Some(dst) = buf.get_mut(..cur_len) {
        dst.copy_from_slice(qlc);
    }
    let mut cur_owner: Owner<'a> = (qlc, qlc);
    let mut chain = 0usize;
    let mut offs = [0u8; 128];
    loop {
        let cur = buf.get(..cur_len).unwrap_or_default();
        let n = label_offsets(cur, &mut offs);
        let suffix = |j: usize| -> usize {
            if j == 0 {
                cur_len.saturating_sub(1)
            } else {
                usize::from(offs.get(n - j).copied().unwrap_or(0))
            }
        };
        // Walk down from the apex: a zone cut wins over anything below it.
        let mut found: Option<(&'a [u8], Node<'a>)> = None;
        let mut closest = suffix(apex_labels.min(n));
        let mut referral: Option<(&'a [u8], Node<'a>)> = None;
        let mut dname: Option<(usize, Owner<'a>, RRset<'a>)> = None;
        for j in apex_labels..=n {
            let start = suffix(j);
            let Some((k, node)) = cur.get(start..).and_then(|key| zone.node_entry(key)) else {
                break;
            };
            closest = start;
            if j > apex_labels && node.rrset(rtype::NS).is_some() && !(j == n && qtype == rtype::DS)
            {
                referral = Some((k, node));
                break;
            }
            if j < n {
                // RFC 6672 2.3: every name below a DNAME's owner (not the
                // owner itself) is redirected.
                if let Some(set) = node.rrset(rtype::DNAME) {
                    dname = Some((start, (k, node.name_wire()), set));
                    break;
                }
            }
            if j == n {
                found = Some((k, node));
            }
        }
        if let Some((k, node)) = referral {
            // Referral: NS in authority, glue in additional; AA clear
            // unless a CNAME or DNAME of ours led here (RFC 1034 4.3.2
            // step 3b after 3a: the answer so far is authoritative).
            if let Some(ns) = node.rrset(rtype::NS) {
                s.authority.push(((k, node.name_wire()), ns, false));
                if sec {
                    referral_ds(zone, &mut s, k, node);
                }
                add_targets(zone, ns, 0, &mut s.additional);
                s.referral = true;
            }
            return (rcode::NOERROR, chain > 0, s);
        }
        if let Some((start, downer, dset)) = dname {
            // RFC 6672 3.2: the DNAME, then a CNAME from the name asked
            // to the name with the DNAME's owner replaced by its target
            // (the DNAME's TTL, unsigned), then that name followed.
            s.answer.push((downer, dset));
            chain += 1;
            let target = dset
                .rdatas()
                .next()
                .and_then(|t| t.get(..crate::name::wire_name_len(t)?));
            let Some(target) = target else {
                return (rcode::NOERROR, true, s);
            };
            let new_len = start + target.len();
            if new_len > MAX_NAME_LEN {
                // RFC 6672 2.2: the substitution would be too long.
                return (rcode::YXDOMAIN, true, s);
            }
            let need = 10 + new_len;
            if free.len() < need {
                if let Some(v) = synth.take() {
                    v.resize((MAX_CHAIN + 1) * (10 + MAX_NAME_LEN), 0);
                    free = v.as_mut_slice();
                }
            }
            if free.len() < need {
                return (rcode::NOERROR, true, s);
            }
            let (rec, rest) = std::mem::take(&mut free).split_at_mut(need);
            free = rest;
            let ttl = dset.ttl.to_be_bytes();
            let class = zone.class().to_be_bytes();
            let rdlen = (new_len as u16).to_be_bytes();
            let t = rtype::CNAME.to_be_bytes();
            let head = [
                t[0], t[1], class[0], class[1], ttl[0], ttl[1], ttl[2], ttl[3], rdlen[0], rdlen[1],
            ];
            for (d, b) in rec.iter_mut().zip(
                head.iter()
                    .chain(cur.get(..start).unwrap_or_default())
                    .chain(target),
            ) {
                *d = *b;
            }
            let rec: &'a [u8] = rec;
            s.answer
                .push((cur_owner, RRset::synthesized(rtype::CNAME, dset.ttl, rec)));
            let new_name = rec.get(10..).unwrap_or_default();
            let Some(dst) = buf.get_mut(..new_len) else {
                return (rcode::NOERROR, true, s);
            };
            dst.copy_from_slice(new_name);
            dst.make_ascii_lowercase();
            cur_len = new_len;
            let next = buf.get(..new_len).unwrap_or_default();
            // RFC 1034 4.3.2 step 3a: asked for a CNAME, the synthesized
            // CNAME is the answer; its target is not looked up.
            if qtype == rtype::CNAME
                || !crate::name::is_subdomain(next, apex_key)
                || chain > MAX_CHAIN
                || s.answer.iter().any(|(o, _)| o.0.eq_ignore_ascii_case(next))
                || below_answered_dname(&s, next)
            {
                return (rcode::NOERROR, true, s);
            }
            cur_owner = (new_name, new_name);
            continue;
        }
        // The closest encloser when a wildcard answers (RFC 4592 3.3.1).
        let mut wild_ce: Option<usize> = None;
        let (owner, node): (Owner<'a>, Node<'a>) = match found {
            Some((k, node)) => (
                if chain == 0 {
                    cur_owner
                } else {
                    (k, node.name_wire())
                },
                node,
            ),
            None => {
                // RFC 4592 3.3.1: the source of synthesis is *.<closest encloser>.
                match zone.wildcard(cur.get(closest..).unwrap_or_default()) {
                    Some(node) => {
                        wild_ce = Some(closest);
                        (cur_owner, node)
                    }
                    None => {
                        soa_auth(&mut s);
                        if sec {
                            deny_name(zone, &mut s, cur, closest);
                        }
                        return (rcode::NXDOMAIN, true, s);
                    }
                }
            }
        };
        if qtype == rtype::ANY {
            // RRSIGs travel with their RRsets (with DO); NSEC and NSEC3
            // only with DO (RFC 4035 3.1).
            let shown = |set: &RRset<'_>| {
                set.rtype != rtype::RRSIG
                    && (sec || !matches!(set.rtype, rtype::NSEC | rtype::NSEC3))
            };
            let mut sets = node.rrsets().filter(shown).peekable();
            if sets.peek().is_none() {
                soa_auth(&mut s);
                if sec {
                    deny_nodata(zone, &mut s, cur, node, wild_ce);
                }
                return (rcode::NOERROR, true, s);
            } else if any_minimal {
                // RFC 8482 4.2: one RRset is enough over UDP.
                if let Some(set) = sets.next() {
                    s.answer.push((owner, set));
                }
            } else {
                for set in sets {
                    s.answer.push((owner, set));
                }
            }
            if sec {
                if let Some(ce) = wild_ce {
                    deny_wild_answer(zone, &mut s, cur, ce);
                }
            }
            return (rcode::NOERROR, true, s);
        }
        if let Some(set) = node.rrset(qtype) {
            s.answer.push((owner, set));
            if sec {
                if let Some(ce) = wild_ce {
                    deny_wild_answer(zone, &mut s, cur, ce);
                }
            }
            match qtype {
                rtype::MX => add_targets(zone, set, 2, &mut s.additional),
                rtype::NS => add_targets(zone, set, 0, &mut s.additional),
                rtype::SRV => add_targets(zone, set, 6, &mut s.additional),
                _ => {}
            }
            return (rcode::NOERROR, true, s);
        }
        if let Some(cname) = node.rrset(rtype::CNAME) {
            s.answer.push((owner, cname));
            if sec {
                if let Some(ce) = wild_ce {
                    deny_wild_answer(zone, &mut s, cur, ce);
                }
            }
            chain += 1;
            let Some(target) = cname.rdatas().next() else {
                return (rcode::NOERROR, true, s);
            };
            let Some(tlen) = crate::name::wire_name_len(target) else {
                return (rcode::NOERROR, true, s);
            };
            let Some(dst) = buf.get_mut(..tlen) else {
                return (rcode::NOERROR, true, s);
            };
            dst.copy_from_slice(target.get(..tlen).unwrap_or_default());
            dst.make_ascii_lowercase();
            cur_len = tlen;
            let next = buf.get(..tlen).unwrap_or_default();
            // Out of zone: the resolver follows it. A loop or an over-long
            // chain stops here, as NSD and Knot do.
            if !crate::name::is_subdomain(next, apex_key)
                || chain > MAX_CHAIN
                || s.answer.iter().any(|(o, _)| o.0.eq_ignore_ascii_case(next))
                || below_answered_dname(&s, next)
            {
                return (rcode::NOERROR, true, s);
            }
            cur_owner = (target, target);
            continue;
        }
        // NODATA (a wildcard's too): NOERROR, SOA in authority.
        soa_auth(&mut s);
        if sec {
            deny_nodata(zone, &mut s, cur, node, wild_ce);
        }
        return (rcode::NOERROR, true, s);
    }
}

/// Whether `zone` delegates `cut` (lowercased wire) itself: NS there, and
/// no zone cut above it inside `zone` (a cut below another is occluded,
/// RFC 4035 3.1.4.1 wants the DS from the zone that delegates `cut`).
fn is_cut_of(zone: &Zone, cut: &[u8]) -> bool {
    let has_ns = |name: &[u8]| {
        zone.node_entry(name)
            .is_some_and(|(_, n)| n.rrset(rtype::NS).is_some())
    };
    if !has_ns(cut) {
        return false;
    }
    let mut name = crate::name::parent(cut);
    while let Some(n) = name.filter(|n| *n != zone.apex_key()) {
        if has_ns(n) {
            return false;
        }
        name = crate::name::parent(n);
    }
    true
}

/// Whether `name` (lowercased) is below a DNAME already in the answer: it
/// would be redirected through it again (a DNAME pointing below itself,
/// a ring of DNAMEs, a CNAME leading back). The chain stops there, as
/// NSD's does, rather than repeat the DNAME; the client follows the last
/// CNAME and synthesizes the rest itself.
fn below_answered_dname(s: &Sections<'_>, name: &[u8]) -> bool {
    s.answer.iter().any(|((o, _), set)| {
        set.rtype == rtype::DNAME && name.len() > o.len() && crate::name::is_subdomain(name, o)
    })
}

/// Adds a node's RRset of type `rt` to the authority section once.
fn push_auth<'a>(s: &mut Sections<'a>, node: Node<'a>, rt: u16) {
    if let Some(set) = node.rrset(rt) {
        if !s.authority.iter().any(|(_, x, _)| x.same_as(&set)) {
            s.authority
                .push(((node.key(), node.name_wire()), set, false));
        }
    }
}

/// The NSEC owner covering (or matching) `name`.
fn nsec_cover<'a>(zone: &'a Zone, s: &mut Sections<'a>, name: &[u8]) {
    if let Some(node) = zone.nsec_covering(name) {
        push_auth(s, node, rtype::NSEC);
    }
}

/// The NSEC3 matching or covering `name`'s hash; whether it matched.
fn nsec3_at<'a>(zone: &'a Zone, s: &mut Sections<'a>, name: &[u8], matching: bool) -> bool {
    let found = zone.nsec3_hash_of(name).and_then(|h| zone.nsec3_find(&h));
    match found {
        Some(Ok(node)) => {
            push_auth(s, node, rtype::NSEC3);
            true
        }
        Some(Err(node)) if !matching => {
            push_auth(s, node, rtype::NSEC3);
            false
        }
        _ => false,
    }
}

/// Offset in `name` of the next label up from `off`.
fn parent_off(name: &[u8], off: usize) -> usize {
    off + 1 + usize::from(name.get(off).copied().unwrap_or(0))
}

/// RFC 5155 7.2.1 closest (provable) encloser proof: from `start` up, the
/// first ancestor with a matching NSEC3, then the NSEC3 covering the next
/// closer name. Returns the encloser's offset in `name`.
fn nsec3_ce_proof<'a>(zone: &'a Zone, s: &mut Sections<'a>, name: &[u8], start: usize) -> usize {
    let apex_len = zone.apex_key().len();
    let mut prev: Option<usize> = None;
    let mut off = start;
    // An encloser at `start` itself needs a next closer below it.
    if start > 0 {
        let mut p = 0usize;
        while p < start {
            prev = Some(p);
            p = parent_off(name, p);
        }
    }
    while let Some(suffix) = name.get(off..) {
        if suffix.len() < apex_len {
            break;
        }
        if nsec3_at(zone, s, suffix, true) {
            if let Some(nc) = prev.and_then(|p| name.get(p..)) {
                nsec3_at(zone, s, nc, false);
            }
            return off;
        }
        if suffix.len() == apex_len {
            break;
        }
        prev = Some(off);
        off = parent_off(name, off);
    }
    start
}

/// NXDOMAIN proof: no `name`, no wildcard at its closest encloser
/// `ce` (RFC 4035 3.1.3.2, RFC 5155 7.2.2).
fn deny_name<'a>(zone: &'a Zone, s: &mut Sections<'a>, name: &[u8], ce: usize) {
    let mut wbuf = [0u8; MAX_NAME_LEN + 2];
    if zone.uses_nsec3() {
        let ce = nsec3_ce_proof(zone, s, name, ce);
        if let Some(w) = wildcard_of(name.get(ce..).unwrap_or_default(), &mut wbuf) {
            nsec3_at(zone, s, w, false);
        }
    } else {
        nsec_cover(zone, s, name);
        if let Some(w) = wildcard_of(name.get(ce..).unwrap_or_default(), &mut wbuf) {
            nsec_cover(zone, s, w);
        }
    }
}

/// A wildcard answered: prove `name` itself absent (RFC 4035 3.1.3.3,
/// RFC 5155 7.2.6: the NSEC3 covering the next closer name).
fn deny_wild_answer<'a>(zone: &'a Zone, s: &mut Sections<'a>, name: &[u8], ce: usize) {
    if zone.uses_nsec3() {
        let mut p = 0usize;
        let mut next_closer = 0usize;
        while p < ce {
            next_closer = p;
            p = parent_off(name, p);
        }
        if let Some(nc) = name.get(next_closer..) {
            nsec3_at(zone, s, nc, false);
        }
    } else {
        nsec_cover(zone, s, name);
    }
}

/// NODATA proof at `node` (RFC 4035 3.1.3.1 and 3.1.3.4, RFC 5155 7.2.3
/// to 7.2.5); `wild_ce` when `node` is the wildcard that matched.
fn deny_nodata<'a>(
    zone: &'a Zone,
    s: &mut Sections<'a>,
    name: &[u8],
    node: Node<'a>,
    wild_ce: Option<usize>,
) {
    let nsec3 = zone.uses_nsec3();
    match (wild_ce, nsec3) {
        (Some(ce), true) => {
            nsec3_ce_proof(zone, s, name, ce);
            nsec3_at(zone, s, node.key(), true);
        }
        (Some(_), false) => {
            nsec_cover(zone, s, name);
            push_auth(s, node, rtype::NSEC);
        }
        (None, true) => {
            // No matching NSEC3 (an opt-out span): the closest provable
            // encloser proof instead (RFC 5155 7.2.4).
            if !nsec3_at(zone, s, name, true) && name.len() > zone.apex_key().len() {
                nsec3_ce_proof(zone, s, name, parent_off(name, 0));
            }
        }
        (None, false) => {
            if node.rrset(rtype::NSEC).is_some() {
                push_auth(s, node, rtype::NSEC);
            } else {
                // An empty non-terminal: the NSEC before it shows it exists.
                nsec_cover(zone, s, name);
            }
        }
    }
}

/// A referral's DS with its RRSIG, or the proof that there is none
/// (RFC 4035 3.1.4, RFC 5155 7.2.7).
fn referral_ds<'a>(zone: &'a Zone, s: &mut Sections<'a>, cut: &'a [u8], node: Node<'a>) {
    if node.rrset(rtype::DS).is_some() {
        push_auth(s, node, rtype::DS);
    } else if zone.uses_nsec3() {
        if !nsec3_at(zone, s, cut, true) {
            nsec3_ce_proof(zone, s, cut, parent_off(cut, 0));
        }
    } else {
        push_auth(s, node, rtype::NSEC);
    }
}

/// Additional-section addresses for MX/NS/SRV targets in the zone (glue
/// included).
fn add_targets<'a>(
    zone: &'a Zone,
    set: RRset<'a>,
    off: usize,
    add: &mut Vec<(Owner<'a>, RRset<'a>)>,
) {
    let mut lc = [0u8; MAX_NAME_LEN];
    for rd in set.rdatas() {
        let Some(target) = rd.get(off..) else {
            continue;
        };
        let Some(dst) = lc.get_mut(..target.len()) else {
            continue;
        };
        dst.copy_from_slice(target);
        dst.make_ascii_lowercase();
        let Some((k, node)) = zone.node_entry(dst) else {
            continue;
        };
        if add.iter().any(|(o, _)| std::ptr::eq(o.0, k)) {
            continue;
        }
        for t in [rtype::A, rtype::AAAA] {
            if let Some(a) = node.rrset(t) {
                add.push(((k, node.name_wire()), a));
            }
        }
    }
}

impl Zone {
    fn wildcard(&self, ce: &[u8]) -> Option<Node<'_>> {
        let mut key = [0u8; MAX_NAME_LEN + 2];
        let dst = key.get_mut(..ce.len() + 2)?;
        dst.get_mut(..2)?.copy_from_slice(b"\x01*");
        dst.get_mut(2..)?.copy_from_slice(ce);
        self.node(dst)
    }
}
