//! The zone model and `named-checkzone`-like checks.
//!
//! Everything lives in a few flat arrays (as NSD and Knot do with their
//! own allocators): lowercased names back to back in one byte arena, one
//! small record per name, one per RRset, and every RRset's wire fragments
//! in a data arena. An open-addressing table of `u32` indexes finds names.
//! Loading therefore allocates almost nothing per record, a zone costs a
//! few dozen bytes per name beyond its wire data, and answering copies
//! ready-made fragments.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::error::{ErrorKind, ZoneError};
use crate::name::{is_subdomain, labels, Name};
use crate::parser::{Record, RecordRef, RecordSink};
use crate::types::{self, rtype};

/// A small, fast hash for wire names.
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
        // Names share long suffixes; spread them.
        fmix64(self.0)
    }
}

/// murmur3's final mix: every input bit affects every output bit.
#[inline]
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

pub(crate) fn hash_name(key: &[u8]) -> u32 {
    let mut h = FxHasher(key.len() as u64);
    h.write(key);
    h.finish() as u32
}

const NO_NAME: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeRec {
    pub(crate) key_off: u32,
    pub(crate) key_len: u16,
    pub(crate) sets_len: u16,
    /// Offset of the as-written name in `names`, or NO_NAME when it is the key.
    pub(crate) name_off: u32,
    pub(crate) sets_off: u32,
    pub(crate) hash: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SetRec {
    pub(crate) rtype: u16,
    pub(crate) count: u16,
    pub(crate) ttl: u32,
    pub(crate) data_off: u32,
    pub(crate) data_len: u32,
    /// Index into the builder's positions (diagnostics only).
    pub(crate) pos: u32,
}

/// An RRset: every record of one type at one name.
///
/// Its data holds, per record, the wire bytes that follow the owner name in
/// a message (type, class, TTL, RDLENGTH, RDATA), so answering is a copy.
#[derive(Debug, Clone, Copy)]
pub struct RRset<'a> {
    /// Record type.
    pub rtype: u16,
    /// Shared TTL (RFC 2181 section 5.2).
    pub ttl: u32,
    /// Number of records.
    pub count: u16,
    data: &'a [u8],
    /// The RRSIG fragments covering this RRset (empty when unsigned).
    sigs: &'a [u8],
}

impl<'a> RRset<'a> {
    /// The wire fragments (type..rdata) of each record.
    pub fn wire_records(&self) -> impl Iterator<Item = &'a [u8]> {
        wire_records(self.data)
    }

    /// The RDATA of each record.
    pub fn rdatas(&self) -> impl Iterator<Item = &'a [u8]> {
        wire_records(self.data).map(|r| r.get(10..).unwrap_or_default())
    }

    /// The wire fragments of the RRSIG records covering this RRset
    /// (grouped at load, RFC 4035 3.1.1), each with its own TTL.
    pub fn signatures(&self) -> impl Iterator<Item = &'a [u8]> {
        wire_records(self.sigs)
    }

    /// Whether the RRset has signatures.
    pub fn is_signed(&self) -> bool {
        !self.sigs.is_empty()
    }

    /// A one-record RRset made outside the zone: `rec` is the fragment
    /// (type, class, TTL, RDLENGTH, RDATA), unsigned. For the CNAME a
    /// DNAME synthesizes (RFC 6672 3.2).
    pub(crate) fn synthesized(rtype: u16, ttl: u32, rec: &'a [u8]) -> Self {
        RRset {
            rtype,
            ttl,
            count: 1,
            data: rec,
            sigs: &[],
        }
    }

    /// The same records (for identity checks).
    pub(crate) fn same_as(&self, other: &RRset<'_>) -> bool {
        std::ptr::eq(self.data.as_ptr(), other.data.as_ptr()) && self.data.len() == other.data.len()
    }
}

pub(crate) fn wire_records(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let len = data.get(pos + 8..pos + 10)?;
        let rdlen = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
        let rec = data.get(pos..pos + 10 + rdlen)?;
        pos += 10 + rdlen;
        Some(rec)
    })
}

