//! Zone-file parser: RFC 1035 section 5, RFC 2308 `$TTL`, RFC 3597 and
//! BIND's `$GENERATE`, reporting every error with file:line:column.

use std::sync::Arc;

use crate::error::{ErrorKind, ZoneError};
use crate::lexer::{Entry, LexErrorKind, Lexer, Token};
use crate::name::{parse_name_into, Name};
use crate::rdata::{parse_rdata, parse_ttl};
use crate::types::{self, class, rtype};

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// File name.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// One resource record, rdata in uncompressed wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name (case as written).
    pub owner: Name,
    /// Type code.
    pub rtype: u16,
    /// Class code.
    pub class: u16,
    /// TTL in seconds.
    pub ttl: u32,
    /// Record data, uncompressed wire format (RFC 3597 "canonical").
    pub rdata: Box<[u8]>,
    /// Where it was written.
    pub pos: Pos,
}

impl Record {
    /// Converts to a hickory-proto record (for tools that want typed data).
    pub fn to_hickory(&self) -> Result<hickory_proto::rr::Record, hickory_proto::ProtoError> {
        use hickory_proto::serialize::binary::BinDecodable;
        use hickory_proto::serialize::binary::{BinDecoder, Restrict};
        let name = hickory_proto::rr::Name::read(&mut BinDecoder::new(self.owner.as_wire()))?;
        let rt = hickory_proto::rr::RecordType::from(self.rtype);
        let mut d = BinDecoder::new(&self.rdata);
        let len = u16::try_from(self.rdata.len()).unwrap_or(u16::MAX);
        let rdata = hickory_proto::rr::RData::read(&mut d, rt, Restrict::new(len))?;
        let mut rec = hickory_proto::rr::Record::from_rdata(name, self.ttl, rdata);
        rec.set_dns_class(hickory_proto::rr::DNSClass::from(self.class));
        Ok(rec)
    }
}

/// A record as the parser produces it, borrowed from its buffers.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Owner name, uncompressed wire format (case as written).
    pub owner: &'a [u8],
    /// Type code.
    pub rtype: u16,
    /// Class code.
    pub class: u16,
    /// TTL in seconds.
    pub ttl: u32,
    /// Record data, uncompressed wire format.
    pub rdata: &'a [u8],
    /// File the record came from.
    pub file: &'a Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            owner: Name::from_wire_unchecked(self.owner),
            rtype: self.rtype,
            class: self.class,
            ttl: self.ttl,
            rdata: self.rdata.into(),
            pos: Pos {
                file: self.file.clone(),
                line: self.line,
                column: self.column,
            },
        }
    }
}

/// Receives records as they are parsed (no per-record allocation needed).
pub trait RecordSink {
    /// Called once per record, in file order.
    fn record(&mut self, record: &RecordRef<'_>);
}

impl RecordSink for Vec<Record> {
    fn record(&mut self, record: &RecordRef<'_>) {
        self.push(record.to_record());
    }
}

/// Supplies `$INCLUDE`d files, so the parser itself does no I/O.
pub trait IncludeLoader {
    /// Returns the display name and contents of `path` as written in
    /// `including_file`, or a reason why it cannot be read.
    fn load(&mut self, path: &str, including_file: &str) -> Result<(String, Vec<u8>), String>;
}

/// A loader that refuses every `$INCLUDE`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIncludes;

impl IncludeLoader for NoIncludes {
    fn load(&mut self, _path: &str, _including: &str) -> Result<(String, Vec<u8>), String> {
        Err("$INCLUDE is not allowed here".into())
    }
}

/// Everything a parse produced: records, errors and warnings, in order.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Records in file order.
    pub records: Vec<Record>,
    /// Every error found (the zone must not be served if non-empty).
    pub errors: Vec<ZoneError>,
    /// Warnings (the zone is still usable).
    pub warnings: Vec<ZoneError>,
}

/// Options of a parse.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The initial origin (`$ORIGIN` may change it).
    pub origin: Option<Name>,
    /// Maximum `$INCLUDE` nesting.
    pub max_include_depth: u32,
    /// Maximum records one `$GENERATE` may produce.
    pub max_generate: u32,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            origin: None,
            max_include_depth: 16,
            max_generate: 65_536,
        }
    }
}

