//! The secondary's side of zone transfers, Sans-I/O: the queries it
//! sends (SOA, AXFR), a reader that builds a [`Zone`] from AXFR messages
//! (RFC 5936) and accepts it only when the transfer is complete, and the
//! zone written back as a zone file for the on-disk copy.

use std::fmt::Write as _;

use crate::name::{write_presentation, Name, MAX_NAME_LEN};
use crate::parser::{RecordRef, RecordSink};
use crate::types::{class, rtype};
use crate::zone::{BuildResult, Zone, ZoneBuilder};

/// A query for `apex` of type `qtype` (SOA or AXFR), class IN, ID `id`.
pub fn query(apex: &Name, qtype: u16, id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(apex.as_wire());
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&class::IN.to_be_bytes());
    m
}

/// Why a transfer or SOA answer is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XfrError {
    /// Not an answer to our query (ID, QR).
    #[error("not an answer to the query")]
    NotOurs,
    /// The primary answered with an error RCODE.
    #[error("the primary answered RCODE {0}")]
    Rcode(u16),
    /// The message does not parse.
    #[error("malformed message")]
    Malformed,
    /// The transfer does not start with the zone's SOA.
    #[error("the transfer does not start with the SOA")]
    NoSoa,
}

/// A record as read from a message: owner and RDATA decompressed.
struct Rr {
    owner: Vec<u8>,
    rtype: u16,
    class: u16,
    ttl: u32,
    rdata: Vec<u8>,
}

