//! The zone model: nodes keyed by lowercased wire name, RRsets stored as
//! ready-to-send wire fragments, and `named-checkzone`-like checks.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::error::{ErrorKind, ZoneError};
use crate::name::{is_subdomain, labels, Name};
use crate::parser::{Record, RecordRef, RecordSink};
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
        // Mix high bits into the low ones the table indexes with (murmur3
        // fmix64): names share long suffixes, which the multiply alone
        // leaves clustered.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
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
    /// Index of the first record's position (build-time diagnostics).
    pos: u32,
    data: Vec<u8>,
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

/// Builds a [`Zone`] from records as they are parsed (a [`RecordSink`]),
/// then runs the zone checks in [`finish`](ZoneBuilder::finish).
///
/// Records go straight into their final form (one hash-table entry per
/// name, RRsets as wire fragments), so loading allocates per name and per
/// RRset, not per record.
#[derive(Debug)]
pub struct ZoneBuilder {
    apex: Name,
    apex_lc: Box<[u8]>,
    class: Option<u16>,
    nodes: FxMap<Box<[u8]>, Node>,
    /// Where each RRset's first record was written: (file, line, column).
    positions: Vec<(u32, u32, u32)>,
    files: Vec<Arc<str>>,
    errors: Vec<ZoneError>,
    warnings: Vec<ZoneError>,
    soa_count: usize,
    record_count: usize,
    key: Vec<u8>,
}

impl ZoneBuilder {
    /// A builder for the zone at `origin`.
    pub fn new(origin: &Name) -> Self {
        ZoneBuilder {
            apex: origin.clone(),
            apex_lc: origin.as_wire().to_ascii_lowercase().into(),
            class: None,
            nodes: FxMap::default(),
            positions: Vec::new(),
            files: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            soa_count: 0,
            record_count: 0,
            key: Vec::with_capacity(255),
        }
    }

    /// Pre-sizes the tables for about `names` names.
    pub fn reserve(&mut self, names: usize) {
        self.nodes.reserve(names);
        self.positions.reserve(names);
    }

    fn file_index(&mut self, file: &Arc<str>) -> u32 {
        match self.files.iter().rposition(|f| Arc::ptr_eq(f, file) || **f == **file) {
            Some(i) => i as u32,
            None => {
                self.files.push(file.clone());
                (self.files.len() - 1) as u32
            }
        }
    }

    fn located(&self, pos: u32, msg: String) -> ZoneError {
        let (f, line, column) = self.positions.get(pos as usize).copied().unwrap_or((0, 0, 0));
        ZoneError {
            file: self.files.get(f as usize).cloned().unwrap_or_else(|| Arc::from("")),
            line,
            column,
            kind: ErrorKind::Check(msg),
        }
    }

