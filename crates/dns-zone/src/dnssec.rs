//! Serving zones signed beforehand (`dnssec-signzone`, `ldns-signzone`,
//! Knot's `kzonesign`): RFC 4035 section 3.1 and RFC 5155 section 7.2.
//!
//! Everything a DO query needs is prepared at load, so answering only
//! looks things up: the RRSIGs at a name are grouped by the type they
//! cover (each RRset points at its group), the NSEC owners are sorted in
//! canonical order (RFC 4034 6.1) for the "covering NSEC" search, and the
//! NSEC3 owners are sorted by their hash and hidden from ordinary lookups
//! (RFC 5155 7.2.8).

use std::cmp::Ordering;

use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};

use crate::name::MAX_NAME_LEN;
use crate::types::rtype;
use crate::zone::{wire_records, Arenas, Node, Zone};

/// An NSEC3 hash: SHA-1, the only algorithm defined (RFC 5155 11).
pub(crate) type Hash = [u8; 20];

/// Iterations above this are refused (RFC 5155 10.3's largest limit):
/// every negative answer hashes up to a few names this many times.
const MAX_ITERATIONS: u16 = 2500;

/// Denial-of-existence tables of a signed zone.
#[derive(Debug)]
pub(crate) struct Dnssec {
    /// Indexes of the nodes holding an NSEC RRset, canonical order.
    nsec: Vec<u32>,
    nsec3: Option<Nsec3Chain>,
}

#[derive(Debug)]
struct Nsec3Chain {
    iterations: u16,
    salt: Box<[u8]>,
    /// (hash, node index), sorted by hash.
    owners: Vec<(Hash, u32)>,
}