/// Reads a possibly compressed name at `p` into `out`; returns the
/// offset after it in place.
fn read_name(msg: &[u8], mut p: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(p)?;
        match len & 0xc0 {
            0x00 => {
                out.extend_from_slice(msg.get(p..p + 1 + usize::from(len))?);
                p += 1 + usize::from(len);
                if out.len() > MAX_NAME_LEN {
                    return None;
                }
                if len == 0 {
                    return Some(end.unwrap_or(p));
                }
            }
            0xc0 => {
                end.get_or_insert(p + 2);
                p = usize::from(len & 0x3f) << 8 | usize::from(*msg.get(p + 1)?);
                hops += 1;
                if hops > 64 {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// RDATA with its embedded names decompressed, for the types whose names
/// may be compressed (RFC 1035 3.3, RFC 3597 4): (names before the fixed
/// tail, octets before the first name).
fn name_layout(rt: u16) -> Option<(usize, usize)> {
    Some(match rt {
        rtype::NS | 3 | 4 | rtype::CNAME | 7 | 8 | 9 | rtype::PTR => (1, 0),
        rtype::SOA | 14 | 17 => (2, 0),
        rtype::MX | 18 | 21 | 36 => (1, 2),
        26 => (2, 2),
        _ => return None,
    })
}

fn read_rr(msg: &[u8], p: usize) -> Option<(Rr, usize)> {
    let mut owner = Vec::new();
    let p = read_name(msg, p, &mut owner)?;
    let f = msg.get(p..p + 10)?;
    let rt = u16::from_be_bytes([*f.first()?, *f.get(1)?]);
    let cl = u16::from_be_bytes([*f.get(2)?, *f.get(3)?]);
    let ttl = u32::from_be_bytes([*f.get(4)?, *f.get(5)?, *f.get(6)?, *f.get(7)?]);
    // RFC 2181 section 8: a TTL with the top bit set counts as zero (and a
    // zone file could not hold it).
    let ttl = if ttl > 0x7fff_ffff { 0 } else { ttl };
    let rdlen = usize::from(u16::from_be_bytes([*f.get(8)?, *f.get(9)?]));
    let start = p + 10;
    let end = start + rdlen;
    let raw = msg.get(start..end)?;
    let rdata = match name_layout(rt) {
        None => raw.to_vec(),
        Some((names, lead)) => {
            let mut out = raw.get(..lead)?.to_vec();
            let mut q = start + lead;
            for _ in 0..names {
                q = read_name(msg, q, &mut out)?;
            }
            if q > end {
                return None;
            }
            out.extend_from_slice(msg.get(q..end)?);
            out
        }
    };
    // Held to the zone file's rule, so that the copy written after the
    // transfer loads again (a primary's bad record fails the transfer).
    if !crate::rdata::wire_rdata_valid(rt, &rdata) {
        return None;
    }
    Some((
        Rr {
            owner,
            rtype: rt,
            class: cl,
            ttl,
            rdata,
        },
        end,
    ))
}

/// Checks the header and skips the question; returns the answer count
/// and where the answers start.
fn answers_of(msg: &[u8], id: u16) -> Result<(u16, usize), XfrError> {
    let h: [u8; 12] = msg
        .get(..12)
        .and_then(|h| h.try_into().ok())
        .ok_or(XfrError::Malformed)?;
    let [i0, i1, f1, f2, q0, q1, a0, a1, ..] = h;
    if u16::from_be_bytes([i0, i1]) != id || f1 & 0x80 == 0 {
        return Err(XfrError::NotOurs);
    }
    let rc = u16::from(f2 & 0xf);
    if rc != 0 {
        return Err(XfrError::Rcode(rc));
    }
    let qd = u16::from_be_bytes([q0, q1]);
    let an = u16::from_be_bytes([a0, a1]);
    let mut p = 12;
    for _ in 0..qd {
        let mut skip = Vec::new();
        p = read_name(msg, p, &mut skip).ok_or(XfrError::Malformed)? + 4;
    }
    Ok((an, p))
}

/// The serial of the SOA in an answer to our SOA query.
pub fn soa_serial(msg: &[u8], id: u16) -> Result<u32, XfrError> {
    let (an, mut p) = answers_of(msg, id)?;
    for _ in 0..an {
        let (rr, next) = read_rr(msg, p).ok_or(XfrError::Malformed)?;
        p = next;
        if rr.rtype == rtype::SOA {
            return soa_fields(&rr.rdata)
                .map(|f| f.0)
                .ok_or(XfrError::Malformed);
        }
    }
    Err(XfrError::NoSoa)
}

/// (serial, refresh, retry, expire, minimum) from SOA RDATA.
fn soa_fields(rd: &[u8]) -> Option<(u32, u32, u32, u32, u32)> {
    let t = rd.get(rd.len().checked_sub(20)?..)?;
    let f =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(t.get(i..i + 4)?.try_into().ok()?)) };
    Some((f(0)?, f(4)?, f(8)?, f(12)?, f(16)?))
}

/// The SOA timers of a zone: (refresh, retry, expire) in seconds.
pub fn soa_timers(zone: &Zone) -> Option<(u32, u32, u32)> {
    let rd = zone.soa()?.rdatas().next()?;
    let (_, refresh, retry, expire, _) = soa_fields(rd)?;
    Some((refresh, retry, expire))
}

/// Builds a zone from the messages of an AXFR (RFC 5936): SOA first, then
/// the records, then the SOA again. The zone exists only when that last
/// SOA arrived and the records pass the zone checks; anything less (a
/// connection cut, a refusal, a bad record) leaves no zone.
pub struct AxfrReader {
    builder: ZoneBuilder,
    id: u16,
    serial: Option<u32>,
    done: bool,
    records: u32,
    file: std::sync::Arc<str>,
}

impl std::fmt::Debug for AxfrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxfrReader")
            .field("serial", &self.serial)
            .field("done", &self.done)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl AxfrReader {
    /// A reader for the AXFR of `apex` asked with ID `id`.
    pub fn new(apex: &Name, id: u16) -> Self {
        AxfrReader {
            builder: ZoneBuilder::new(apex),
            id,
            serial: None,
            done: false,
            records: 0,
            file: std::sync::Arc::from("AXFR"),
        }
    }

    /// Reads one message; `Ok(true)` once the closing SOA has come.
    pub fn feed(&mut self, msg: &[u8]) -> Result<bool, XfrError> {
        let (an, mut p) = answers_of(msg, self.id)?;
        for _ in 0..an {
            let (rr, next) = read_rr(msg, p).ok_or(XfrError::Malformed)?;
            p = next;
            self.take(rr)?;
        }
        Ok(self.done)
    }

    fn take(&mut self, rr: Rr) -> Result<(), XfrError> {
        if self.done {
            // Nothing may follow the closing SOA.
            return Err(XfrError::Malformed);
        }
        if rr.rtype == rtype::SOA {
            let serial = soa_fields(&rr.rdata).ok_or(XfrError::Malformed)?.0;
            match self.serial {
                None => self.serial = Some(serial),
                Some(s) if s == serial => {
                    self.done = true;
                    return Ok(());
                }
                Some(_) => return Err(XfrError::Malformed),
            }
        } else if self.serial.is_none() {
            return Err(XfrError::NoSoa);
        }
        self.records += 1;
        self.builder.record(&RecordRef {
            owner: &rr.owner,
            rtype: rr.rtype,
            class: rr.class,
            ttl: rr.ttl,
            rdata: &rr.rdata,
            file: &self.file,
            line: self.records,
            column: 1,
        });
        Ok(())
    }

    /// The zone, if the transfer completed; else why not.
    pub fn finish(self) -> BuildResult {
        if !self.done {
            return Err(vec![crate::error::ZoneError {
                file: self.file,
                line: self.records,
                column: 0,
                kind: crate::error::ErrorKind::Check(
                    "the transfer ended before its closing SOA".into(),
                ),
            }]);
        }
        self.builder.finish()
    }
}

/// An IXFR query (RFC 1995 3): the question and our SOA in the
/// authority section.
pub fn ixfr_query(zone: &Zone, id: u16) -> Vec<u8> {
    let mut m = query(zone.origin(), rtype::IXFR, id);
    if let Some(nc) = m.get_mut(8..10) {
        nc.copy_from_slice(&1u16.to_be_bytes());
    }
    if let Some(soa) = zone.soa().and_then(|s| s.wire_records().next()) {
        m.extend_from_slice(zone.origin().as_wire());
        m.extend_from_slice(soa);
    }
    m
}

/// A record's identity for deletion (RFC 1995 4: name, type, class and
/// RDATA; not the TTL).
type RrKey = (Vec<u8>, u16, u16, Vec<u8>);

enum IxfrState {
    /// Waiting for the first SOA (the new version).
    Start,
    /// After the first SOA: the next record tells incremental from
    /// AXFR-style.
    Second {
        first: Rr,
    },
    /// Incremental: deleting (true) or adding records.
    Diffs {
        deleting: bool,
    },
    /// AXFR-style: the whole zone.
    Full(Box<AxfrReader>),
    Done,
}

/// Applies an IXFR answer (RFC 1995 4) to the version we have: the
/// differences, or the whole zone when the primary sends it AXFR-style.
/// As with [`AxfrReader`], a zone comes out only of a complete answer.
pub struct IxfrReader {
    apex: Name,
    id: u16,
    old_serial: u32,
    new_serial: u32,
    /// The records of the version being built, by identity, with the
    /// owner as written and the TTL.
    records: std::collections::HashMap<RrKey, (Vec<u8>, u32)>,
    state: IxfrState,
    changes: (usize, usize),
    up_to_date: bool,
    /// The new version's SOA: TTL and RDATA.
    new_soa: Option<(u32, Vec<u8>)>,
}

impl std::fmt::Debug for IxfrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IxfrReader")
            .field("old_serial", &self.old_serial)
            .field("new_serial", &self.new_serial)
            .field("changes", &self.changes)
            .finish_non_exhaustive()
    }
}