/// One name in the zone (empty non-terminals have no RRsets).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    arenas: &'a Arenas,
    rec: &'a NodeRec,
}

impl<'a> Node<'a> {
    /// The RRsets at this name.
    pub fn rrsets(&self) -> impl Iterator<Item = RRset<'a>> + 'a {
        let arenas = self.arenas;
        let base = self.rec.sets_off as usize;
        self.set_recs()
            .iter()
            .enumerate()
            .map(move |(i, s)| arenas.rrset_at(s, base + i))
    }

    fn set_recs(&self) -> &'a [SetRec] {
        let start = self.rec.sets_off as usize;
        self.arenas
            .sets
            .get(start..start + usize::from(self.rec.sets_len))
            .unwrap_or_default()
    }

    /// Whether the name has no data (an empty non-terminal).
    pub fn is_empty(&self) -> bool {
        self.rec.sets_len == 0
    }

    /// The RRset of a type, if present.
    pub fn rrset(&self, rt: u16) -> Option<RRset<'a>> {
        let base = self.rec.sets_off as usize;
        self.set_recs()
            .iter()
            .enumerate()
            .find(|(_, s)| s.rtype == rt)
            .map(|(i, s)| self.arenas.rrset_at(s, base + i))
    }

    /// The owner name as written (uncompressed wire format).
    pub fn name_wire(&self) -> &'a [u8] {
        if self.rec.name_off == NO_NAME {
            self.key()
        } else {
            let start = self.rec.name_off as usize;
            self.arenas
                .names
                .get(start..start + usize::from(self.rec.key_len))
                .unwrap_or_default()
        }
    }

    /// The lowercased owner name (the lookup key).
    pub fn key(&self) -> &'a [u8] {
        self.arenas.key(self.rec)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Arenas {
    pub(crate) keys: Vec<u8>,
    pub(crate) names: Vec<u8>,
    pub(crate) nodes: Vec<NodeRec>,
    pub(crate) sets: Vec<SetRec>,
    pub(crate) data: Vec<u8>,
    /// Open addressing, linear probing: (hash << 32) | (node index + 1),
    /// 0 = empty. The hash in the slot spares a visit to the node (a cache
    /// miss) for every non-matching probe.
    pub(crate) slots: Vec<u64>,
    /// Nodes from this index on are not in `slots` yet: while loading, new
    /// nodes are slotted in batches, whose independent probes overlap their
    /// cache misses instead of stalling on one per record.
    pub(crate) unslotted: usize,
    /// Load-time bit set over node hashes (emptied by `finish`): a clear
    /// bit proves a name new without probing `slots`, which is far larger
    /// than the caches.
    pub(crate) seen: Vec<u64>,
    /// Per set index: the (offset, length) in `data` of the RRSIGs that
    /// cover it. Empty for unsigned zones, so they pay nothing.
    pub(crate) sig_ranges: Vec<(u32, u32)>,
}

impl Arenas {
    pub(crate) fn key(&self, n: &NodeRec) -> &[u8] {
        let start = n.key_off as usize;
        self.keys
            .get(start..start + usize::from(n.key_len))
            .unwrap_or_default()
    }