/// The type an RRSIG fragment (type..rdata) covers.
fn covered(frag: &[u8]) -> u16 {
    match frag.get(10..12) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Groups signatures, sorts the NSEC chain, indexes the NSEC3 chain and
/// hides NSEC3 owners. `None` when the zone has no RRSIG, NSEC or NSEC3
/// after all (then it is served as an unsigned zone).
pub(crate) fn prepare(a: &mut Arenas, apex: &[u8]) -> Option<Dnssec> {
    group_signatures(a);
    let mut nsec = Vec::new();
    let params = nsec3_params(a, apex);
    let mut owners = Vec::new();
    let mut hidden = vec![false; a.nodes.len()];
    let mut any_hidden = false;
    for idx in 0..a.nodes.len() {
        let Some(node) = a.node(idx) else { continue };
        if node.rrset(rtype::NSEC).is_some() {
            nsec.push(idx as u32);
        }
        let Some(n3) = node.rrset(rtype::NSEC3) else {
            continue;
        };
        let Some((iterations, salt)) = &params else {
            continue;
        };
        // Only the records of the chain NSEC3PARAM names (RFC 5155 7.3).
        let in_chain = n3
            .rdatas()
            .any(|rd| same_params(rd, *iterations, salt).is_some());
        let key = node.key();
        let first = key
            .get(1..1 + usize::from(key.first().copied().unwrap_or(0)))
            .unwrap_or_default();
        let parent = key.get(1 + first.len()..).unwrap_or_default();
        if !in_chain || parent != apex {
            continue;
        }
        let Some(hash) = base32hex(first) else {
            continue;
        };
        owners.push((hash, idx as u32));
        if node
            .rrsets()
            .all(|s| matches!(s.rtype, rtype::NSEC3 | rtype::RRSIG))
        {
            if let Some(h) = hidden.get_mut(idx) {
                *h = true;
                any_hidden = true;
            }
        }
    }
    if any_hidden {
        a.reslot_without(&hidden);
    }
    {
        let a: &Arenas = a;
        let key = |i: &u32| {
            a.nodes
                .get(*i as usize)
                .map(|n| a.key(n))
                .unwrap_or_default()
        };
        nsec.sort_unstable_by(|x, y| canonical_cmp(key(x), key(y)));
    }
    owners.sort_unstable_by_key(|x| x.0);
    let nsec3 = match params {
        Some((iterations, salt)) if !owners.is_empty() => Some(Nsec3Chain {
            iterations,
            salt,
            owners,
        }),
        _ => None,
    };
    let signed = a.sig_ranges.iter().any(|r| r.1 != 0);
    (signed || !nsec.is_empty() || nsec3.is_some()).then_some(Dnssec { nsec, nsec3 })
}

/// Sorts each name's RRSIG RRset by covered type, in place, and points
/// every RRset at its group (RFC 4035 3.1.1: an answer carries the RRSIGs
/// of the RRsets it holds, not all the RRSIGs at the name).
fn group_signatures(a: &mut Arenas) {
    let mut ranges = vec![(0u32, 0u32); a.sets.len()];
    let mut sorted: Vec<u8> = Vec::new();
    for n in 0..a.nodes.len() {
        let Some(rec) = a.nodes.get(n).copied() else {
            continue;
        };
        let base = rec.sets_off as usize;
        let Some(sets) = a.sets.get(base..base + usize::from(rec.sets_len)) else {
            continue;
        };
        let Some(sig) = sets.iter().find(|s| s.rtype == rtype::RRSIG) else {
            continue;
        };
        let start = sig.data_off as usize;
        let end = start + sig.data_len as usize;
        let Some(bytes) = a.data.get(start..end) else {
            continue;
        };
        let mut recs: Vec<&[u8]> = wire_records(bytes).collect();
        recs.sort_by_key(|r| covered(r));
        sorted.clear();
        let mut groups: Vec<(u16, usize, usize)> = Vec::new();
        for r in &recs {
            let t = covered(r);
            let at = sorted.len();
            sorted.extend_from_slice(r);
            match groups.last_mut() {
                Some(g) if g.0 == t => g.2 = sorted.len(),
                _ => groups.push((t, at, sorted.len())),
            }
        }
        for (t, gs, ge) in groups {
            if let Some(i) = sets.iter().position(|s| s.rtype == t) {
                if let Some(r) = ranges.get_mut(base + i) {
                    *r = ((start + gs) as u32, (ge - gs) as u32);
                }
            }
        }
        if let Some(dst) = a.data.get_mut(start..end) {
            if dst.len() == sorted.len() {
                dst.copy_from_slice(&sorted);
            }
        }
    }
    a.sig_ranges = ranges;
}

/// The NSEC3 chain's iterations and salt: from the apex NSEC3PARAM
/// (RFC 5155 4), SHA-1 only.
fn nsec3_params(a: &Arenas, apex: &[u8]) -> Option<(u16, Box<[u8]>)> {
    let idx = a.find(apex, crate::zone::hash_name(apex))?;
    let rd = a.node(idx)?.rrset(rtype::NSEC3PARAM)?.rdatas().next()?;
    let (&alg, rest) = rd.split_first()?;
    let iterations = u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]);
    let salt_len = usize::from(*rest.get(3)?);
    let salt = rest.get(4..4 + salt_len)?;
    (alg == 1 && iterations <= MAX_ITERATIONS).then(|| (iterations, salt.into()))
}

/// `Some` when an NSEC3 RDATA has the chain's algorithm, iterations and salt.
fn same_params(rd: &[u8], iterations: u16, salt: &[u8]) -> Option<()> {
    let alg = *rd.first()?;
    let it = u16::from_be_bytes([*rd.get(2)?, *rd.get(3)?]);
    let salt_len = usize::from(*rd.get(4)?);
    let s = rd.get(5..5 + salt_len)?;
    (alg == 1 && it == iterations && s == salt).then_some(())
}

/// Decodes a 32-character base32hex label (RFC 4648 7) into a hash.
fn base32hex(label: &[u8]) -> Option<Hash> {
    if label.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut acc = 0u64;
    let mut bits = 0u32;
    let mut o = 0usize;
    for &c in label {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'v' => c - b'a' + 10,
            b'A'..=b'V' => c - b'A' + 10,
            _ => return None,
        };
        acc = acc << 5 | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(o)? = (acc >> bits) as u8;
            o += 1;
        }
    }
    Some(out)
}

/// The NSEC3 hash of a lowercased wire name (RFC 5155 5).
pub(crate) fn nsec3_hash(name: &[u8], salt: &[u8], iterations: u16) -> Hash {
    let mut ctx = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(name);
    ctx.update(salt);
    let mut d = ctx.finish();
    for _ in 0..iterations {
        let mut ctx = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
        ctx.update(d.as_ref());
        ctx.update(salt);
        d = ctx.finish();
    }
    let mut out = [0u8; 20];
    if let Some(src) = d.as_ref().get(..20) {
        out.copy_from_slice(src);
    }
    out
}