/// A stored record's class, TTL and RDATA. The fragment is what
/// [`crate::RRset::wire_records`] yields: an RR's wire form from TYPE
/// on (RFC 1035 4.1.3: TYPE, CLASS, TTL, RDLENGTH, RDATA), whose bounds
/// the zone already checked; a short one reads as class IN, TTL 0 and
/// empty RDATA rather than panicking.
fn wire_parts(rec: &[u8]) -> (u16, u32, &[u8]) {
    let class = rec
        .get(2..4)
        .and_then(|b| b.try_into().ok())
        .map_or(1, u16::from_be_bytes);
    let ttl = rec
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes);
    (class, ttl, rec.get(10..).unwrap_or_default())
}

fn key_of(rr: &Rr) -> RrKey {
    (
        rr.owner.to_ascii_lowercase(),
        rr.rtype,
        rr.class,
        rr.rdata.clone(),
    )
}

impl IxfrReader {
    /// A reader for the IXFR of `old`'s zone asked with ID `id`.
    pub fn new(old: &Zone, id: u16) -> Self {
        let mut records = std::collections::HashMap::with_capacity(old.record_count());
        for (_, node) in old.nodes() {
            for set in node.rrsets() {
                if set.rtype == rtype::SOA {
                    continue;
                }
                for rec in set.wire_records() {
                    let (cl, ttl, rd) = wire_parts(rec);
                    let owner = node.name_wire().to_vec();
                    records.insert(
                        (owner.to_ascii_lowercase(), set.rtype, cl, rd.to_vec()),
                        (owner, ttl),
                    );
                }
            }
        }
        IxfrReader {
            apex: old.origin().clone(),
            id,
            old_serial: old.serial().unwrap_or(0),
            new_serial: 0,
            records,
            state: IxfrState::Start,
            changes: (0, 0),
            up_to_date: false,
            new_soa: None,
        }
    }