    fn rrset(&self, s: &SetRec) -> RRset<'_> {
        let start = s.data_off as usize;
        RRset {
            rtype: s.rtype,
            ttl: s.ttl,
            count: s.count,
            data: self
                .data
                .get(start..start + s.data_len as usize)
                .unwrap_or_default(),
            sigs: &[],
        }
    }

    /// The RRset of set record `s` at index `idx`, with its signatures.
    fn rrset_at(&self, s: &SetRec, idx: usize) -> RRset<'_> {
        let mut set = self.rrset(s);
        if let Some(&(off, len)) = self.sig_ranges.get(idx) {
            let off = off as usize;
            set.sigs = self.data.get(off..off + len as usize).unwrap_or_default();
        }
        set
    }

    /// Rebuilds `slots` without the nodes marked in `hidden` (NSEC3
    /// owners, RFC 5155 7.2.8: they answer as if absent).
    pub(crate) fn reslot_without(&mut self, hidden: &[bool]) {
        let want = self.slots.len().max(16);
        let mut slots = vec![0u64; want];
        let mask = want - 1;
        for (idx, n) in self.nodes.iter().enumerate() {
            if hidden.get(idx).copied().unwrap_or(false) {
                continue;
            }
            let mut i = n.hash as usize & mask;
            while slots.get(i).is_some_and(|&s| s != 0) {
                i = (i + 1) & mask;
            }
            if let Some(s) = slots.get_mut(i) {
                *s = u64::from(n.hash) << 32 | (idx as u64 + 1);
            }
        }
        self.slots = slots;
        self.unslotted = self.nodes.len();
    }

    pub(crate) fn find(&self, key: &[u8], hash: u32) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = hash as usize & mask;
        loop {
            let slot = *self.slots.get(i)?;
            if slot == 0 {
                return None;
            }
            if (slot >> 32) as u32 == hash {
                let idx = (slot & 0xffff_ffff) as usize - 1;
                if self.nodes.get(idx).is_some_and(|n| self.key(n) == key) {
                    return Some(idx);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self, min_nodes: usize) {
        let want = (min_nodes.max(8) * 2).next_power_of_two();
        if want <= self.slots.len() {
            return;
        }
        self.unslotted = self.nodes.len();
        let mut slots = vec![0u64; want];
        let mask = want - 1;
        for (idx, n) in self.nodes.iter().enumerate() {
            let mut i = n.hash as usize & mask;
            while slots.get(i).is_some_and(|&s| s != 0) {
                i = (i + 1) & mask;
            }
            if let Some(s) = slots.get_mut(i) {
                *s = u64::from(n.hash) << 32 | (idx as u64 + 1);
            }
        }
        self.slots = slots;
    }

    /// The word and bit of `hash` in `seen`.
    fn seen_bit(&self, hash: u32) -> Option<(usize, u64)> {
        let bits = self.seen.len() * 64;
        let i = hash.rotate_left(13) as usize & bits.checked_sub(1)?;
        Some((i / 64, 1u64 << (i % 64)))
    }

    /// Sizes `seen` for `nodes` names (about 1 in 8 bits set) and marks
    /// every existing node.
    fn size_seen(&mut self, nodes: usize) {
        let words = (nodes.max(64) * 8).next_power_of_two() / 64;
        if words <= self.seen.len() {
            return;
        }
        self.seen = vec![0u64; words];
        for i in 0..self.nodes.len() {
            let hash = self.nodes.get(i).map_or(0, |n| n.hash);
            self.mark_seen(hash);
        }
    }

    fn mark_seen(&mut self, hash: u32) {
        if let Some((w, b)) = self.seen_bit(hash) {
            if let Some(word) = self.seen.get_mut(w) {
                *word |= b;
            }
        }
    }

    /// Finds a node while loading: most names are new, and `seen` says so
    /// without touching `slots`.
    fn find_loading(&mut self, key: &[u8], hash: u32) -> Option<usize> {
        if let Some((w, b)) = self.seen_bit(hash) {
            if self.seen.get(w).is_some_and(|&word| word & b == 0) {
                return None;
            }
        }
        self.slot_pending();
        self.find(key, hash)
    }

    /// Puts the nodes added since the last call into `slots`.
    fn slot_pending(&mut self) {
        if self.unslotted >= self.nodes.len() {
            return;
        }
        if self.nodes.len() * 2 > self.slots.len() {
            // Rebuilding slots every node, the pending ones included.
            self.grow(self.nodes.len());
            return;
        }
        let mask = self.slots.len() - 1;
        for idx in self.unslotted..self.nodes.len() {
            let hash = self.nodes.get(idx).map_or(0, |n| n.hash);
            let mut i = hash as usize & mask;
            while self.slots.get(i).is_some_and(|&s| s != 0) {
                i = (i + 1) & mask;
            }
            if let Some(s) = self.slots.get_mut(i) {
                *s = u64::from(hash) << 32 | (idx as u64 + 1);
            }
        }
        self.unslotted = self.nodes.len();
    }

    /// Adds a node (the key must be absent) and returns its index; it
    /// reaches `slots` at the next `slot_pending`.
    fn insert(&mut self, key: &[u8], name: Option<&[u8]>, hash: u32) -> usize {
        if self.nodes.len() * 4 >= self.seen.len() * 64 {
            self.size_seen(self.nodes.len() + 1);
        }
        let name_off = match name {
            Some(n) => {
                let off = self.names.len() as u32;
                self.names.extend_from_slice(n);
                off
            }
            None => NO_NAME,
        };
        let idx = self.nodes.len();
        self.nodes.push(NodeRec {
            key_off: self.keys.len() as u32,
            key_len: key.len() as u16,
            sets_len: 0,
            name_off,
            sets_off: self.sets.len() as u32,
            hash,
        });
        self.keys.extend_from_slice(key);
        self.mark_seen(hash);
        idx
    }

    pub(crate) fn node(&self, idx: usize) -> Option<Node<'_>> {
        Some(Node {
            arenas: self,
            rec: self.nodes.get(idx)?,
        })
    }
}