/// Label start offsets of a wire name (at most 128 labels).
pub(crate) fn label_offsets(name: &[u8], offs: &mut [u8; 128]) -> usize {
    let mut n = 0usize;
    let mut p = 0usize;
    while let Some(&len) = name.get(p) {
        if len == 0 || n >= 128 {
            break;
        }
        if let Some(slot) = offs.get_mut(n) {
            *slot = p as u8;
        }
        n += 1;
        p += 1 + usize::from(len);
    }
    n
}

/// Canonical DNS name order of two lowercased wire names (RFC 4034 6.1):
/// label by label from the rightmost, octets compared as unsigned.
pub(crate) fn canonical_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let mut ao = [0u8; 128];
    let mut bo = [0u8; 128];
    let na = label_offsets(a, &mut ao);
    let nb = label_offsets(b, &mut bo);
    for k in 1..=na.min(nb) {
        let la = label(a, ao.get(na - k).copied().unwrap_or(0));
        let lb = label(b, bo.get(nb - k).copied().unwrap_or(0));
        match la.cmp(lb) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    na.cmp(&nb)
}

fn label(name: &[u8], off: u8) -> &[u8] {
    let off = usize::from(off);
    let len = usize::from(name.get(off).copied().unwrap_or(0));
    name.get(off + 1..off + 1 + len).unwrap_or_default()
}

/// `*.` + `ce` into `buf`.
pub(crate) fn wildcard_of<'b>(ce: &[u8], buf: &'b mut [u8; MAX_NAME_LEN + 2]) -> Option<&'b [u8]> {
    if ce.len() + 2 > MAX_NAME_LEN {
        return None;
    }
    let dst = buf.get_mut(..ce.len() + 2)?;
    dst.get_mut(..2)?.copy_from_slice(b"\x01*");
    dst.get_mut(2..)?.copy_from_slice(ce);
    Some(dst)
}

impl Zone {
    /// Whether the zone carries DNSSEC records to serve with DO.
    pub fn is_signed(&self) -> bool {
        self.dnssec.is_some()
    }

    /// Whether negative answers use NSEC3 (else NSEC).
    pub(crate) fn uses_nsec3(&self) -> bool {
        self.dnssec.as_ref().is_some_and(|d| d.nsec3.is_some())
    }

