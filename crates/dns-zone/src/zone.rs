//! The zone model: nodes keyed by lowercased wire name, RRsets stored as
//! ready-to-send wire fragments, and `named-checkzone`-like checks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::error::{ErrorKind, ZoneError};
use crate::name::{is_subdomain, labels, Name};
use crate::parser::{Pos, Record};
use crate::types::{self, rtype};

/// A small, fast hash for wire names (the table is built from zone data,
/// which the operator controls, so flooding is not a concern).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// An RRset: every record of one type at one name.
///
/// `data` holds, per record, the wire bytes that follow the owner name in
/// a message (type, class, TTL, RDLENGTH, RDATA), so answering is a copy.
#[derive(Debug, Clone)]
pub struct RRset {
    /// Record type.
    pub rtype: u16,
    /// Shared TTL (RFC 2181 section 5.2).
    pub ttl: u32,
    /// Number of records.
    pub count: u16,
    data: Box<[u8]>,
}

impl RRset {
    /// The wire fragments (type..rdata) of each record.
    pub fn wire_records(&self) -> impl Iterator<Item = &[u8]> {
        let data = &self.data;
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            let len_bytes = data.get(pos + 8..pos + 10)?;
            let rdlen = usize::from(u16::from_be_bytes([
                *len_bytes.first()?,
                *len_bytes.get(1)?,
            ]));
            let rec = data.get(pos..pos + 10 + rdlen)?;
            pos += 10 + rdlen;
            Some(rec)
        })
    }

    /// The RDATA of each record.
    pub fn rdatas(&self) -> impl Iterator<Item = &[u8]> {
        self.wire_records().map(|r| r.get(10..).unwrap_or_default())
    }
}

/// One name in the zone (empty non-terminals have no RRsets).
#[derive(Debug, Clone)]
pub struct Node {
    /// Owner name as written, when it differs from the lowercased key.
    name: Option<Name>,
    /// RRsets at this name.
    pub rrsets: Vec<RRset>,
}

impl Node {
    /// The RRset of a type, if present.
    pub fn rrset(&self, rt: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == rt)
    }

    /// The owner name as written (falls back to `key`, the lowercase form).
    pub fn name_wire<'a>(&'a self, key: &'a [u8]) -> &'a [u8] {
        self.name.as_ref().map_or(key, |n| n.as_wire())
    }
}

/// An authoritative zone, checked and ready to answer from.
#[derive(Debug)]
pub struct Zone {
    apex: Name,
    apex_lc: Box<[u8]>,
    apex_labels: usize,
    class: u16,
    nodes: FxMap<Box<[u8]>, Node>,
    record_count: usize,
}

/// The result of building a zone: the zone plus warnings, or all errors.
pub type BuildResult = Result<(Zone, Vec<ZoneError>), Vec<ZoneError>>;

type PendingMap = FxMap<Box<[u8]>, (Option<Name>, Vec<Pending>)>;

struct Pending {
    rtype: u16,
    ttl: u32,
    recs: Vec<(Box<[u8]>, Pos)>,
}