/// An authoritative zone, checked and ready to answer from.
#[derive(Debug)]
pub struct Zone {
    apex: Name,
    apex_lc: Box<[u8]>,
    apex_labels: usize,
    class: u16,
    arenas: Arenas,
    record_count: usize,
    /// Denial-of-existence tables of a signed zone.
    pub(crate) dnssec: Option<Box<crate::dnssec::Dnssec>>,
    /// Differences from earlier versions, oldest first (IXFR).
    pub(crate) history: Vec<Arc<crate::ixfr::Diff>>,
    /// A secondary's copy past its SOA expire: answered SERVFAIL.
    expired: std::sync::atomic::AtomicBool,
}

/// The result of building a zone: the zone plus warnings, or all errors.
pub type BuildResult = Result<(Zone, Vec<ZoneError>), Vec<ZoneError>>;

/// Builds a [`Zone`] from records as they are parsed (a [`RecordSink`]),
/// then runs the remaining checks in [`finish`](ZoneBuilder::finish).
#[derive(Debug)]
pub struct ZoneBuilder {
    apex: Name,
    apex_lc: Box<[u8]>,
    class: Option<u16>,
    arenas: Arenas,
    /// Where each RRset's first record was written: (file, line, column).
    positions: Vec<(u32, u32, u32)>,
    files: Vec<Arc<str>>,
    errors: Vec<ZoneError>,
    warnings: Vec<ZoneError>,
    soa_count: usize,
    record_count: usize,
    has_delegation: bool,
    /// RRSIG, NSEC or NSEC3 records seen: `finish` prepares DNSSEC serving.
    has_dnssec: bool,
    /// The apex node exists (ancestor walks stop there).
    apex_seen: bool,
    /// In-zone MX/NS targets to check at the end: (target key, rtype, owner node, pos).
    targets: Vec<(Box<[u8]>, u16, u32, u32)>,
    key: Vec<u8>,
    /// The node the previous record went to, with its key.
    last: Option<usize>,
    last_key: Vec<u8>,
}

impl ZoneBuilder {
    /// A builder for the zone at `origin`.
    pub fn new(origin: &Name) -> Self {
        ZoneBuilder {
            apex: origin.clone(),
            apex_lc: origin.as_wire().to_ascii_lowercase().into(),
            class: None,
            arenas: Arenas::default(),
            positions: Vec::new(),
            files: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            soa_count: 0,
            record_count: 0,
            has_delegation: false,
            has_dnssec: false,
            apex_seen: false,
            targets: Vec::new(),
            key: Vec::with_capacity(255),
            last: None,
            last_key: Vec::with_capacity(255),
        }
    }

    /// Pre-sizes the tables for about `names` names and `bytes` of data.
    pub fn reserve(&mut self, names: usize, bytes: usize) {
        let a = &mut self.arenas;
        a.grow(names);
        a.size_seen(names);
        a.nodes.reserve(names);
        a.sets.reserve(names);
        a.keys.reserve(names * 16);
        a.data.reserve(bytes);
        self.positions.reserve(names);
    }