    /// Whether the answer was incremental (else AXFR-style).
    pub fn incremental(&self) -> bool {
        !matches!(self.state, IxfrState::Full(_))
    }

    /// Records (deleted, added) so far.
    pub fn changes(&self) -> (usize, usize) {
        self.changes
    }

    /// Whether the primary said we are up to date (one SOA, no change).
    pub fn up_to_date(&self) -> bool {
        self.up_to_date
    }

    /// Reads one message; `Ok(true)` once the answer is complete.
    pub fn feed(&mut self, msg: &[u8]) -> Result<bool, XfrError> {
        if let IxfrState::Full(axfr) = &mut self.state {
            return axfr.feed(msg);
        }
        let (an, mut p) = answers_of(msg, self.id)?;
        let mut count = 0u16;
        while count < an {
            let (rr, next) = read_rr(msg, p).ok_or(XfrError::Malformed)?;
            p = next;
            count += 1;
            let serial = if rr.rtype == rtype::SOA {
                Some(soa_fields(&rr.rdata).ok_or(XfrError::Malformed)?.0)
            } else {
                None
            };
            match std::mem::replace(&mut self.state, IxfrState::Done) {
                IxfrState::Start => {
                    self.new_serial = serial.ok_or(XfrError::NoSoa)?;
                    self.new_soa = Some((rr.ttl, rr.rdata.clone()));
                    self.state = IxfrState::Second { first: rr };
                }
                IxfrState::Second { first } => {
                    if serial == Some(self.old_serial) && self.new_serial != self.old_serial {
                        self.state = IxfrState::Diffs { deleting: true };
                    } else {
                        // AXFR-style (RFC 1995 4): replay the records read
                        // so far, then the rest of the messages.
                        let mut axfr = AxfrReader::new(&self.apex, self.id);
                        axfr.take(first)?;
                        axfr.take(rr)?;
                        while count < an {
                            let (rr, next) = read_rr(msg, p).ok_or(XfrError::Malformed)?;
                            p = next;
                            count += 1;
                            axfr.take(rr)?;
                        }
                        let done = axfr.done;
                        self.state = IxfrState::Full(Box::new(axfr));
                        return Ok(done);
                    }
                }
                IxfrState::Diffs { deleting } => match (serial, deleting) {
                    // After additions, the new version's SOA (where the
                    // next deletion list's old SOA would be): the end.
                    (Some(s), false) if s == self.new_serial => {
                        self.state = IxfrState::Done;
                        if count < an {
                            return Err(XfrError::Malformed);
                        }
                        return Ok(true);
                    }
                    (Some(_), d) => self.state = IxfrState::Diffs { deleting: !d },
                    (None, true) => {
                        if self.records.remove(&key_of(&rr)).is_none() {
                            // Deleting what we do not have: our version and
                            // the primary's history disagree.
                            return Err(XfrError::Malformed);
                        }
                        self.changes.0 += 1;
                        self.state = IxfrState::Diffs { deleting: true };
                    }
                    (None, false) => {
                        let k = key_of(&rr);
                        self.records.insert(k, (rr.owner, rr.ttl));
                        self.changes.1 += 1;
                        self.state = IxfrState::Diffs { deleting: false };
                    }
                },
                IxfrState::Full(_) | IxfrState::Done => return Err(XfrError::Malformed),
            }
        }
        // One SOA alone: the primary has nothing newer (RFC 1995 2).
        if let IxfrState::Second { .. } = self.state {
            if an == 1 && !serial_newer(self.new_serial, self.old_serial) {
                self.up_to_date = true;
                self.state = IxfrState::Done;
                return Ok(true);
            }
        }
        Ok(matches!(self.state, IxfrState::Done))
    }