    /// Runs the checks and returns the zone (with warnings) or every error.
    ///
    /// Errors (named-checkzone's): no or several SOA, SOA not at the apex,
    /// no NS at the apex, CNAME beside other data or twice, records outside
    /// the zone, MX/NS targets that are CNAMEs, in-zone NS targets without
    /// addresses. Warnings: duplicate records (dropped, RFC 2181 5), TTLs
    /// differing inside an RRset (the first wins), data hidden below a
    /// delegation.
    pub fn finish(mut self) -> BuildResult {
        let apex_lc = self.apex_lc.clone();
        let origin = self.apex.clone();
        let mut errors = std::mem::take(&mut self.errors);
        let mut warnings = std::mem::take(&mut self.warnings);
        if self.soa_count == 0 {
            errors.push(self.located(0, format!("no SOA record at the zone apex {origin}")));
        }
        let apex_has_ns = self.nodes.get(&*apex_lc).is_some_and(|n| n.rrset(rtype::NS).is_some());
        if !apex_has_ns && !self.positions.is_empty() {
            errors.push(self.located(0, format!("no NS records at the zone apex {origin}")));
        }
        // One read-only pass for every check that looks at other names,
        // collecting the empty non-terminals to add (RFC 4592 2.2.2).
        let mut ents: FxMap<Box<[u8]>, ()> = FxMap::default();
        let mut target = Vec::with_capacity(255);
        for (k, node) in &self.nodes {
            let has_cname = node.rrset(rtype::CNAME).is_some();
            for set in &node.rrsets {
                if set.rtype == rtype::CNAME && set.count > 1 {
                    errors.push(self.located(set.pos, format!("more than one CNAME record at {}", display(k, &node.name))));
                }
                if has_cname && !matches!(set.rtype, rtype::CNAME | rtype::RRSIG | rtype::NSEC) {
                    errors.push(self.located(
                        set.pos,
                        format!(
                            "CNAME and other data at {} ({}) (RFC 1034 3.6.2)",
                            display(k, &node.name),
                            types::type_to_string(set.rtype)
                        ),
                    ));
                }
                let off = match set.rtype {
                    rtype::MX => 2,
                    rtype::NS => 0,
                    _ => continue,
                };
                for rdata in set.rdatas() {
                    let t = rdata.get(off..).unwrap_or_default();
                    target.clear();
                    target.extend_from_slice(t);
                    target.make_ascii_lowercase();
                    if !is_subdomain(&target, &apex_lc) {
                        continue;
                    }
                    let tnode = self.nodes.get(target.as_slice());
                    let tname = display_wire(t);
                    if tnode.is_some_and(|n| n.rrset(rtype::CNAME).is_some()) {
                        errors.push(self.located(
                            set.pos,
                            format!(
                                "{} {} target {tname} is a CNAME (RFC 2181 10.3)",
                                display(k, &node.name),
                                types::type_to_string(set.rtype)
                            ),
                        ));
                    } else if set.rtype == rtype::NS
                        && !tnode.is_some_and(|n| n.rrset(rtype::A).is_some() || n.rrset(rtype::AAAA).is_some())
                    {
                        errors.push(self.located(
                            set.pos,
                            format!("NS {tname} of {} has no address records (A or AAAA)", display(k, &node.name)),
                        ));
                    }
                }
            }
            // Ancestors: a delegation above hides this name's data (glue
            // aside); missing ancestors become empty non-terminals.
            let mut anc: &[u8] = k;
            let mut below_cut = false;
            let mut need_ent = true;
            while anc.len() > apex_lc.len() {
                let skip = 1 + usize::from(*anc.first().unwrap_or(&0));
                anc = anc.get(skip..).unwrap_or_default();
                if anc.len() <= apex_lc.len() {
                    break;
                }
                match self.nodes.get(anc) {
                    Some(a) => {
                        need_ent = false;
                        if a.rrset(rtype::NS).is_some() {
                            below_cut = true;
                            break;
                        }
                    }
                    None if need_ent => {
                        if ents.contains_key(anc) {
                            need_ent = false;
                        } else {
                            ents.insert(anc.into(), ());
                        }
                    }
                    None => {}
                }
            }
            if below_cut {
                for set in &node.rrsets {
                    if !matches!(set.rtype, rtype::A | rtype::AAAA) {
                        warnings.push(self.located(
                            set.pos,
                            format!(
                                "{} {} is below a delegation and will not be served",
                                display(k, &node.name),
                                types::type_to_string(set.rtype)
                            ),
                        ));
                    }
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(errors);
        }
        for (e, ()) in ents {
            self.nodes.entry(e).or_insert(Node {
                name: None,
                rrsets: Vec::new(),
            });
        }
        warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        let zone = Zone {
            apex: origin,
            apex_labels: labels(&apex_lc).count(),
            apex_lc,
            class: self.class.unwrap_or(types::class::IN),
            nodes: self.nodes,
            record_count: self.record_count,
        };
        Ok((zone, warnings))
    }
}

impl RecordSink for ZoneBuilder {
    fn record(&mut self, rec: &RecordRef<'_>) {
        let file = self.file_index(rec.file);
        let at = |msg: String| ZoneError {
            file: rec.file.clone(),
            line: rec.line,
            column: rec.column,
            kind: ErrorKind::Check(msg),
        };
        let show_owner = || display_wire(rec.owner);
        self.key.clear();
        self.key.extend_from_slice(rec.owner);
        self.key.make_ascii_lowercase();
        if !is_subdomain(&self.key, &self.apex_lc) {
            self.errors.push(at(format!("{} is outside the zone {}", show_owner(), self.apex)));
            return;
        }
        let class = *self.class.get_or_insert(rec.class);
        if self.positions.is_empty() {
            // Position 0 anchors whole-zone errors (no SOA, no NS).
            self.positions.push((file, rec.line, rec.column));
        }
        if rec.rtype == rtype::SOA {
            if *self.key != *self.apex_lc {
                self.errors.push(at(format!("SOA record at {} is not at the zone apex", show_owner())));
                return;
            }
            self.soa_count += 1;
            if self.soa_count > 1 {
                self.errors.push(at("more than one SOA record at the zone apex".into()));
                return;
            }
        }
        let Ok(rdlen) = u16::try_from(rec.rdata.len()) else {
            self.errors.push(at("record data longer than 65535 octets".into()));
            return;
        };
        let node = match self.nodes.get_mut(self.key.as_slice()) {
            Some(n) => n,
            None => {
                let name = (rec.owner != self.key.as_slice()).then(|| Name::from_wire_unchecked(rec.owner));
                self.nodes.entry(self.key.as_slice().into()).or_insert(Node {
                    name,
                    rrsets: Vec::new(),
                })
            }
        };
        let mut frag = [0u8; 10];
        frag[..2].copy_from_slice(&rec.rtype.to_be_bytes());
        frag[2..4].copy_from_slice(&class.to_be_bytes());
        frag[8..10].copy_from_slice(&rdlen.to_be_bytes());
        match node.rrsets.iter_mut().find(|s| s.rtype == rec.rtype) {
            Some(set) => {
                if set.ttl != rec.ttl {
                    self.warnings.push(at(format!(
                        "TTL {} differs from the RRset's TTL {}; using {} (RFC 2181 5.2)",
                        rec.ttl, set.ttl, set.ttl
                    )));
                }
                if set.rdatas().any(|r| r == rec.rdata) {
                    self.warnings.push(at(format!(
                        "duplicate {} record ignored (RFC 2181 5)",
                        types::type_to_string(rec.rtype)
                    )));
                    return;
                }
                if set.count == u16::MAX {
                    self.errors.push(at("more than 65535 records in one RRset".into()));
                    return;
                }
                frag[4..8].copy_from_slice(&set.ttl.to_be_bytes());
                set.data.extend_from_slice(&frag);
                set.data.extend_from_slice(rec.rdata);
                set.count += 1;
            }
            None => {
                frag[4..8].copy_from_slice(&rec.ttl.to_be_bytes());
                let mut data = Vec::with_capacity(10 + rec.rdata.len());
                data.extend_from_slice(&frag);
                data.extend_from_slice(rec.rdata);
                let pos = self.positions.len() as u32;
                self.positions.push((file, rec.line, rec.column));
                node.rrsets.push(RRset {
                    rtype: rec.rtype,
                    ttl: rec.ttl,
                    count: 1,
                    pos,
                    data,
                });
            }
        }
        self.record_count += 1;
    }
}

impl Zone {
    /// Checks already-parsed records and builds the zone (see
    /// [`ZoneBuilder::finish`] for the checks).
    pub fn build(origin: &Name, records: Vec<Record>) -> BuildResult {
        let mut b = ZoneBuilder::new(origin);
        b.reserve(records.len());
        for r in &records {
            b.record(&RecordRef {
                owner: r.owner.as_wire(),
                rtype: r.rtype,
                class: r.class,
                ttl: r.ttl,
                rdata: &r.rdata,
                file: &r.pos.file,
                line: r.pos.line,
                column: r.pos.column,
            });
        }
        drop(records);
        b.finish()
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
