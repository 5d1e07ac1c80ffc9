//! Zone versions' differences for IXFR (RFC 1995) and NOTIFY messages
//! (RFC 1996), Sans-I/O.
//!
//! A [`Diff`] holds what changed from one loaded version of a zone to the
//! next; the host keeps a bounded list of them on the newest [`Zone`]
//! ([`Zone::set_history`]) and the responder answers IXFR from it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::types::{class, rtype};
use crate::zone::{Node, Zone};

/// One record: owner name as written (uncompressed wire) and the fragment
/// that follows it in a message (type, class, TTL, RDLENGTH, RDATA).
pub type WireRecord = (Box<[u8]>, Box<[u8]>);

/// What changed between two versions of a zone (RFC 1995 4): the old and
/// new SOA, the records deleted and the records added (the SOAs excepted).
#[derive(Debug, Clone)]
pub struct Diff {
    /// Serial of the old version.
    pub from_serial: u32,
    /// Serial of the new version.
    pub to_serial: u32,
    old_soa: WireRecord,
    new_soa: WireRecord,
    deleted: Vec<WireRecord>,
    added: Vec<WireRecord>,
}

fn soa_record(z: &Zone) -> WireRecord {
    let apex = z
        .node(z.apex_key())
        .map(|n| n.name_wire().into())
        .unwrap_or_else(|| z.apex_key().into());
    let frag = z
        .soa()
        .and_then(|s| s.wire_records().next())
        .unwrap_or_default();
    (apex, frag.into())
}

/// Every node of a zone by key, NSEC3 owners included.
fn node_map(z: &Zone) -> HashMap<&[u8], Node<'_>> {
    z.nodes().collect()
}

impl Diff {
    /// The differences from `old` to `new` (same apex).
    pub fn between(old: &Zone, new: &Zone) -> Diff {
        let mut deleted = Vec::new();
        let mut added = Vec::new();
        let olds = node_map(old);
        let news = node_map(new);
        // Records of `a` missing from `b`, per node, RRset by RRset.
        let missing = |a: &HashMap<&[u8], Node<'_>>,
                       b: &HashMap<&[u8], Node<'_>>,
                       out: &mut Vec<WireRecord>| {
            for (key, node) in a {
                let other = b.get(key);
                for set in node.rrsets() {
                    if set.rtype == rtype::SOA {
                        continue;
                    }
                    let theirs = other.and_then(|o| o.rrset(set.rtype));
                    let theirs: HashSet<&[u8]> = theirs
                        .map(|t| t.wire_records().collect())
                        .unwrap_or_default();
                    for rec in set.wire_records() {
                        if !theirs.contains(rec) {
                            out.push((node.name_wire().into(), rec.into()));
                        }
                    }
                }
            }
        };
        missing(&olds, &news, &mut deleted);
        missing(&news, &olds, &mut added);
        Diff {
            from_serial: old.serial().unwrap_or(0),
            to_serial: new.serial().unwrap_or(0),
            old_soa: soa_record(old),
            new_soa: soa_record(new),
            deleted,
            added,
        }
    }

    /// Whether the two versions hold the same records, SOA included.
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty() && self.added.is_empty() && self.old_soa == self.new_soa
    }

    /// Whether only the SOA serial differs (or nothing): what a reload of
    /// an unchanged file looks like once a serial policy has bumped the
    /// served serial.
    pub fn only_serial_differs(&self) -> bool {
        let rest = |r: &WireRecord| -> Option<Vec<u8>> {
            let f = &r.1;
            let cut = f.len().checked_sub(20)?;
            let mut v = f.get(..cut)?.to_vec();
            v.extend_from_slice(f.get(cut + 4..)?);
            Some(v)
        };
        self.deleted.is_empty()
            && self.added.is_empty()
            && self.old_soa.0.eq_ignore_ascii_case(&self.new_soa.0)
            && rest(&self.old_soa) == rest(&self.new_soa)
    }

    /// Number of records deleted and added (SOAs excepted).
    pub fn len(&self) -> (usize, usize) {
        (self.deleted.len(), self.added.len())
    }
}

/// RFC 1982 serial number arithmetic: whether `a` is newer than `b`.
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

impl Zone {
    /// Attaches the differences that led to this version, oldest first
    /// (the host keeps them bounded); IXFR answers from them.
    pub fn set_history(&mut self, history: Vec<Arc<Diff>>) {
        self.history = history;
    }

    /// Sets the SOA serial (a host's serial policy: the zone file's
    /// records changed but its serial did not).
    pub fn set_serial(&mut self, serial: u32) {
        self.set_soa_serial(serial);
    }