    /// The new version, if the answer completed and the zone checks pass.
    pub fn finish(self) -> BuildResult {
        match self.state {
            IxfrState::Full(axfr) => axfr.finish(),
            IxfrState::Done if !self.up_to_date => {
                let file: std::sync::Arc<str> = std::sync::Arc::from("IXFR");
                let mut b = ZoneBuilder::new(&self.apex);
                if let Some((ttl, rd)) = &self.new_soa {
                    b.record(&RecordRef {
                        owner: self.apex.as_wire(),
                        rtype: rtype::SOA,
                        class: class::IN,
                        ttl: *ttl,
                        rdata: rd,
                        file: &file,
                        line: 0,
                        column: 1,
                    });
                }
                // Names together, in a stable order (the builder keeps
                // each name's RRsets contiguous cheaply that way).
                let mut recs: Vec<_> = self.records.iter().collect();
                recs.sort_unstable_by(|a, b| (&a.0 .0, a.0 .1).cmp(&(&b.0 .0, b.0 .1)));
                for (i, ((_, rt, cl, rd), (owner, ttl))) in recs.into_iter().enumerate() {
                    let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    b.record(&RecordRef {
                        owner,
                        rtype: *rt,
                        class: *cl,
                        ttl: *ttl,
                        rdata: rd,
                        file: &file,
                        line,
                        column: 1,
                    });
                }
                b.finish()
            }
            _ => Err(vec![crate::error::ZoneError {
                file: std::sync::Arc::from("IXFR"),
                line: 0,
                column: 0,
                kind: crate::error::ErrorKind::Check(
                    "the IXFR answer is incomplete or brings no new version".into(),
                ),
            }]),
        }
    }
}

fn serial_newer(a: u32, b: u32) -> bool {
    crate::ixfr::serial_gt(a, b)
}