/// Parses a zone file held in memory.
pub fn parse(
    text: &[u8],
    file: &str,
    options: &ParseOptions,
    loader: &mut dyn IncludeLoader,
) -> Parsed {
    let mut records = Vec::with_capacity(text.len() / 40);
    let mut parsed = parse_into(text, file, options, loader, &mut records);
    parsed.records = records;
    parsed
}

/// Parses a zone file, handing each record to `sink` as it is read (the
/// returned [`Parsed`] carries only errors and warnings).
pub fn parse_into(
    text: &[u8],
    file: &str,
    options: &ParseOptions,
    loader: &mut dyn IncludeLoader,
    sink: &mut dyn RecordSink,
) -> Parsed {
    let mut p = Parser {
        sink,
        origin: options.origin.as_ref().map(|n| n.as_wire().to_vec()),
        default_ttl: None,
        last_ttl: None,
        soa_minimum: None,
        warned_soa_ttl: false,
        last_owner: Vec::with_capacity(256),
        has_owner: false,
        zone_class: None,
        out: Parsed::default(),
        max_depth: options.max_include_depth,
        max_generate: options.max_generate,
        scratch: Vec::with_capacity(512),
    };
    p.parse_file(text, Arc::from(file), 0, loader);
    p.out
}

struct Parser<'s> {
    sink: &'s mut dyn RecordSink,
    origin: Option<Vec<u8>>,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    soa_minimum: Option<u32>,
    warned_soa_ttl: bool,
    last_owner: Vec<u8>,
    has_owner: bool,
    zone_class: Option<u16>,
    out: Parsed,
    max_depth: u32,
    max_generate: u32,
    scratch: Vec<u8>,
}

fn text<'a>(buf: &'a [u8], t: &Token) -> &'a [u8] {
    buf.get(t.start as usize..t.end as usize)
        .unwrap_or_default()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An error at a token (or at the end of an entry when `None`).
type EntryError = (Option<Token>, ErrorKind);