    fn file_index(&mut self, file: &Arc<str>) -> u32 {
        if let Some(last) = self.files.last() {
            if Arc::ptr_eq(last, file) {
                return (self.files.len() - 1) as u32;
            }
        }
        match self.files.iter().position(|f| **f == **file) {
            Some(i) => i as u32,
            None => {
                self.files.push(file.clone());
                (self.files.len() - 1) as u32
            }
        }
    }

    fn located(&self, pos: u32, msg: String) -> ZoneError {
        let (f, line, column) = self
            .positions
            .get(pos as usize)
            .copied()
            .unwrap_or((0, 0, 0));
        ZoneError {
            file: self
                .files
                .get(f as usize)
                .cloned()
                .unwrap_or_else(|| Arc::from("")),
            line,
            column,
            kind: ErrorKind::Check(msg),
        }
    }

    /// Finds or creates the node for `self.key`; new nodes get their
    /// missing ancestors as empty non-terminals (RFC 4592 2.2.2).
    fn node_for(&mut self, owner: &[u8]) -> usize {
        if let Some(i) = self.last {
            if self.last_key == self.key {
                return i;
            }
        }
        let hash = hash_name(&self.key);
        let idx = match self.arenas.find_loading(&self.key, hash) {
            Some(i) => i,
            None => {
                let name = (owner != self.key.as_slice()).then_some(owner);
                let idx = self.arenas.insert(&self.key, name, hash);
                self.apex_seen |= *self.key == *self.apex_lc;
                let mut anc: &[u8] = &self.key;
                let apex_len = self.apex_lc.len();
                while anc.len() > apex_len {
                    let skip = 1 + usize::from(*anc.first().unwrap_or(&0));
                    anc = anc.get(skip..).unwrap_or_default();
                    if anc.len() < apex_len || (anc.len() == apex_len && self.apex_seen) {
                        break;
                    }
                    let h = hash_name(anc);
                    if self.arenas.find_loading(anc, h).is_some() {
                        break;
                    }
                    self.arenas.insert(anc, None, h);
                    self.apex_seen |= anc.len() == apex_len;
                }
                idx
            }
        };
        self.last = Some(idx);
        self.last_key.clear();
        self.last_key.extend_from_slice(&self.key);
        idx
    }

