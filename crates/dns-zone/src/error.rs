//! Errors and warnings with file, line and column.

use std::fmt;
use std::sync::Arc;

use crate::name::NameError;

/// What went wrong at a position of a zone file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// `)` with no open `(`.
    #[error("')' without a matching '('")]
    UnbalancedClose,
    /// End of file inside parentheses.
    #[error("missing ')' for the '(' at line {line}, column {col}")]
    MissingClose {
        /// Line of the `(`.
        line: u32,
        /// Column of the `(`.
        col: u32,
    },
    /// End of file inside a quoted string.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// `(` inside parentheses (BIND rejects it too).
    #[error("nested '('")]
    NestedParen,
    /// A field is missing or has the wrong shape.
    #[error("expected {0}")]
    Expected(&'static str),
    /// A domain name is malformed.
    #[error("bad domain name: {0}")]
    Name(#[from] NameError),
    /// A TTL that is not a number with optional units, or exceeds 2^31-1.
    #[error("bad TTL {0:?} (a number of seconds up to 2147483647, units w d h m s allowed)")]
    BadTtl(String),
    /// A type mnemonic nobody knows.
    #[error("unknown record type {0:?}")]
    UnknownType(String),
    /// Meta types (OPT, ANY, AXFR...) cannot be zone data.
    #[error("type {0} cannot appear in a zone file")]
    MetaType(String),
    /// Tokens left after the record data.
    #[error("unexpected {0:?} after the record data")]
    Trailing(String),
    /// Record data that does not fit its type.
    #[error("bad {rtype} record data: {msg}")]
    Rdata {
        /// The record type.
        rtype: String,
        /// What is wrong.
        msg: String,
    },
    /// A `$` directive this parser does not know.
    #[error("unknown directive {0:?}")]
    UnknownDirective(String),
    /// An `$INCLUDE` the loader could not provide, or nested too deep.
    #[error("$INCLUDE {path:?}: {msg}")]
    Include {
        /// The path as written.
        path: String,
        /// The loader's reason.
        msg: String,
    },
    /// A class other than the zone's.
    #[error("class {found} differs from the zone's class {zone}")]
    ClassMismatch {
        /// Class of this record.
        found: u16,
        /// Class of the first record.
        zone: u16,
    },
    /// No TTL anywhere to use.
    #[error("no TTL: no $TTL, no explicit TTL before and no SOA yet")]
    NoTtl,
    /// A blank owner with no previous owner.
    #[error("blank owner with no previous owner name")]
    NoPreviousOwner,
    /// A bad `$GENERATE` directive.
    #[error("bad $GENERATE: {0}")]
    Generate(String),
    /// A zone consistency check failed (like `named-checkzone`).
    #[error("{0}")]
    Check(String),
}

/// An error (or warning) located in a zone file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ZoneError {
    /// File name as given by the host (or by `$INCLUDE`).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (bytes).
    pub column: u32,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.kind
        )
    }
}