/// The zone as a zone file in RFC 3597's generic form (`TYPE1 \# 4
/// C0000201`): lossless for every type, and read back by [`crate::parse`].
pub fn to_zone_file(zone: &Zone) -> String {
    let mut out = String::with_capacity(zone.record_count() * 48);
    let _ = writeln!(
        out,
        "; {} serial {}, written by dnsd after a transfer",
        zone.origin(),
        zone.serial().unwrap_or(0)
    );
    let apex = zone.apex_key();
    let write_node = |out: &mut String,
                      name: &[u8],
                      sets: &mut dyn Iterator<Item = crate::RRset<'_>>,
                      soa_first: bool| {
        let mut owner = String::new();
        let _ = write_presentation(name, &mut owner);
        for set in sets {
            if (set.rtype == rtype::SOA) != soa_first {
                continue;
            }
            for rec in set.wire_records() {
                let (cl, ttl, rd) = wire_parts(rec);
                let _ = write!(
                    out,
                    "{owner} {ttl} CLASS{cl} TYPE{} \\# {}",
                    set.rtype,
                    rd.len()
                );
                if !rd.is_empty() {
                    out.push(' ');
                    for b in rd {
                        let _ = write!(out, "{b:02x}");
                    }
                }
                out.push('\n');
            }
        }
    };
    if let Some(n) = zone.node(apex) {
        write_node(&mut out, n.name_wire(), &mut n.rrsets(), true);
    }
    for (_, node) in zone.nodes() {
        write_node(&mut out, node.name_wire(), &mut node.rrsets(), false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_zone, NoIncludes, Outcome, Prefix, Responder, ResponderConfig, Transport};
    use std::sync::Arc;

    const TEXT: &str = "$TTL 300\n@ SOA ns root 7 2 1 3 60\n NS ns\n MX 10 mail\nns A 192.0.2.1\n\
        mail A 192.0.2.2\nwww CNAME mail\n_s._tcp SRV 0 0 25 mail\nt TXT \"a b\"\n";

    fn zone() -> Zone {
        let origin = Name::parse("ex.", None).unwrap();
        load_zone(TEXT.as_bytes(), "t", &origin, &mut NoIncludes)
            .unwrap()
            .0
    }

    #[test]
    fn wire_parts_reads_class_ttl_rdata_and_tolerates_short_fragments() {
        let z = zone();
        let node = z.node(z.apex_key()).unwrap();
        let ns = node.rrsets().find(|s| s.rtype == rtype::NS).unwrap();
        let rec = ns.wire_records().next().unwrap();
        let (class, ttl, rd) = wire_parts(rec);
        assert_eq!((class, ttl), (1, 300));
        assert_eq!(rd, ns.rdatas().next().unwrap());
        assert_eq!(wire_parts(&[0, 1, 0]), (1, 0, &[][..]));
        assert_eq!(wire_parts(&[0, 1, 0, 3, 0, 0, 0, 9, 0, 0]), (3, 9, &[][..]));
    }

    /// Our responder's AXFR of `zone()`, asked with ID `id`.
    fn axfr_messages(id: u16) -> Vec<Vec<u8>> {
        let mut c = crate::Catalog::new();
        c.insert(zone());
        let cfg = ResponderConfig {
            axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
            ..ResponderConfig::default()
        };
        let r = Responder::new(Arc::new(c), cfg);
        let q = query(&Name::parse("ex.", None).unwrap(), rtype::AXFR, id);
        let mut out = Vec::new();
        let Outcome::Transfer(t) =
            r.handle(&q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out)
        else {
            panic!("no transfer");
        };
        t.messages()
    }

    /// The message holding `needle`, and where in it.
    fn find<'m>(msgs: &'m mut [Vec<u8>], needle: &[u8]) -> (&'m mut Vec<u8>, usize) {
        msgs.iter_mut()
            .find_map(|m| {
                let at = m.windows(needle.len()).position(|w| w == needle)?;
                Some((m, at))
            })
            .unwrap()
    }

    #[test]
    fn a_ttl_with_the_top_bit_set_counts_as_zero() {
        // RFC 2181 section 8; found by the dns_transfer fuzz target (the
        // copy written after the transfer had a TTL no zone file takes).
        let mut msgs = axfr_messages(10);
        let a = b"\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc0\x00\x02\x01";
        let (m, at) = find(&mut msgs, a);
        m[at + 4..at + 8].copy_from_slice(&[0xf0, 0, 0, 0]);
        let apex = Name::parse("ex.", None).unwrap();
        let mut rd = AxfrReader::new(&apex, 10);
        for m in &msgs {
            rd.feed(m).unwrap();
        }
        let (z, _) = rd.finish().unwrap();
        let text = to_zone_file(&z);
        assert!(text.contains("\nns.ex. 0 CLASS1 TYPE1 "), "{text}");
        load_zone(text.as_bytes(), "copy", &apex, &mut NoIncludes).unwrap();
    }

    #[test]
    fn a_record_the_zone_file_would_refuse_fails_the_transfer() {
        // Found by the dns_transfer fuzz target: an SRV target with a
        // reserved label type (0x80, RFC 6891 section 5) was taken, and the
        // copy written after the transfer then did not load.
        let mut msgs = axfr_messages(9);
        let srv = b"\x00\x00\x00\x00\x00\x19\x04mail";
        let (m, at) = find(&mut msgs, srv);
        m[at + 6] = 0x84;
        let apex = Name::parse("ex.", None).unwrap();
        let mut rd = AxfrReader::new(&apex, 9);
        let results: Vec<_> = msgs.iter().map(|m| rd.feed(m)).collect();
        assert!(results.contains(&Err(XfrError::Malformed)), "{results:?}");
    }

    #[test]
    fn axfr_from_our_responder_rebuilds_the_zone_and_the_copy_reloads() {
        let apex = Name::parse("ex.", None).unwrap();
        let msgs = axfr_messages(77);
        let mut rd = AxfrReader::new(&apex, 77);
        let mut done = false;
        for m in &msgs {
            done = rd.feed(m).unwrap();
        }
        assert!(done);
        let (z, _) = rd.finish().unwrap();
        assert_eq!(z.serial(), Some(7));
        assert_eq!(z.record_count(), zone().record_count());
        assert_eq!(soa_timers(&z), Some((2, 1, 3)));
        // The copy on disk parses back to the same records.
        let text = to_zone_file(&z);
        let (back, _) = load_zone(text.as_bytes(), "copy", &apex, &mut NoIncludes).unwrap();
        assert!(crate::Diff::between(&z, &back).is_empty(), "{text}");
        // A transfer cut before its closing SOA leaves no zone.
        let mut rd = AxfrReader::new(&apex, 77);
        let mut one = msgs[0].clone();
        // Drop the last record (the closing SOA) from a one-message transfer.
        let an = u16::from_be_bytes([one[6], one[7]]) - 1;
        one[6..8].copy_from_slice(&an.to_be_bytes());
        let soa_len = z.soa().unwrap().wire_records().next().unwrap().len() + 2;
        one.truncate(one.len() - soa_len);
        assert_eq!(rd.feed(&one), Ok(false));
        assert!(rd.finish().is_err());
        // Another ID, or a refusal, is an error.
        let mut rd = AxfrReader::new(&apex, 78);
        assert_eq!(rd.feed(&msgs[0]), Err(XfrError::NotOurs));
    }

    #[test]
    fn soa_serial_of_an_answer() {
        let mut c = crate::Catalog::new();
        c.insert(zone());
        let r = Responder::new(Arc::new(c), ResponderConfig::default());
        let apex = Name::parse("ex.", None).unwrap();
        let q = query(&apex, rtype::SOA, 5);
        let mut out = Vec::new();
        assert!(matches!(
            r.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out),
            Outcome::Reply
        ));
        assert_eq!(soa_serial(&out, 5), Ok(7));
        assert_eq!(soa_serial(&out, 6), Err(XfrError::NotOurs));
    }

    #[test]
    fn notify_from_a_primary_expiry_and_not_yet_transferred() {
        let mut c = crate::Catalog::new();
        c.insert(zone());
        let cat = Arc::new(c);
        let cfg = ResponderConfig {
            notify_allow: vec![
                (
                    b"\x02ex\x00".to_vec().into(),
                    vec![Prefix::parse("127.0.0.1").unwrap()],
                ),
                (b"\x03new\x00".to_vec().into(), vec![]),
            ],
            ..ResponderConfig::default()
        };
        let r = Responder::new(cat.clone(), cfg);
        let apex = Name::parse("ex.", None).unwrap();
        let mut notify = query(&apex, rtype::SOA, 9);
        notify[2] = 4 << 3 | 0x04;
        let mut out = Vec::new();
        match r.handle(
            &notify,
            Transport::Udp,
            "127.0.0.1".parse().unwrap(),
            &mut out,
        ) {
            Outcome::Notify(a) => assert_eq!(&*a, b"\x02ex\x00"),
            o => panic!("{o:?}"),
        }
        // QR, opcode NOTIFY, AA, NOERROR (RFC 1996 4.7).
        assert_eq!((out[2], out[3] & 0xf), (0x80 | 4 << 3 | 0x04, 0));
        assert!(matches!(
            r.handle(
                &notify,
                Transport::Udp,
                "192.0.2.9".parse().unwrap(),
                &mut out
            ),
            Outcome::Reply
        ));
        assert_eq!(out[3] & 0xf, 5);
        // Past expire: SERVFAIL; a zone not transferred yet: SERVFAIL.
        let q = query(&apex, rtype::SOA, 1);
        assert!(matches!(
            r.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out),
            Outcome::Reply
        ));
        assert_eq!(out[3] & 0xf, 0);
        cat.get(b"\x02ex\x00").unwrap().set_expired(true);
        assert!(matches!(
            r.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out),
            Outcome::Reply
        ));
        assert_eq!(out[3] & 0xf, 2);
        let q = query(&Name::parse("www.new.", None).unwrap(), rtype::A, 1);
        assert!(matches!(
            r.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out),
            Outcome::Reply
        ));
        assert_eq!(out[3] & 0xf, 2);
    }

    fn version(serial: u32, extra: &str) -> Zone {
        let origin = Name::parse("ex.", None).unwrap();
        let text = TEXT.replace("root 7 ", &format!("root {serial} ")) + extra;
        load_zone(text.as_bytes(), "t", &origin, &mut NoIncludes)
            .unwrap()
            .0
    }

    fn ixfr_through(primary: Zone, ours: &Zone) -> (Result<Zone, ()>, bool, bool) {
        let mut c = crate::Catalog::new();
        c.insert(primary);
        let cfg = ResponderConfig {
            axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
            ..ResponderConfig::default()
        };
        let r = Responder::new(Arc::new(c), cfg);
        let q = ixfr_query(ours, 31);
        let mut out = Vec::new();
        let Outcome::Transfer(t) =
            r.handle(&q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out)
        else {
            panic!("no transfer");
        };
        let mut rd = IxfrReader::new(ours, 31);
        let mut done = false;
        for m in t.messages() {
            done = rd.feed(&m).unwrap();
        }
        assert!(done);
        let (inc, up) = (rd.incremental(), rd.up_to_date());
        (rd.finish().map(|(z, _)| z).map_err(|_| ()), inc, up)
    }

    #[test]
    fn ixfr_applies_differences_or_takes_the_whole_zone() {
        let v1 = version(7, "old A 192.0.2.7\n");
        let v2 = version(8, "new A 192.0.2.8\n");
        let mut primary = version(8, "new A 192.0.2.8\n");
        primary.set_history(vec![Arc::new(crate::Diff::between(&v1, &v2))]);
        let (z, incremental, _) = ixfr_through(primary, &v1);
        let z = z.unwrap();
        assert!(incremental);
        assert_eq!(z.serial(), Some(8));
        assert!(crate::Diff::between(&z, &v2).is_empty());
        // No history on the primary: AXFR-style, same result.
        let (z, incremental, _) = ixfr_through(version(8, "new A 192.0.2.8\n"), &v1);
        assert!(!incremental);
        assert!(crate::Diff::between(&z.unwrap(), &v2).is_empty());
        // Up to date: no new zone.
        let (z, _, up) = ixfr_through(version(7, "old A 192.0.2.7\n"), &v1);
        assert!(up && z.is_err());
    }
}
