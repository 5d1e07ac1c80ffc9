//! Zone files, zone model and authoritative answers for the mail system's
//! DNS (the lab's `csuvnetwork.com` zone, and any other).
//!
//! * [`parse`] reads a zone file (RFC 1035 section 5 as BIND accepts it:
//!   `$ORIGIN`, `$TTL`, `$INCLUDE` through an [`IncludeLoader`],
//!   `$GENERATE`, RFC 3597 generic types) and reports **every** error with
//!   file, line and column.
//! * [`Zone::build`] runs `named-checkzone`-like checks and builds the
//!   model; a [`Catalog`] holds several zones (longest match wins).
//! * [`Responder`] is Sans-I/O: query bytes in, response bytes out
//!   (RFC 1034 4.3.2, RFC 4592 wildcards, RFC 2308 negative answers,
//!   RFC 6891 EDNS, RFC 8482 minimal ANY, AXFR over TCP with an ACL).
//!   Zones signed beforehand are served as RFC 4035 3.1 and RFC 5155 7.2
//!   ask when the query has DO: RRSIGs per RRset, NSEC/NSEC3 denials, DS
//!   at delegations (see [`Zone::is_signed`]). IXFR (RFC 1995) answers
//!   from the differences between versions the host attaches
//!   ([`Zone::set_history`], [`Diff`]); [`ixfr::notify_message`] builds
//!   the NOTIFY (RFC 1996) a primary sends.
//! * [`tsig`]: TSIG (RFC 8945) keys; [`Responder::handle_at`] checks
//!   signed queries and signs their answers and transfers.
//! * [`RateLimiter`] ([`rrl`]) is response rate limiting with BIND 9's
//!   semantics: the host passes each UDP response and the time, and it
//!   says send, drop or slip (truncate, [`rrl::truncate`]).
//!
//! ```
//! use std::sync::Arc;
//! use dns_zone::{parse, Catalog, Name, NoIncludes, Outcome, ParseOptions, Responder,
//!                ResponderConfig, Transport, Zone};
//!
//! let text = b"$TTL 1D\n$ORIGIN example.com.\n\
//!     @ IN SOA ns root ( 1 1H 1H 1W 3H )\n  IN NS ns\n@ IN MX 10 mail\n\
//!     ns IN A 192.0.2.1\nmail IN A 192.0.2.2\n";
//! let origin = Name::parse("example.com.", None).unwrap();
//! let opts = ParseOptions { origin: Some(origin.clone()), ..ParseOptions::default() };
//! let parsed = parse(text, "example.com.zone", &opts, &mut NoIncludes);
//! assert!(parsed.errors.is_empty());
//! let (zone, _warnings) = Zone::build(&origin, parsed.records).unwrap();
//! let mut catalog = Catalog::new();
//! catalog.insert(zone);
//! let responder = Responder::new(Arc::new(catalog), ResponderConfig::default());
//!
//! // A query for example.com MX, ID 0x1234.
//! let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
//! q.extend_from_slice(b"\x07example\x03com\x00\x00\x0f\x00\x01");
//! let mut out = Vec::new();
//! let outcome = responder.handle(&q, Transport::Udp, "127.0.0.1".parse().unwrap(), &mut out);
//! assert!(matches!(outcome, Outcome::Reply));
//! assert_eq!(&out[..2], &[0x12, 0x34]);
//! assert_eq!(out[2] & 0x84, 0x84); // QR and AA
//! assert_eq!(&out[6..8], &[0, 1]); // one answer
//! assert_eq!(&out[10..12], &[0, 1]); // mail's A in additional
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod cookie;
mod dnssec;
mod error;
pub mod ixfr;
mod lexer;
mod name;
mod parser;
mod rdata;
mod responder;
pub mod rrl;
pub mod secondary;
pub mod tsig;
pub mod types;
mod zone;

pub use error::{ErrorKind, ZoneError};
pub use ixfr::Diff;
pub use name::{Name, NameError};
pub use parser::{
    parse, parse_into, IncludeLoader, NoIncludes, ParseOptions, Parsed, Pos, Record, RecordRef,
    RecordSink,
};
pub use rdata::parse_ttl;
pub use responder::{
    ede, rcode, CookieCheck, Outcome, Prefix, Responder, ResponderConfig, Response, Transfer,
    TransferKey, TransferKind, Transport,
};
pub use rrl::{RateLimiter, RrlConfig};
pub use zone::{BuildResult, Catalog, Node, RRset, Zone, ZoneBuilder};

/// Parses and checks one zone file in one call: every error (syntax and
/// checks) or the zone plus warnings.
pub fn load_zone(
    text: &[u8],
    file: &str,
    origin: &Name,
    loader: &mut dyn IncludeLoader,
) -> BuildResult {
    let opts = ParseOptions {
        origin: Some(origin.clone()),
        ..ParseOptions::default()
    };
    // Records stream from the parser into the zone: no per-record copies.
    let mut builder = ZoneBuilder::new(origin);
    // Sizing from the line count avoids growing the tables while loading.
    let lines = text.iter().filter(|&&b| b == b'\n').count();
    builder.reserve(lines + 1, text.len());
    let parsed = parse_into(text, file, &opts, loader, &mut builder);
    if !parsed.errors.is_empty() {
        return Err(parsed.errors);
    }
    let (zone, mut warnings) = builder.finish()?;
    let mut all = parsed.warnings;
    all.append(&mut warnings);
    Ok((zone, all))
}

#[cfg(test)]
mod tests;