    /// Runs the checks that need the whole zone and returns it (with
    /// warnings) or every error, in file order.
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
        self.arenas.slot_pending();
        self.arenas.seen = Vec::new();
        let a = &self.arenas;
        if self.soa_count == 0 {
            errors.push(self.located(0, format!("no SOA record at the zone apex {origin}")));
        }
        let apex = a
            .find(&apex_lc, hash_name(&apex_lc))
            .and_then(|i| a.node(i));
        if apex.is_none_or(|n| n.rrset(rtype::NS).is_none()) && !self.positions.is_empty() {
            errors.push(self.located(0, format!("no NS records at the zone apex {origin}")));
        }
        for (target, rt, owner, pos) in &self.targets {
            let tnode = a.find(target, hash_name(target)).and_then(|i| a.node(i));
            let owner = a
                .node(*owner as usize)
                .map(|n| display_wire(n.name_wire()))
                .unwrap_or_default();
            let tname = display_wire(target);
            if tnode.is_some_and(|n| n.rrset(rtype::CNAME).is_some()) {
                errors.push(self.located(
                    *pos,
                    format!(
                        "{owner} {} target {tname} is a CNAME (RFC 2181 10.3)",
                        types::type_to_string(*rt)
                    ),
                ));
            } else if *rt == rtype::NS
                && !tnode
                    .is_some_and(|n| n.rrset(rtype::A).is_some() || n.rrset(rtype::AAAA).is_some())
            {
                errors.push(self.located(
                    *pos,
                    format!("NS {tname} of {owner} has no address records (A or AAAA)"),
                ));
            }
        }
        if self.has_delegation {
            // Data below a zone cut (other than glue) is never served.
            for idx in 0..a.nodes.len() {
                let Some(node) = a.node(idx) else { continue };
                let mut anc = node.key();
                while anc.len() > apex_lc.len() {
                    let skip = 1 + usize::from(*anc.first().unwrap_or(&0));
                    anc = anc.get(skip..).unwrap_or_default();
                    if anc.len() <= apex_lc.len() {
                        break;
                    }
                    let cut = a.find(anc, hash_name(anc)).and_then(|i| a.node(i));
                    if cut.is_some_and(|c| c.rrset(rtype::NS).is_some()) {
                        for s in node.set_recs() {
                            if !matches!(s.rtype, rtype::A | rtype::AAAA) {
                                warnings.push(self.located(
                                    s.pos,
                                    format!(
                                        "{} {} is below a delegation and will not be served",
                                        display_wire(node.name_wire()),
                                        types::type_to_string(s.rtype)
                                    ),
                                ));
                            }
                        }
                        break;
                    }
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(errors);
        }
        warnings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        let mut arenas = self.arenas;
        let dnssec = if self.has_dnssec {
            crate::dnssec::prepare(&mut arenas, &apex_lc).map(Box::new)
        } else {
            None
        };
        let zone = Zone {
            apex: origin,
            apex_labels: labels(&apex_lc).count(),
            apex_lc,
            class: self.class.unwrap_or(types::class::IN),
            arenas,
            record_count: self.record_count,
            dnssec,
            history: Vec::new(),
            expired: std::sync::atomic::AtomicBool::new(false),
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
            self.errors.push(at(format!(
                "{} is outside the zone {}",
                show_owner(),
                self.apex
            )));
            return;
        }
        let class = *self.class.get_or_insert(rec.class);
        if self.positions.is_empty() {
            // Position 0 anchors whole-zone errors (no SOA, no NS).
            self.positions.push((file, rec.line, rec.column));
        }
        let is_apex = *self.key == *self.apex_lc;
        if rec.rtype == rtype::SOA {
            if !is_apex {
                self.errors.push(at(format!(
                    "SOA record at {} is not at the zone apex",
                    show_owner()
                )));
                return;
            }
            self.soa_count += 1;
            if self.soa_count > 1 {
                self.errors
                    .push(at("more than one SOA record at the zone apex".into()));
                return;
            }
        }
        let Ok(rdlen) = u16::try_from(rec.rdata.len()) else {
            self.errors
                .push(at("record data longer than 65535 octets".into()));
            return;
        };
        let idx = self.node_for(rec.owner);
        let Some(node) = self.arenas.nodes.get(idx).copied() else {
            return;
        };
        let a = &mut self.arenas;
        let sets_start = node.sets_off as usize;
        let sets_end = sets_start + usize::from(node.sets_len);
        let existing = a
            .sets
            .get(sets_start..sets_end)
            .unwrap_or_default()
            .iter()
            .position(|s| s.rtype == rec.rtype);
        let mut frag = [0u8; 10];
        frag[..2].copy_from_slice(&rec.rtype.to_be_bytes());
        frag[2..4].copy_from_slice(&class.to_be_bytes());
        frag[8..10].copy_from_slice(&rdlen.to_be_bytes());
        match existing {
            Some(k) => {
                let Some(set) = a.sets.get(sets_start + k).copied() else {
                    return;
                };
                // RRSIGs at one name cover RRsets of different TTLs: each
                // keeps its own (RFC 4034 3, RFC 4035 2.2).
                let own_ttl = rec.rtype == rtype::RRSIG;
                if set.ttl != rec.ttl && !own_ttl {
                    self.warnings.push(at(format!(
                        "TTL {} differs from the RRset's TTL {}; using {} (RFC 2181 5.2)",
                        rec.ttl, set.ttl, set.ttl
                    )));
                }
                if a.rrset(&set).rdatas().any(|r| r == rec.rdata) {
                    self.warnings.push(at(format!(
                        "duplicate {} record ignored (RFC 2181 5)",
                        types::type_to_string(rec.rtype)
                    )));
                    return;
                }
                if set.rtype == rtype::CNAME {
                    self.errors.push(at(format!(
                        "more than one CNAME record at {}",
                        show_owner()
                    )));
                    return;
                }
                if set.count == u16::MAX {
                    self.errors
                        .push(at("more than 65535 records in one RRset".into()));
                    return;
                }
                // Keep each RRset contiguous: move it to the end of the data
                // arena unless it is already there (records of one name
                // usually arrive together, so this is rare).
                let mut set = set;
                if set.data_off as usize + set.data_len as usize != a.data.len() {
                    let start = set.data_off as usize;
                    let old = start..start + set.data_len as usize;
                    set.data_off = a.data.len() as u32;
                    a.data.extend_from_within(old);
                }
                let ttl = if own_ttl { rec.ttl } else { set.ttl };
                frag[4..8].copy_from_slice(&ttl.to_be_bytes());
                a.data.extend_from_slice(&frag);
                a.data.extend_from_slice(rec.rdata);
                set.data_len += 10 + u32::from(rdlen);
                set.count += 1;
                if let Some(slot) = a.sets.get_mut(sets_start + k) {
                    *slot = set;
                }
            }
            None => {
                // RFC 1034 3.6.2 / RFC 2181 10.1: a CNAME stands alone.
                let others = a.sets.get(sets_start..sets_end).unwrap_or_default();
                let exempt = |t: u16| matches!(t, rtype::RRSIG | rtype::NSEC);
                if rec.rtype == rtype::CNAME && others.iter().any(|s| !exempt(s.rtype)) {
                    self.errors.push(at(format!(
                        "CNAME and other data at {} (RFC 1034 3.6.2)",
                        show_owner()
                    )));
                    return;
                }
                if !exempt(rec.rtype) && others.iter().any(|s| s.rtype == rtype::CNAME) {
                    self.errors.push(at(format!(
                        "CNAME and other data at {} ({}) (RFC 1034 3.6.2)",
                        show_owner(),
                        types::type_to_string(rec.rtype)
                    )));
                    return;
                }
                // The node's set list must end the sets arena to grow.
                let mut node = node;
                if sets_end != a.sets.len() {
                    node.sets_off = a.sets.len() as u32;
                    a.sets.extend_from_within(sets_start..sets_end);
                }
                frag[4..8].copy_from_slice(&rec.ttl.to_be_bytes());
                let data_off = a.data.len() as u32;
                a.data.extend_from_slice(&frag);
                a.data.extend_from_slice(rec.rdata);
                let pos = self.positions.len() as u32;
                self.positions.push((file, rec.line, rec.column));
                a.sets.push(SetRec {
                    rtype: rec.rtype,
                    count: 1,
                    ttl: rec.ttl,
                    data_off,
                    data_len: 10 + u32::from(rdlen),
                    pos,
                });
                node.sets_len += 1;
                if let Some(slot) = a.nodes.get_mut(idx) {
                    *slot = node;
                }
            }
        }
        if rec.rtype == rtype::NS && !is_apex {
            self.has_delegation = true;
        }
        self.has_dnssec |= matches!(rec.rtype, rtype::RRSIG | rtype::NSEC | rtype::NSEC3);
        let target_off = match rec.rtype {
            rtype::MX => Some(2),
            rtype::NS => Some(0),
            _ => None,
        };
        if let Some(off) = target_off {
            let t = rec
                .rdata
                .get(off..)
                .unwrap_or_default()
                .to_ascii_lowercase();
            if is_subdomain(&t, &self.apex_lc) {
                let pos = self.positions.len().saturating_sub(1) as u32;
                let pos = a_pos(&self.arenas, idx, rec.rtype).unwrap_or(pos);
                self.targets
                    .push((t.into_boxed_slice(), rec.rtype, idx as u32, pos));
            }
        }
        self.record_count += 1;
    }
}

/// Position index of a node's RRset of a type.
fn a_pos(a: &Arenas, idx: usize, rt: u16) -> Option<u32> {
    a.node(idx)?
        .set_recs()
        .iter()
        .find(|s| s.rtype == rt)
        .map(|s| s.pos)
}

impl Zone {
    /// Checks already-parsed records and builds the zone (see
    /// [`ZoneBuilder::finish`] for the checks).
    pub fn build(origin: &Name, records: Vec<Record>) -> BuildResult {
        let mut b = ZoneBuilder::new(origin);
        b.reserve(
            records.len(),
            records.iter().map(|r| r.rdata.len() + 10).sum(),
        );
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

    /// Marks a secondary's zone expired (answered SERVFAIL) or not.
    pub fn set_expired(&self, expired: bool) {
        self.expired
            .store(expired, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the zone is expired.
    pub fn is_expired(&self) -> bool {
        self.expired.load(std::sync::atomic::Ordering::Relaxed)
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
        self.arenas.nodes.len()
    }

    /// Bytes held by the zone's tables (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        let a = &self.arenas;
        a.keys.capacity()
            + a.names.capacity()
            + a.data.capacity()
            + a.nodes.capacity() * std::mem::size_of::<NodeRec>()
            + a.sets.capacity() * std::mem::size_of::<SetRec>()
            + a.slots.capacity() * 8
    }

    /// The node at an index of the node table.
    pub(crate) fn node_at(&self, idx: u32) -> Option<Node<'_>> {
        self.arenas.node(idx as usize)
    }

    pub(crate) fn arenas(&self) -> &Arenas {
        &self.arenas
    }

    /// The node at a lowercased wire name.
    pub fn node(&self, key: &[u8]) -> Option<Node<'_>> {
        self.arenas
            .find(key, hash_name(key))
            .and_then(|i| self.arenas.node(i))
    }