impl Zone {
    /// Checks the records of a parsed file and builds the zone.
    ///
    /// Errors (named-checkzone's): no or several SOA, SOA not at the apex,
    /// no NS at the apex, CNAME beside other data or twice, records outside
    /// the zone, MX/NS targets that are CNAMEs, in-zone NS targets without
    /// addresses. Warnings: duplicate records (dropped, RFC 2181 5), TTLs
    /// differing inside an RRset (the first wins), data hidden below a
    /// delegation.
    pub fn build(origin: &Name, records: Vec<Record>) -> BuildResult {
        let apex_lc: Box<[u8]> = origin.as_wire().to_ascii_lowercase().into();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let err = |pos: &Pos, msg: String| ZoneError {
            file: pos.file.clone(),
            line: pos.line,
            column: pos.column,
            kind: ErrorKind::Check(msg),
        };
        let first_pos = records.first().map(|r| r.pos.clone());
        let class = records.first().map_or(types::class::IN, |r| r.class);
        let mut pending: PendingMap = FxMap::default();
        pending.reserve(records.len());
        let mut soa_count = 0usize;
        let mut key = Vec::with_capacity(255);
        for rec in records {
            key.clear();
            key.extend_from_slice(rec.owner.as_wire());
            key.make_ascii_lowercase();
            if !is_subdomain(&key, &apex_lc) {
                errors.push(err(
                    &rec.pos,
                    format!("{} is outside the zone {}", rec.owner, origin),
                ));
                continue;
            }
            if rec.rtype == rtype::SOA {
                if key.as_slice() != &*apex_lc {
                    errors.push(err(
                        &rec.pos,
                        format!("SOA record at {} is not at the zone apex", rec.owner),
                    ));
                    continue;
                }
                soa_count += 1;
                if soa_count > 1 {
                    errors.push(err(
                        &rec.pos,
                        "more than one SOA record at the zone apex".into(),
                    ));
                    continue;
                }
            }
            let entry = match pending.get_mut(key.as_slice()) {
                Some(e) => e,
                None => {
                    let name = (rec.owner.as_wire() != key.as_slice()).then(|| rec.owner.clone());
                    pending
                        .entry(key.as_slice().into())
                        .or_insert((name, Vec::new()))
                }
            };
            match entry.1.iter_mut().find(|p| p.rtype == rec.rtype) {
                Some(set) => {
                    if set.ttl != rec.ttl {
                        warnings.push(err(
                            &rec.pos,
                            format!(
                                "TTL {} differs from the RRset's TTL {}; using {} (RFC 2181 5.2)",
                                rec.ttl, set.ttl, set.ttl
                            ),
                        ));
                    }
                    set.recs.push((rec.rdata, rec.pos));
                }
                None => entry.1.push(Pending {
                    rtype: rec.rtype,
                    ttl: rec.ttl,
                    recs: vec![(rec.rdata, rec.pos)],
                }),
            }
        }
        if soa_count == 0 {
            let pos = first_pos.clone().unwrap_or(Pos {
                file: Arc::from(""),
                line: 0,
                column: 0,
            });
            errors.push(err(
                &pos,
                format!("no SOA record at the zone apex {origin}"),
            ));
        }
        match pending.get(&*apex_lc) {
            Some((_, sets)) if sets.iter().any(|s| s.rtype == rtype::NS) => {}
            _ => {
                if let Some(pos) = &first_pos {
                    errors.push(err(pos, format!("no NS records at the zone apex {origin}")));
                }
            }
        }
        // Per-node checks, duplicate removal.
        let mut record_count = 0usize;
        for (k, (name, sets)) in pending.iter_mut() {
            let has_cname = sets.iter().any(|s| s.rtype == rtype::CNAME);
            for set in sets.iter_mut() {
                dedup(set, &mut warnings);
                record_count += set.recs.len();
                if set.rtype == rtype::CNAME && set.recs.len() > 1 {
                    if let Some((_, pos)) = set.recs.get(1) {
                        errors.push(err(
                            pos,
                            format!("more than one CNAME record at {}", display(k, name)),
                        ));
                    }
                }
                if has_cname && !matches!(set.rtype, rtype::CNAME | rtype::RRSIG | rtype::NSEC) {
                    if let Some((_, pos)) = set.recs.first() {
                        errors.push(err(
                            pos,
                            format!(
                                "CNAME and other data at {} ({}) (RFC 1034 3.6.2)",
                                display(k, name),
                                types::type_to_string(set.rtype)
                            ),
                        ));
                    }
                }
            }
        }
        // Target checks need the whole table.
        let mut target = Vec::with_capacity(255);
        for (k, (name, sets)) in pending.iter() {
            for set in sets {
                let off = match set.rtype {
                    rtype::MX => 2,
                    rtype::NS => 0,
                    _ => continue,
                };
                for (rdata, pos) in &set.recs {
                    target.clear();
                    target.extend_from_slice(rdata.get(off..).unwrap_or_default());
                    target.make_ascii_lowercase();
                    if !is_subdomain(&target, &apex_lc) {
                        continue;
                    }
                    let tsets = pending
                        .get(target.as_slice())
                        .map(|(_, s)| s.as_slice())
                        .unwrap_or_default();
                    let tname = display_wire(rdata.get(off..).unwrap_or_default());
                    if tsets.iter().any(|s| s.rtype == rtype::CNAME) {
                        errors.push(err(
                            pos,
                            format!(
                                "{} {} target {} is a CNAME (RFC 2181 10.3)",
                                display(k, name),
                                types::type_to_string(set.rtype),
                                tname
                            ),
                        ));
                    } else if set.rtype == rtype::NS
                        && !tsets
                            .iter()
                            .any(|s| matches!(s.rtype, rtype::A | rtype::AAAA))
                    {
                        errors.push(err(
                            pos,
                            format!(
                                "NS {tname} of {} has no address records (A or AAAA)",
                                display(k, name)
                            ),
                        ));
                    }
                }
            }
        }
        // Data hidden below a delegation (other than glue) is only a warning.
        for (k, (name, sets)) in pending.iter() {
            let mut anc = k.as_ref();
            let mut below_cut = false;
            while anc.len() > apex_lc.len() {
                let skip = 1 + usize::from(*anc.first().unwrap_or(&0));
                anc = anc.get(skip..).unwrap_or_default();
                if anc.len() <= apex_lc.len() {
                    break;
                }
                if pending
                    .get(anc)
                    .is_some_and(|(_, s)| s.iter().any(|s| s.rtype == rtype::NS))
                {
                    below_cut = true;
                    break;
                }
            }
            if below_cut {
                for set in sets {
                    if !matches!(set.rtype, rtype::A | rtype::AAAA) {
                        if let Some((_, pos)) = set.recs.first() {
                            warnings.push(err(
                                pos,
                                format!(
                                    "{} {} is below a delegation and will not be served",
                                    display(k, name),
                                    types::type_to_string(set.rtype)
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(errors);
        }
        // Materialise nodes, adding empty non-terminals (RFC 4592 2.2.2).
        let mut nodes: FxMap<Box<[u8]>, Node> = FxMap::default();
        nodes.reserve(pending.len());
        // An ancestor that exists (or was already added) has had its own
        // ancestors handled, so each walk stops early.
        let mut ents: FxMap<Box<[u8]>, ()> = FxMap::default();
        for k in pending.keys() {
            let mut anc: &[u8] = k;
            while anc.len() > apex_lc.len() {
                let skip = 1 + usize::from(*anc.first().unwrap_or(&0));
                anc = anc.get(skip..).unwrap_or_default();
                if anc.len() < apex_lc.len() || pending.contains_key(anc) || ents.contains_key(anc)
                {
                    break;
                }
                ents.insert(anc.into(), ());
            }
        }
        for (k, (name, sets)) in pending {
            let rrsets = sets
                .into_iter()
                .map(|p| {
                    let mut data =
                        Vec::with_capacity(p.recs.iter().map(|(r, _)| r.len() + 10).sum());
                    for (rd, _) in &p.recs {
                        data.extend_from_slice(&p.rtype.to_be_bytes());
                        data.extend_from_slice(&class.to_be_bytes());
                        data.extend_from_slice(&p.ttl.to_be_bytes());
                        data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                        data.extend_from_slice(rd);
                    }
                    RRset {
                        rtype: p.rtype,
                        ttl: p.ttl,
                        count: p.recs.len() as u16,
                        data: data.into_boxed_slice(),
                    }
                })
                .collect();
            nodes.insert(k, Node { name, rrsets });
        }
        for (e, ()) in ents {
            nodes.entry(e).or_insert(Node {
                name: None,
                rrsets: Vec::new(),
            });
        }
        let zone = Zone {
            apex: origin.clone(),
            apex_labels: labels(&apex_lc).count(),
            apex_lc,
            class,
            nodes,
            record_count,
        };
        warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Ok((zone, warnings))
    }

    /// The apex name.
    pub fn origin(&self) -> &Name {
        &self.apex
    }

    /// The apex, lowercased wire form.
    pub fn apex_key(&self) -> &[u8] {
        &self.apex_lc
    }

    pub(crate) fn apex_labels(&self) -> usize {
        self.apex_labels
    }

    /// The zone's class.
    pub fn class(&self) -> u16 {
        self.class
    }

    /// Number of records after duplicate removal.
    pub fn record_count(&self) -> usize {
        self.record_count
    }

    /// Number of names (including empty non-terminals).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node at a lowercased wire name, with the zone's copy of the key.
    pub fn node_entry(&self, key: &[u8]) -> Option<(&[u8], &Node)> {
        self.nodes.get_key_value(key).map(|(k, v)| (k.as_ref(), v))
    }

    /// The node at a lowercased wire name.
    pub fn node(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// All nodes with their lowercased keys (unordered).
    pub fn nodes(&self) -> impl Iterator<Item = (&[u8], &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// The apex SOA RRset (always present in a built zone).
    pub fn soa(&self) -> Option<&RRset> {
        self.nodes
            .get(&*self.apex_lc)
            .and_then(|n| n.rrset(rtype::SOA))
    }

    /// The SOA serial.
    pub fn serial(&self) -> Option<u32> {
        let rd = self.soa()?.rdatas().next()?;
        let tail = rd.get(rd.len().checked_sub(20)?..)?;
        Some(u32::from_be_bytes(
            <[u8; 4]>::try_from(tail.get(..4)?).ok()?,
        ))
    }

    /// Negative-answer TTL, RFC 2308 section 5: min(SOA TTL, SOA MINIMUM).
    pub fn negative_ttl(&self) -> u32 {
        let Some(soa) = self.soa() else { return 0 };
        let min = soa
            .rdatas()
            .next()
            .and_then(|rd| rd.get(rd.len().saturating_sub(4)..))
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, u32::from_be_bytes);
        soa.ttl.min(min)
    }
}

fn dedup(set: &mut Pending, warnings: &mut Vec<ZoneError>) {
    if set.recs.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..set.recs.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = set.recs.get(a).map(|r| &r.0);
        let rb = set.recs.get(b).map(|r| &r.0);
        ra.cmp(&rb).then(a.cmp(&b))
    });
    let mut drop = vec![false; set.recs.len()];
    for w in order.windows(2) {
        if let (Some(&a), Some(&b)) = (w.first(), w.get(1)) {
            if set.recs.get(a).map(|r| &r.0) == set.recs.get(b).map(|r| &r.0) {
                if let Some(d) = drop.get_mut(b) {
                    *d = true;
                }
                if let Some((_, pos)) = set.recs.get(b) {
                    warnings.push(ZoneError {
                        file: pos.file.clone(),
                        line: pos.line,
                        column: pos.column,
                        kind: ErrorKind::Check(format!(
                            "duplicate {} record ignored (RFC 2181 5)",
                            types::type_to_string(set.rtype)
                        )),
                    });
                }
            }
        }
    }
    let mut i = 0;
    set.recs.retain(|_| {
        let keep = !drop.get(i).copied().unwrap_or(false);
        i += 1;
        keep
    });
}

fn display(key: &[u8], name: &Option<Name>) -> String {
    match name {
        Some(n) => n.to_string(),
        None => display_wire(key),
    }
}

fn display_wire(wire: &[u8]) -> String {
    let mut s = String::new();
    let _ = crate::name::write_presentation(wire, &mut s);
    s
}

/// Several zones; the longest matching apex wins.
#[derive(Debug, Default)]
pub struct Catalog {
    zones: FxMap<Box<[u8]>, Arc<Zone>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Catalog::default()
    }

    /// Adds (or replaces) a zone.
    pub fn insert(&mut self, zone: Zone) {
        self.zones.insert(zone.apex_lc.clone(), Arc::new(zone));
    }

    /// Number of zones.
    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// Whether there are no zones.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zones.
    pub fn zones(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.values()
    }

    /// The zone with the longest apex that `qname_lc` (lowercased wire)
    /// equals or lies under.
    pub fn find(&self, qname_lc: &[u8]) -> Option<&Arc<Zone>> {
        let mut s = qname_lc;
        loop {
            if let Some(z) = self.zones.get(s) {
                return Some(z);
            }
            let skip = 1 + usize::from(*s.first()?);
            if s.len() <= 1 {
                return None;
            }
            s = s.get(skip..)?;
        }
    }
}
