#!/usr/bin/env python3
"""Seeds for the dns_transfer fuzz target: well-formed AXFR and IXFR
answers (ID 0x1234, for example.com.) in the target's input format (a mode
byte, then 2-byte length-prefixed messages), so that the fuzzer starts from
transfers that complete instead of having to find the format.

  python3 fuzz/seeds/dns_transfer.py fuzz/corpus/dns_transfer
"""
import pathlib
import struct
import sys

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

APEX = "example.com."


def answer(qtype, rrsets):
    q = dns.message.make_query(APEX, qtype)
    q.id = 0x1234
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    for owner, ttl, rtype, *texts in rrsets:
        r.answer.append(dns.rrset.from_text(owner, ttl, "IN", rtype, *texts))
    return r.to_wire()


def soa(serial):
    return (APEX, 300, "SOA", f"ns.{APEX} root.{APEX} {serial} 2 3 4 60")


def seed(mode, *msgs):
    return bytes([mode]) + b"".join(struct.pack(">H", len(m)) + m for m in msgs)


BODY = [
    (APEX, 300, "NS", f"ns.{APEX}"),
    (APEX, 300, "MX", f"10 mail.{APEX}"),
    (f"ns.{APEX}", 300, "A", "192.0.2.1"),
    (f"mail.{APEX}", 300, "AAAA", "2001:db8::2"),
    (f"www.{APEX}", 300, "CNAME", f"mail.{APEX}"),
    (f"*.w.{APEX}", 300, "TXT", '"a b" "c"'),
    (f"sub.{APEX}", 300, "NS", f"ns.sub.{APEX}"),
    (f"ns.sub.{APEX}", 300, "A", "192.0.2.9"),
    (f"_s._tcp.{APEX}", 300, "SRV", f"0 0 25 mail.{APEX}"),
    (f"k.{APEX}", 300, "TYPE65534", r"\# 3 010203"),
]

SEEDS = {
    # AXFR in one message, and in three.
    "axfr-one": seed(0, answer("AXFR", [soa(5), *BODY, soa(5)])),
    "axfr-three": seed(0, answer("AXFR", [soa(5), *BODY[:4]]),
                       answer("AXFR", BODY[4:]), answer("AXFR", [soa(5)])),
    # IXFR from serial 1 to 2: delete the MX, add another (RFC 1995 4).
    "ixfr-incremental": seed(1, answer("IXFR", [
        soa(2), soa(1), (APEX, 300, "MX", f"10 mail.{APEX}"),
        soa(2), (APEX, 300, "MX", f"20 mx2.{APEX}"), (f"mx2.{APEX}", 300, "A", "192.0.2.7"),
        soa(2)])),
    # Up to date: the SOA alone.
    "ixfr-current": seed(1, answer("IXFR", [soa(1)])),
    # IXFR answered AXFR-style.
    "ixfr-full": seed(1, answer("IXFR", [soa(3), *BODY, soa(3)])),
    "soa": seed(2, answer("SOA", [soa(7)])),
}

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/dns_transfer")
out.mkdir(parents=True, exist_ok=True)
for name, data in SEEDS.items():
    (out / f"seed-{name}").write_bytes(data)
print(f"{len(SEEDS)} seeds in {out}")