    /// The node at a lowercased wire name, with the zone's copy of the key.
    pub fn node_entry(&self, key: &[u8]) -> Option<(&[u8], Node<'_>)> {
        self.node(key).map(|n| (n.key(), n))
    }

    /// All nodes with their lowercased keys, in load order.
    pub fn nodes(&self) -> impl Iterator<Item = (&[u8], Node<'_>)> {
        (0..self.arenas.nodes.len()).filter_map(|i| self.arenas.node(i).map(|n| (n.key(), n)))
    }

    /// The apex SOA RRset (always present in a built zone).
    pub fn soa(&self) -> Option<RRset<'_>> {
        self.node(&self.apex_lc).and_then(|n| n.rrset(rtype::SOA))
    }

    /// The SOA serial.
    pub fn serial(&self) -> Option<u32> {
        let rd = self.soa()?.rdatas().next()?;
        let tail = rd.get(rd.len().checked_sub(20)?..)?;
        Some(u32::from_be_bytes(
            <[u8; 4]>::try_from(tail.get(..4)?).ok()?,
        ))
    }

    /// Rewrites the serial inside the apex SOA's stored RDATA.
    pub(crate) fn set_soa_serial(&mut self, serial: u32) {
        let Some(idx) = self.arenas.find(&self.apex_lc, hash_name(&self.apex_lc)) else {
            return;
        };
        let Some(rec) = self.arenas.nodes.get(idx).copied() else {
            return;
        };
        let start = rec.sets_off as usize;
        let soa = self
            .arenas
            .sets
            .get(start..start + usize::from(rec.sets_len))
            .and_then(|sets| sets.iter().find(|s| s.rtype == rtype::SOA))
            .copied();
        if let Some(set) = soa {
            // One SOA record: its serial is 20 octets before the end.
            let end = set.data_off as usize + set.data_len as usize;
            if let Some(dst) = end
                .checked_sub(20)
                .and_then(|at| self.arenas.data.get_mut(at..at + 4))
            {
                dst.copy_from_slice(&serial.to_be_bytes());
            }
        }
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

    /// Adds (or replaces) a zone already shared (a reload keeping an
    /// unchanged version).
    pub fn insert_shared(&mut self, zone: Arc<Zone>) {
        self.zones.insert(zone.apex_lc.clone(), zone);
    }

    /// A copy of the catalog with `zone` added or replacing its version.
    pub fn with_zone(&self, zone: Arc<Zone>) -> Catalog {
        let mut zones = self.zones.clone();
        zones.insert(zone.apex_lc.clone(), zone);
        Catalog { zones }
    }

    /// The zone whose apex is `apex_lc` (lowercased wire), exactly.
    pub fn get(&self, apex_lc: &[u8]) -> Option<&Arc<Zone>> {
        self.zones.get(apex_lc)
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