    /// The differences that led to this version, oldest first.
    pub fn history(&self) -> &[Arc<Diff>] {
        &self.history
    }

    /// The contiguous differences from `serial` to this version, if the
    /// history reaches that far back (RFC 1995 4).
    pub(crate) fn diffs_since(&self, serial: u32) -> Option<&[Arc<Diff>]> {
        let current = self.serial()?;
        let start = self.history.iter().rposition(|d| d.from_serial == serial)?;
        let chain = self.history.get(start..)?;
        let contiguous = chain
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.to_serial == b.from_serial));
        (contiguous && chain.last()?.to_serial == current).then_some(chain)
    }
}

/// The records of an incremental transfer (RFC 1995 4): the new SOA,
/// then per difference the old SOA, the deleted records, the new SOA and
/// the added records, and the new SOA again.
pub(crate) fn ixfr_records(chain: &[Arc<Diff>]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let Some(last) = chain.last() else {
        return out;
    };
    out.push((&*last.new_soa.0, &*last.new_soa.1));
    for d in chain {
        out.push((&*d.old_soa.0, &*d.old_soa.1));
        out.extend(d.deleted.iter().map(|(o, r)| (&**o, &**r)));
        out.push((&*d.new_soa.0, &*d.new_soa.1));
        out.extend(d.added.iter().map(|(o, r)| (&**o, &**r)));
    }
    out.push((&*last.new_soa.0, &*last.new_soa.1));
    out
}

/// A NOTIFY request for `zone` (RFC 1996 3.7): opcode NOTIFY, AA, the
/// apex SOA as question and the current SOA in the answer section.
pub fn notify_message(zone: &Zone, id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(4 << 3 | 0x04);
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    let (apex, soa) = soa_record(zone);
    m.extend_from_slice(&apex);
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&class::IN.to_be_bytes());
    m.extend_from_slice(&apex);
    m.extend_from_slice(&soa);
    m
}