impl Parser<'_> {
    fn error(&mut self, file: &Arc<str>, line: u32, column: u32, kind: ErrorKind) {
        self.out.errors.push(ZoneError {
            file: file.clone(),
            line,
            column,
            kind,
        });
    }

    fn warn(&mut self, file: &Arc<str>, line: u32, column: u32, kind: ErrorKind) {
        self.out.warnings.push(ZoneError {
            file: file.clone(),
            line,
            column,
            kind,
        });
    }

    fn parse_file(
        &mut self,
        buf: &[u8],
        file: Arc<str>,
        depth: u32,
        loader: &mut dyn IncludeLoader,
    ) {
        let mut lexer = Lexer::new(buf);
        let mut toks: Vec<Token> = Vec::with_capacity(32);
        loop {
            match lexer.next_entry(&mut toks) {
                Ok(Entry::End) => break,
                Ok(Entry::Tokens { blank_owner }) => {
                    let first = toks.first().copied();
                    let is_directive = !blank_owner
                        && first.is_some_and(|t| !t.quoted && text(buf, &t).first() == Some(&b'$'));
                    let res = if is_directive {
                        self.directive(buf, &toks, &file, depth, loader)
                    } else {
                        self.record(buf, &toks, blank_owner, &file, None)
                    };
                    if let Err((tok, kind)) = res {
                        let t = tok.or(toks.last().copied()).or(first);
                        let (line, col) = match (tok, t) {
                            (Some(t), _) => (t.line, t.col),
                            // Missing field: point just after the last token.
                            (None, Some(t)) => {
                                (t.line, t.col + (t.end - t.start) + u32::from(t.quoted) * 2)
                            }
                            (None, None) => (0, 0),
                        };
                        self.error(&file, line, col, kind);
                    }
                }
                Err(e) => {
                    let kind = match e.kind {
                        LexErrorKind::UnbalancedClose => ErrorKind::UnbalancedClose,
                        LexErrorKind::MissingClose { line, col } => {
                            ErrorKind::MissingClose { line, col }
                        }
                        LexErrorKind::UnterminatedQuote => ErrorKind::UnterminatedQuote,
                        LexErrorKind::NestedParen => ErrorKind::NestedParen,
                    };
                    self.error(&file, e.line, e.col, kind);
                }
            }
        }
    }

    fn directive(
        &mut self,
        buf: &[u8],
        toks: &[Token],
        file: &Arc<str>,
        depth: u32,
        loader: &mut dyn IncludeLoader,
    ) -> Result<(), EntryError> {
        let (d, args) = toks
            .split_first()
            .ok_or((None, ErrorKind::Expected("a directive")))?;
        let word = text(buf, d);
        if word.eq_ignore_ascii_case(b"$ORIGIN") {
            let [t] = args else {
                return Err((
                    args.get(1).copied(),
                    ErrorKind::Expected("exactly one name after $ORIGIN"),
                ));
            };
            let mut v = Vec::new();
            // A relative $ORIGIN is relative to the current origin.
            parse_name_into(text(buf, t), self.origin.as_deref(), &mut v)
                .map_err(|e| (Some(*t), ErrorKind::Name(e)))?;
            self.origin = Some(v);
            Ok(())
        } else if word.eq_ignore_ascii_case(b"$TTL") {
            let [t] = args else {
                return Err((
                    args.get(1).copied(),
                    ErrorKind::Expected("exactly one TTL after $TTL"),
                ));
            };
            let ttl = parse_ttl(text(buf, t))
                .ok_or_else(|| (Some(*t), ErrorKind::BadTtl(lossy(text(buf, t)))))?;
            self.default_ttl = Some(ttl);
            Ok(())
        } else if word.eq_ignore_ascii_case(b"$INCLUDE") {
            self.include(buf, args, file, depth, loader, d)
        } else if word.eq_ignore_ascii_case(b"$GENERATE") {
            self.generate(buf, args, file, d)
        } else {
            Err((Some(*d), ErrorKind::UnknownDirective(lossy(word))))
        }
    }

    fn include(
        &mut self,
        buf: &[u8],
        args: &[Token],
        file: &Arc<str>,
        depth: u32,
        loader: &mut dyn IncludeLoader,
        d: &Token,
    ) -> Result<(), EntryError> {
        let (path_tok, rest) = args
            .split_first()
            .ok_or((None, ErrorKind::Expected("a file name after $INCLUDE")))?;
        let path = lossy(text(buf, path_tok));
        let new_origin = match rest {
            [] => None,
            [o] => {
                let mut v = Vec::new();
                parse_name_into(text(buf, o), self.origin.as_deref(), &mut v)
                    .map_err(|e| (Some(*o), ErrorKind::Name(e)))?;
                Some(v)
            }
            [_, extra, ..] => {
                return Err((Some(*extra), ErrorKind::Trailing(lossy(text(buf, extra)))))
            }
        };
        if depth >= self.max_depth {
            return Err((
                Some(*d),
                ErrorKind::Include {
                    path,
                    msg: "nested too deeply".into(),
                },
            ));
        }
        let (name, content) = loader.load(&path, file).map_err(|msg| {
            (
                Some(*path_tok),
                ErrorKind::Include {
                    path: path.clone(),
                    msg,
                },
            )
        })?;
        // RFC 1035 5.1: the included file does not change the parent's origin.
        let saved_origin = self.origin.clone();
        let saved_owner = (self.last_owner.clone(), self.has_owner);
        self.has_owner = false;
        if let Some(o) = new_origin {
            self.origin = Some(o);
        }
        self.parse_file(&content, Arc::from(name.as_str()), depth + 1, loader);
        self.origin = saved_origin;
        (self.last_owner, self.has_owner) = saved_owner;
        Ok(())
    }

    /// BIND's `$GENERATE range lhs [ttl] [class] type rhs`.
    fn generate(
        &mut self,
        buf: &[u8],
        args: &[Token],
        file: &Arc<str>,
        d: &Token,
    ) -> Result<(), EntryError> {
        let gen_err = |t: Option<&Token>, m: &str| {
            (t.copied().or(Some(*d)), ErrorKind::Generate(m.to_string()))
        };
        if args.len() < 4 {
            return Err(gen_err(None, "expected: range lhs [ttl] [class] type rhs"));
        }
        let range_tok = args.first().ok_or_else(|| gen_err(None, "no range"))?;
        let range = text(buf, range_tok);
        let (range, step) = match range.iter().position(|&b| b == b'/') {
            Some(i) => (
                range.get(..i).unwrap_or_default(),
                crate::rdata::parse_u64(range.get(i + 1..).unwrap_or_default()),
            ),
            None => (range, Some(1)),
        };
        let dash = range
            .iter()
            .position(|&b| b == b'-')
            .ok_or_else(|| gen_err(Some(range_tok), "range must be start-stop[/step]"))?;
        let start = crate::rdata::parse_u64(range.get(..dash).unwrap_or_default());
        let stop = crate::rdata::parse_u64(range.get(dash + 1..).unwrap_or_default());
        let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
            return Err(gen_err(
                Some(range_tok),
                "range must be start-stop[/step] in decimal",
            ));
        };
        if start > stop || step == 0 || stop > u64::from(u32::MAX) {
            return Err(gen_err(
                Some(range_tok),
                "range must have start <= stop and step >= 1",
            ));
        }
        if (stop - start) / step + 1 > u64::from(self.max_generate) {
            return Err(gen_err(Some(range_tok), "range produces too many records"));
        }
        let templates: Vec<&[u8]> = args
            .get(1..)
            .unwrap_or_default()
            .iter()
            .map(|t| text(buf, t))
            .collect();
        let mut line = Vec::with_capacity(128);
        let mut toks = Vec::with_capacity(8);
        let mut i = start;
        while i <= stop {
            line.clear();
            for (k, tpl) in templates.iter().enumerate() {
                if k > 0 {
                    line.push(b' ');
                }
                substitute(tpl, i, &mut line).map_err(|m| gen_err(args.get(k + 1), m))?;
            }
            line.push(b'\n');
            let mut lexer = Lexer::new(&line);
            match lexer.next_entry(&mut toks) {
                Ok(Entry::Tokens { .. }) => {
                    if let Err((_, kind)) = self.record(&line, &toks, false, file, Some(d)) {
                        return Err((Some(*d), kind));
                    }
                }
                Ok(Entry::End) => return Err(gen_err(None, "empty record")),
                Err(_) => return Err(gen_err(None, "generated text does not lex")),
            }
            i += step;
        }
        Ok(())
    }

    fn record(
        &mut self,
        buf: &[u8],
        toks: &[Token],
        blank_owner: bool,
        file: &Arc<str>,
        at: Option<&Token>,
    ) -> Result<(), EntryError> {
        let mut i = 0usize;
        let first = toks.first().copied();
        if blank_owner {
            if !self.has_owner {
                return Err((first, ErrorKind::NoPreviousOwner));
            }
        } else {
            let t = first.ok_or((None, ErrorKind::Expected("an owner name")))?;
            if t.quoted {
                return Err((Some(t), ErrorKind::Expected("an owner name")));
            }
            i = 1;
            let raw = text(buf, &t);
            self.last_owner.clear();
            self.has_owner = false;
            parse_name_into(raw, self.origin.as_deref(), &mut self.last_owner)
                .map_err(|e| (Some(t), ErrorKind::Name(e)))?;
            self.has_owner = true;
        }
        // RFC 1035 5.1: [<TTL>] [<class>] or [<class>] [<TTL>], then type.
        let mut ttl: Option<u32> = None;
        let mut rclass: Option<u16> = None;
        let rtype_code;
        loop {
            let t = toks
                .get(i)
                .copied()
                .ok_or((None, ErrorKind::Expected("a record type")))?;
            let s = text(buf, &t);
            if t.quoted {
                return Err((Some(t), ErrorKind::Expected("a record type")));
            }
            if s.first().is_some_and(u8::is_ascii_digit) {
                if ttl.is_some() {
                    return Err((
                        Some(t),
                        ErrorKind::Expected("a record type (TTL given twice)"),
                    ));
                }
                ttl = Some(parse_ttl(s).ok_or_else(|| (Some(t), ErrorKind::BadTtl(lossy(s))))?);
                i += 1;
                continue;
            }
            if let Some(c) = types::class_from_str(s) {
                if rclass.is_some() {
                    return Err((
                        Some(t),
                        ErrorKind::Expected("a record type (class given twice)"),
                    ));
                }
                rclass = Some(c);
                i += 1;
                continue;
            }
            rtype_code = types::type_from_str(s)
                .ok_or_else(|| (Some(t), ErrorKind::UnknownType(lossy(s))))?;
            i += 1;
            break;
        }
        let type_tok = toks.get(i.wrapping_sub(1)).copied();
        let zone_class = *self.zone_class.get_or_insert(rclass.unwrap_or(class::IN));
        let rclass = rclass.unwrap_or(zone_class);
        if rclass != zone_class {
            return Err((
                type_tok,
                ErrorKind::ClassMismatch {
                    found: rclass,
                    zone: zone_class,
                },
            ));
        }
        self.scratch.clear();
        parse_rdata(
            buf,
            toks.get(i..).unwrap_or_default(),
            self.origin.as_deref(),
            rtype_code,
            &mut self.scratch,
        )?;
        if rtype_code == rtype::SOA {
            let min = self
                .scratch
                .get(self.scratch.len().saturating_sub(4)..)
                .and_then(|s| <[u8; 4]>::try_from(s).ok())
                .map(u32::from_be_bytes);
            self.soa_minimum = min;
        }
        let pos_tok = at.copied().or(first).unwrap_or(Token {
            start: 0,
            end: 0,
            line: 0,
            col: 0,
            quoted: false,
        });
        let ttl = match ttl {
            Some(t) => {
                self.last_ttl = Some(t);
                t
            }
            None => match (self.default_ttl, self.last_ttl, self.soa_minimum) {
                (Some(t), _, _) => t,
                (None, Some(t), _) => t,
                (None, None, Some(min)) => {
                    // BIND: no $TTL, so the SOA MINIMUM applies (with a warning).
                    if !self.warned_soa_ttl {
                        self.warned_soa_ttl = true;
                        self.warn(
                            file,
                            pos_tok.line,
                            pos_tok.col,
                            ErrorKind::Check(format!(
                                "no TTL specified; using SOA MINIMUM ({min}) instead"
                            )),
                        );
                    }
                    min
                }
                (None, None, None) => return Err((first, ErrorKind::NoTtl)),
            },
        };
        self.sink.record(&RecordRef {
            owner: &self.last_owner,
            rtype: rtype_code,
            class: rclass,
            ttl,
            rdata: &self.scratch,
            file,
            line: pos_tok.line,
            column: pos_tok.col,
        });
        Ok(())
    }
}