    /// The NSEC owner equal to or canonically before `name` (lowercased):
    /// its NSEC matches or covers `name` (RFC 4035 3.1.3).
    pub(crate) fn nsec_covering(&self, name: &[u8]) -> Option<Node<'_>> {
        let d = self.dnssec.as_ref()?;
        let a = self.arenas();
        let key = |i: u32| {
            a.nodes
                .get(i as usize)
                .map(|n| a.key(n))
                .unwrap_or_default()
        };
        let after = d
            .nsec
            .partition_point(|&i| canonical_cmp(key(i), name) != Ordering::Greater);
        // Before the first owner (never for names in the zone): the last
        // NSEC wraps around to the apex.
        let idx = match after.checked_sub(1) {
            Some(i) => d.nsec.get(i),
            None => d.nsec.last(),
        }?;
        self.node_at(*idx)
    }

    /// The NSEC3 hash of a lowercased name with the zone's parameters.
    pub(crate) fn nsec3_hash_of(&self, name: &[u8]) -> Option<Hash> {
        let c = self.dnssec.as_ref()?.nsec3.as_ref()?;
        Some(nsec3_hash(name, &c.salt, c.iterations))
    }

    /// The NSEC3 owner whose hash equals `h` (`Ok`) or else the one whose
    /// NSEC3 covers it (`Err`), RFC 5155 7.2.
    pub(crate) fn nsec3_find(&self, h: &Hash) -> Option<Result<Node<'_>, Node<'_>>> {
        let c = self.dnssec.as_ref()?.nsec3.as_ref()?;
        match c.owners.binary_search_by(|(x, _)| x.cmp(h)) {
            Ok(i) => self.node_at(c.owners.get(i)?.1).map(Ok),
            Err(i) => {
                let prev = match i.checked_sub(1) {
                    Some(p) => c.owners.get(p),
                    None => c.owners.last(),
                }?;
                self.node_at(prev.1).map(Err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(s: &str) -> Vec<u8> {
        crate::name::Name::parse(s, None)
            .unwrap()
            .as_wire()
            .to_ascii_lowercase()
    }

    #[test]
    fn canonical_order_of_rfc4034_example() {
        // RFC 4034 6.1's list, in order.
        let names = [
            "example.",
            "a.example.",
            "yljkjljk.a.example.",
            "Z.a.example.",
            "zABC.a.EXAMPLE.",
            "z.example.",
            "\\001.z.example.",
            "*.z.example.",
            "\\200.z.example.",
        ];
        let wires: Vec<Vec<u8>> = names.iter().map(|n| wire(n)).collect();
        for w in wires.windows(2) {
            assert_eq!(canonical_cmp(&w[0], &w[1]), Ordering::Less, "{w:?}");
            assert_eq!(canonical_cmp(&w[1], &w[0]), Ordering::Greater);
        }
        assert_eq!(canonical_cmp(&wires[3], &wires[3]), Ordering::Equal);
    }

    #[test]
    fn nsec3_hash_matches_rfc5155_appendix_a() {
        // RFC 5155 Appendix A: salt aabbccdd, 12 iterations.
        let salt = [0xaa, 0xbb, 0xcc, 0xdd];
        let cases = [
            ("example.", "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom"),
            ("a.example.", "35mthgpgcu1qg68fab165klnsnk3dpvl"),
            ("ai.example.", "gjeqe526plbf1g8mklp59enfd789njgi"),
            ("*.w.example.", "r53bq7cc2uvmubfu5ocmm6pers9tk9en"),
        ];
        for (name, b32) in cases {
            let h = nsec3_hash(&wire(name), &salt, 12);
            assert_eq!(Some(h), base32hex(b32.as_bytes()), "{name}");
        }
    }

    #[test]
    fn base32hex_rejects_bad_labels() {
        assert!(base32hex(b"0p9mhaveqvm6t7vbl5lop2u3t2rp3to").is_none());
        assert!(base32hex(b"0p9mhaveqvm6t7vbl5lop2u3t2rp3toz").is_none());
        assert!(base32hex(b"0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM").is_some());
    }

    // ---- answer selection (RFC 4035 3.1, RFC 5155 7.2), fake signatures:
    // the responder picks records, it never checks signatures.

    use std::sync::Arc;

    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name as HName, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

    use crate::{load_zone, Catalog, NoIncludes, Outcome, Responder, ResponderConfig, Transport};

    const SIG: &str = "13 1 300 20300101000000 20200101000000 1 ex. AAAA";

    fn nsec_zone() -> String {
        let sig = |t: &str, labels: u8, ttl: u32| {
            format!("RRSIG {t} 13 {labels} {ttl} 20300101000000 20200101000000 1 ex. AAAA")
        };
        [
            "$TTL 300\n$ORIGIN ex.\n@ SOA ns root 1 2 3 4 60".to_string(),
            format!("@ {}", sig("SOA", 1, 300)),
            "@ NS ns".into(),
            format!("@ {}", sig("NS", 1, 300)),
            "@ 60 NSEC a.b.ex. NS SOA RRSIG NSEC".into(),
            format!("@ 60 {}", sig("NSEC", 1, 60)),
            "a.b A 192.0.2.1".into(),
            format!("a.b {}", sig("A", 3, 300)),
            "a.b 60 NSEC ns.ex. A RRSIG NSEC".into(),
            format!("a.b 60 {}", sig("NSEC", 3, 60)),
            "ns A 192.0.2.2".into(),
            format!("ns {}", sig("A", 2, 300)),
            "ns 60 NSEC *.w.ex. A RRSIG NSEC".into(),
            format!("ns 60 {}", sig("NSEC", 2, 60)),
            "*.w TXT \"x\"".into(),
            format!("*.w {}", sig("TXT", 2, 300)),
            "*.w 60 NSEC ex. TXT RRSIG NSEC".into(),
            format!("*.w 60 {}", sig("NSEC", 2, 60)),
        ]
        .join("\n")
            + "\n"
    }

    fn responder_for(text: &str) -> Responder {
        let origin = crate::name::Name::parse("ex.", None).unwrap();
        let (z, _) = load_zone(text.as_bytes(), "t", &origin, &mut NoIncludes).unwrap();
        assert!(z.is_signed());
        let mut c = Catalog::new();
        c.insert(z);
        Responder::new(Arc::new(c), ResponderConfig::default())
    }

    fn ask(r: &Responder, qname: &str, qtype: RecordType, dnssec_ok: bool) -> Message {
        let mut m = Message::new();
        m.set_id(7);
        m.add_query(Query::query(HName::from_ascii(qname).unwrap(), qtype));
        let mut e = Edns::new();
        e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
        let mut out = Vec::new();
        let q = m.to_bytes().unwrap();
        assert!(matches!(
            r.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out),
            Outcome::Reply
        ));
        Message::from_vec(&out).unwrap()
    }

    /// "owner TYPE" (RRSIGs as "owner RRSIG(covered)"), TTL for RRSIGs.
    fn section(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
        rs.iter()
            .map(|r| {
                if r.record_type() == RecordType::RRSIG {
                    let covered = r.data().to_string();
                    let covered = covered.split_whitespace().next().unwrap().to_string();
                    format!("{} RRSIG({covered}) {}", r.name(), r.ttl())
                } else {
                    format!("{} {}", r.name(), r.record_type())
                }
            })
            .collect()
    }

    #[test]
    fn positive_answer_carries_only_its_own_signature() {
        let r = responder_for(&nsec_zone());
        let m = ask(&r, "ns.ex.", RecordType::A, true);
        assert_eq!(section(m.answers()), ["ns.ex. A", "ns.ex. RRSIG(A) 300"]);
        assert!(m.extensions().as_ref().unwrap().flags().dnssec_ok);
        let m = ask(&r, "ns.ex.", RecordType::A, false);
        assert_eq!(section(m.answers()), ["ns.ex. A"]);
        assert!(!m.extensions().as_ref().unwrap().flags().dnssec_ok);
        // Asked for by type, RRSIG and NSEC are plain data without DO.
        let m = ask(&r, "ns.ex.", RecordType::RRSIG, false);
        assert_eq!(
            section(m.answers()),
            ["ns.ex. RRSIG(A) 300", "ns.ex. RRSIG(NSEC) 60"]
        );
        let m = ask(&r, "ns.ex.", RecordType::NSEC, false);
        assert_eq!(section(m.answers()), ["ns.ex. NSEC"]);
        // ANY without DO: no DNSSEC records; with DO each RRset signed.
        let m = ask(&r, "ns.ex.", RecordType::ANY, false);
        assert_eq!(section(m.answers()), ["ns.ex. A"]);
    }

    #[test]
    fn nxdomain_nodata_and_wildcard_proofs_with_nsec() {
        let r = responder_for(&nsec_zone());
        // NXDOMAIN: the NSEC covering c.ex. and the one covering *.ex.
        let m = ask(&r, "c.ex.", RecordType::A, true);
        assert_eq!(u16::from(m.response_code()), 3);
        assert_eq!(
            section(m.name_servers()),
            [
                "ex. SOA",
                "ex. RRSIG(SOA) 60",
                "a.b.ex. NSEC",
                "a.b.ex. RRSIG(NSEC) 60",
                "ex. NSEC",
                "ex. RRSIG(NSEC) 60"
            ]
        );
        let m = ask(&r, "c.ex.", RecordType::A, false);
        assert_eq!(section(m.name_servers()), ["ex. SOA"]);
        // NODATA: the name's own NSEC.
        let m = ask(&r, "ns.ex.", RecordType::MX, true);
        assert_eq!(
            section(m.name_servers()),
            [
                "ex. SOA",
                "ex. RRSIG(SOA) 60",
                "ns.ex. NSEC",
                "ns.ex. RRSIG(NSEC) 60"
            ]
        );
        // An empty non-terminal: the NSEC before it.
        let m = ask(&r, "b.ex.", RecordType::A, true);
        assert_eq!(u16::from(m.response_code()), 0);
        assert_eq!(
            section(m.name_servers()),
            [
                "ex. SOA",
                "ex. RRSIG(SOA) 60",
                "ex. NSEC",
                "ex. RRSIG(NSEC) 60"
            ]
        );
        // Wildcard answer: the expanded RRset and RRSIG, and the NSEC
        // proving the name itself absent.
        let m = ask(&r, "x.w.ex.", RecordType::TXT, true);
        assert_eq!(
            section(m.answers()),
            ["x.w.ex. TXT", "x.w.ex. RRSIG(TXT) 300"]
        );
        assert_eq!(
            section(m.name_servers()),
            ["*.w.ex. NSEC", "*.w.ex. RRSIG(NSEC) 60"]
        );
        // Wildcard NODATA: the same NSEC proves both.
        let m = ask(&r, "x.w.ex.", RecordType::A, true);
        assert_eq!(
            section(m.name_servers()),
            [
                "ex. SOA",
                "ex. RRSIG(SOA) 60",
                "*.w.ex. NSEC",
                "*.w.ex. RRSIG(NSEC) 60"
            ]
        );
    }

    fn b32hex(h: &[u8]) -> String {
        const A: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
        let mut out = String::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &b in h {
            acc = acc << 8 | u64::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(A[((acc >> bits) & 31) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn nsec3_closest_encloser_proof_and_hidden_owners() {
        let names = ["ex.", "a.ex.", "b.a.ex."];
        let mut hashes: Vec<(String, &str)> = names
            .iter()
            .map(|n| (b32hex(&nsec3_hash(&wire(n), &[0xab], 2)), *n))
            .collect();
        hashes.sort();
        let mut text = String::from(
            "$TTL 300\n$ORIGIN ex.\n@ SOA ns root 1 2 3 4 60\n@ NS ns.a\n@ NSEC3PARAM 1 0 2 ab\n\
             b.a A 192.0.2.1\nns.a A 192.0.2.2\n",
        );
        // ns.a.ex. has no NSEC3 here: an incomplete chain must not break lookups.
        for (i, (h, n)) in hashes.iter().enumerate() {
            let next = &hashes[(i + 1) % hashes.len()].0;
            let types = match *n {
                "ex." => "SOA NS NSEC3PARAM RRSIG",
                "b.a.ex." => "A RRSIG",
                _ => "",
            };
            text += &format!("{h} 60 NSEC3 1 0 2 ab {next} {types}\n{h} 60 RRSIG NSEC3 {SIG}\n");
        }
        let r = responder_for(&text);
        let owner_of = |n: &str| format!("{}.ex.", b32hex(&nsec3_hash(&wire(n), &[0xab], 2)));
        let covering = |n: &str| {
            let h = b32hex(&nsec3_hash(&wire(n), &[0xab], 2));
            let i = hashes.partition_point(|(x, _)| *x <= h);
            format!("{}.ex.", hashes[(i + hashes.len() - 1) % hashes.len()].0)
        };
        // NXDOMAIN below a.ex. (an empty non-terminal with an NSEC3):
        // a.ex. matches, x.a.ex. and *.a.ex. are covered.
        let m = ask(&r, "y.x.a.ex.", RecordType::A, true);
        assert_eq!(u16::from(m.response_code()), 3);
        let got: Vec<String> = m
            .name_servers()
            .iter()
            .filter(|r| r.record_type() == RecordType::NSEC3)
            .map(|r| r.name().to_string())
            .collect();
        let mut want = vec![owner_of("a.ex."), covering("x.a.ex."), covering("*.a.ex.")];
        want.dedup();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        got_sorted.dedup();
        assert_eq!(got.len(), got_sorted.len(), "no NSEC3 twice: {got:?}");
        let mut want_sorted = want.clone();
        want_sorted.sort();
        want_sorted.dedup();
        assert_eq!(got_sorted, want_sorted);
        // NODATA at b.a.ex.: its own NSEC3.
        let m = ask(&r, "b.a.ex.", RecordType::MX, true);
        let got: Vec<String> = section(m.name_servers());
        assert!(
            got.contains(&format!("{} NSEC3", owner_of("b.a.ex."))),
            "{got:?}"
        );
        // RFC 5155 7.2.8: hashed owners are not names of the zone.
        let m = ask(&r, &owner_of("a.ex."), RecordType::NSEC3, false);
        assert_eq!(u16::from(m.response_code()), 3);
        assert!(m.answers().is_empty());
    }
}