/// Whether `msg` acknowledges the NOTIFY with ID `id` (RFC 1996 4.7: a
/// response with the same ID and opcode; any RCODE ends the retries, a
/// refusal included, since retrying would not change it).
pub fn is_notify_response(msg: &[u8], id: u16) -> Option<u16> {
    let h = msg.get(..4)?;
    let ok =
        h.get(..2)? == id.to_be_bytes() && h.get(2)? & 0x80 != 0 && (h.get(2)? >> 3) & 0xf == 4;
    ok.then(|| u16::from(h.get(3).copied().unwrap_or(0) & 0xf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        load_zone, Catalog, Name, NoIncludes, Outcome, Prefix, Responder, ResponderConfig,
        Transport,
    };
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name as HName, RData, Record, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

    fn zone(serial: u32, body: &str) -> Zone {
        let text =
            format!("$TTL 300\n@ SOA ns root {serial} 2 3 4 60\n NS ns\nns A 192.0.2.1\n{body}");
        let origin = Name::parse("ex.", None).unwrap();
        load_zone(text.as_bytes(), "t", &origin, &mut NoIncludes)
            .unwrap()
            .0
    }

    fn texts(recs: &[WireRecord]) -> Vec<String> {
        let mut v: Vec<String> = recs
            .iter()
            .map(|(o, r)| format!("{}{}", o.len(), r.len()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn diff_finds_deleted_and_added_records() {
        let v1 = zone(1, "a A 192.0.2.2\nb A 192.0.2.3\nb TXT x\n");
        let v2 = zone(2, "a A 192.0.2.2\nb A 192.0.2.4\nc TXT y\n");
        let d = Diff::between(&v1, &v2);
        assert_eq!((d.from_serial, d.to_serial), (1, 2));
        // b A .3 and b TXT x went; b A .4 and c TXT y came.
        assert_eq!(d.len(), (2, 2));
        assert!(!d.is_empty());
        assert_eq!(texts(&d.deleted).len(), 2);
        assert!(Diff::between(&v1, &zone(1, "b TXT x\nb A 192.0.2.3\na A 192.0.2.2\n")).is_empty());
        // Same records, other SOA: not empty.
        assert!(
            !Diff::between(&v1, &zone(9, "a A 192.0.2.2\nb A 192.0.2.3\nb TXT x\n")).is_empty()
        );
        assert!(serial_gt(2, 1) && serial_gt(0, u32::MAX) && !serial_gt(1, 1) && !serial_gt(1, 2));
    }

    fn ixfr_query(serial: u32) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(9);
        m.add_query(Query::query(
            HName::from_ascii("ex.").unwrap(),
            RecordType::IXFR,
        ));
        let soa = hickory_proto::rr::rdata::SOA::new(
            HName::from_ascii("ns.ex.").unwrap(),
            HName::from_ascii("root.ex.").unwrap(),
            serial,
            2,
            3,
            4,
            60,
        );
        m.add_name_server(Record::from_rdata(
            HName::from_ascii("ex.").unwrap(),
            0,
            RData::SOA(soa),
        ));
        m.to_bytes().unwrap()
    }

    fn transfer(r: &Responder, q: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        match r.handle(q, Transport::Tcp, "127.0.0.1".parse().unwrap(), &mut out) {
            Outcome::Transfer(t) => t
                .messages()
                .iter()
                .flat_map(|m| Message::from_vec(m).unwrap().answers().to_vec())
                .collect(),
            o => panic!("{o:?}: {:?}", Message::from_vec(&out)),
        }
    }

    fn soa_serials(recs: &[Record]) -> Vec<u32> {
        recs.iter()
            .filter_map(|r| match r.data() {
                RData::SOA(s) => Some(s.serial()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ixfr_from_history_else_axfr_style_else_one_soa() {
        let v1 = zone(1, "a A 192.0.2.2\n");
        let v2 = zone(2, "a A 192.0.2.3\n");
        let mut v3 = zone(3, "a A 192.0.2.3\nb A 192.0.2.9\n");
        let d12 = Arc::new(Diff::between(&v1, &v2));
        let d23 = Arc::new(Diff::between(&v2, &v3));
        v3.set_history(vec![d12, d23]);
        let mut c = Catalog::new();
        c.insert(v3);
        let cfg = ResponderConfig {
            axfr_allow: vec![Prefix::parse("127.0.0.0/8").unwrap()],
            ..ResponderConfig::default()
        };
        let r = Responder::new(Arc::new(c), cfg);
        // From 1: 3, (1, -a .2, 2, +a .3), (2, 3, +b), 3.
        let recs = transfer(&r, &ixfr_query(1));
        assert_eq!(soa_serials(&recs), [3, 1, 2, 2, 3, 3]);
        assert_eq!(recs.len(), 9);
        let recs = transfer(&r, &ixfr_query(2));
        assert_eq!(soa_serials(&recs), [3, 2, 3, 3]);
        assert_eq!(recs.len(), 5);
        // Out of reach: the whole zone, AXFR-style (SOA, 4 records, SOA).
        let recs = transfer(&r, &ixfr_query(0));
        assert_eq!(soa_serials(&recs), [3, 3]);
        assert_eq!(recs.len(), 6);
        // Up to date (or newer): one SOA.
        assert_eq!(soa_serials(&transfer(&r, &ixfr_query(3))), [3]);
        assert_eq!(soa_serials(&transfer(&r, &ixfr_query(7))), [3]);
        // Over UDP: the current SOA only.
        let mut out = Vec::new();
        let o = r.handle(
            &ixfr_query(1),
            Transport::Udp,
            "127.0.0.1".parse().unwrap(),
            &mut out,
        );
        assert!(matches!(o, Outcome::Reply));
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(soa_serials(m.answers()), [3]);
        // Outside the access list: REFUSED; no SOA in the query: FORMERR.
        let o = r.handle(
            &ixfr_query(1),
            Transport::Tcp,
            "192.0.2.1".parse().unwrap(),
            &mut out,
        );
        assert!(matches!(o, Outcome::Reply));
        assert_eq!(out[3] & 0xf, 5);
        let mut m = Message::new();
        m.set_id(9);
        m.add_query(Query::query(
            HName::from_ascii("ex.").unwrap(),
            RecordType::IXFR,
        ));
        let o = r.handle(
            &m.to_bytes().unwrap(),
            Transport::Tcp,
            "127.0.0.1".parse().unwrap(),
            &mut out,
        );
        assert!(matches!(o, Outcome::Reply));
        assert_eq!(out[3] & 0xf, 1);
    }

    #[test]
    fn notify_message_is_a_notify() {
        let z = zone(5, "");
        let bytes = notify_message(&z, 0x4242);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.op_code(), OpCode::Notify);
        assert_eq!(m.message_type(), MessageType::Query);
        assert!(m.authoritative());
        assert_eq!(m.queries()[0].query_type(), RecordType::SOA);
        assert_eq!(soa_serials(m.answers()), [5]);
        let mut ack = bytes.clone();
        ack[2] |= 0x80;
        assert_eq!(is_notify_response(&ack, 0x4242), Some(0));
        assert_eq!(is_notify_response(&ack, 0x4243), None);
        assert_eq!(is_notify_response(&bytes, 0x4242), None);
    }
}