/// `$GENERATE` substitution: `$`, `${offset[,width[,base]]}`, `\$`, `$$`.
fn substitute(tpl: &[u8], value: u64, out: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut i = 0;
    while let Some(&b) = tpl.get(i) {
        match b {
            b'\\' if tpl.get(i + 1) == Some(&b'$') => {
                out.push(b'$');
                i += 2;
            }
            b'$' if tpl.get(i + 1) == Some(&b'$') => {
                out.push(b'$');
                i += 2;
            }
            b'$' if tpl.get(i + 1) == Some(&b'{') => {
                let rest = tpl.get(i + 2..).unwrap_or_default();
                let close = rest
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or("unterminated ${")?;
                let spec = std::str::from_utf8(rest.get(..close).unwrap_or_default())
                    .map_err(|_| "bad ${}")?;
                let mut parts = spec.split(',');
                let offset: i64 = parts
                    .next()
                    .unwrap_or("0")
                    .trim()
                    .parse()
                    .map_err(|_| "bad ${offset}")?;
                let width: usize = match parts.next() {
                    Some(w) => w.trim().parse().map_err(|_| "bad ${,width}")?,
                    None => 0,
                };
                let base = parts.next().unwrap_or("d");
                if parts.next().is_some() || width > 255 {
                    return Err("bad ${offset,width,base}");
                }
                let v = i64::try_from(value).map_err(|_| "value too large")? + offset;
                if v < 0 {
                    return Err("negative value after offset");
                }
                let s = match base {
                    "d" => format!("{v:0width$}"),
                    "o" => format!("{v:0width$o}"),
                    "x" => format!("{v:0width$x}"),
                    "X" => format!("{v:0width$X}"),
                    _ => return Err("base must be d, o, x or X"),
                };
                out.extend_from_slice(s.as_bytes());
                i += 2 + close + 1;
            }
            b'$' => {
                out.extend_from_slice(value.to_string().as_bytes());
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}
