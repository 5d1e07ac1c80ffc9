//! Byte-level lexer over a whole zone file (RFC 1035 section 5.1).
//!
//! It cuts the buffer into entries (one logical line, parentheses joining
//! physical lines) made of tokens that point back into the buffer, so the
//! lexer allocates nothing per token; escapes are decoded later, by the
//! rule of the field (name or character string) the token lands in.

/// One token: a byte range of the input plus where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub start: u32,
    pub end: u32,
    pub line: u32,
    pub col: u32,
    /// Written between double quotes (range excludes the quotes).
    pub quoted: bool,
}

/// Lexical errors; the lexer recovers and continues after each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub line: u32,
    pub col: u32,
    pub kind: LexErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LexErrorKind {
    UnbalancedClose,
    MissingClose { line: u32, col: u32 },
    UnterminatedQuote,
    NestedParen,
}

/// Bytes that end an unquoted word.
#[inline(always)]
fn is_delim(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"')
}

pub(crate) struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
    line: u32,
    line_start: usize,
}

/// What `next_entry` found.
pub(crate) enum Entry {
    /// Tokens were pushed; `blank_owner` says the line began with blanks.
    Tokens { blank_owner: bool },
    /// End of input.
    End,
}

impl<'a> Lexer<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Lexer {
            buf,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    fn col(&self, pos: usize) -> u32 {
        (pos - self.line_start + 1) as u32
    }

    #[inline]
    fn newline(&mut self) {
        self.line += 1;
        self.line_start = self.pos;
    }

    /// Reads the next entry's tokens into `toks` (cleared first).
    pub fn next_entry(&mut self, toks: &mut Vec<Token>) -> Result<Entry, LexError> {
        toks.clear();
        let mut depth_open: Option<(u32, u32)> = None;
        let mut blank_owner = false;
        let buf = self.buf;
        loop {
            let Some(&b) = buf.get(self.pos) else {
                if let Some((line, col)) = depth_open {
                    toks.clear();
                    return Err(LexError {
                        line: self.line,
                        col: self.col(self.pos),
                        kind: LexErrorKind::MissingClose { line, col },
                    });
                }
                return Ok(if toks.is_empty() {
                    Entry::End
                } else {
                    Entry::Tokens { blank_owner }
                });
            };
            match b {
                b'\n' => {
                    self.pos += 1;
                    self.newline();
                    if depth_open.is_none() && !toks.is_empty() {
                        return Ok(Entry::Tokens { blank_owner });
                    }
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b';' => {
                    // Comment to end of line; the newline itself is kept.
                    let rest = buf.get(self.pos..).unwrap_or_default();
                    self.pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                }
                b'(' => {
                    if depth_open.is_some() {
                        let err = LexError {
                            line: self.line,
                            col: self.col(self.pos),
                            kind: LexErrorKind::NestedParen,
                        };
                        self.skip_line();
                        toks.clear();
                        return Err(err);
                    }
                    if toks.is_empty() {
                        blank_owner = self.pos != self.line_start;
                    }
                    depth_open = Some((self.line, self.col(self.pos)));
                    self.pos += 1;
                }
                b')' => {
                    if depth_open.is_none() {
                        let err = LexError {
                            line: self.line,
                            col: self.col(self.pos),
                            kind: LexErrorKind::UnbalancedClose,
                        };
                        self.skip_line();
                        toks.clear();
                        return Err(err);
                    }
                    depth_open = None;
                    self.pos += 1;
                }
                b'"' => {
                    let line = self.line;
                    let col = self.col(self.pos);
                    if toks.is_empty() && depth_open.is_none() {
                        blank_owner = self.pos != self.line_start;
                    }
                    self.pos += 1;
                    let start = self.pos;
                    loop {
                        match buf.get(self.pos) {
                            None => {
                                toks.clear();
                                return Err(LexError {
                                    line,
                                    col,
                                    kind: LexErrorKind::UnterminatedQuote,
                                });
                            }
                            Some(b'"') => break,
                            Some(b'\\') => {
                                self.pos += 1;
                                if buf.get(self.pos) == Some(&b'\n') {
                                    self.pos += 1;
                                    self.newline();
                                } else {
                                    self.pos += 1;
                                }
                            }
                            Some(b'\n') => {
                                self.pos += 1;
                                self.newline();
                            }
                            Some(_) => self.pos += 1,
                        }
                    }
                    toks.push(Token {
                        start: start as u32,
                        end: self.pos as u32,
                        line,
                        col,
                        quoted: true,
                    });
                    self.pos += 1;
                }
                _ => {
                    let start = self.pos;
                    if toks.is_empty() && depth_open.is_none() {
                        blank_owner = start != self.line_start;
                    }
                    let mut p = start;
                    while let Some(&c) = buf.get(p) {
                        if c == b'\\' {
                            // An escaped byte never ends the word (`\;`,
                            // `\(`, `\ `); a newline is never escaped.
                            if buf.get(p + 1).is_some_and(|&n| n != b'\n') {
                                p += 2;
                            } else {
                                p += 1;
                            }
                        } else if is_delim(c) {
                            break;
                        } else {
                            p += 1;
                        }
                    }
                    toks.push(Token {
                        start: start as u32,
                        end: p as u32,
                        line: self.line,
                        col: self.col(start),
                        quoted: false,
                    });
                    self.pos = p;
                }
            }
        }
    }

    fn skip_line(&mut self) {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.iter().position(|&c| c == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                self.newline();
            }
            None => self.pos = self.buf.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lexed = Vec<Result<(bool, Vec<(String, bool)>), LexErrorKind>>;

    fn lex(s: &str) -> Lexed {
        let mut l = Lexer::new(s.as_bytes());
        let mut out = Vec::new();
        let mut toks = Vec::new();
        loop {
            match l.next_entry(&mut toks) {
                Ok(Entry::End) => break,
                Ok(Entry::Tokens { blank_owner }) => out.push(Ok((
                    blank_owner,
                    toks.iter()
                        .map(|t| (s[t.start as usize..t.end as usize].to_string(), t.quoted))
                        .collect(),
                ))),
                Err(e) => out.push(Err(e.kind)),
            }
        }
        out
    }

    #[test]
    fn entries_and_blank_owner() {
        let r = lex("a IN A 1.2.3.4 ; c\n\n  IN NS x\r\n");
        assert_eq!(r.len(), 2);
        let (b0, t0) = r[0].clone().unwrap();
        assert!(!b0);
        assert_eq!(t0.len(), 4);
        let (b1, t1) = r[1].clone().unwrap();
        assert!(b1);
        assert_eq!(t1[2].0, "x");
    }

    #[test]
    fn parens_join_lines_and_quotes_keep_semicolons() {
        let r = lex("x TXT ( \"v=DKIM1; k=rsa; \" ; comment\n \"p=AB\" )\ny A 1.1.1.1\n");
        assert_eq!(r.len(), 2);
        let (_, t) = r[0].clone().unwrap();
        assert_eq!(t[2], ("v=DKIM1; k=rsa; ".to_string(), true));
        assert_eq!(t[3], ("p=AB".to_string(), true));
    }

    #[test]
    fn escapes_do_not_end_words() {
        let r = lex("a\\;b\\ c TXT x\n");
        let (_, t) = r[0].clone().unwrap();
        assert_eq!(t[0].0, "a\\;b\\ c");
    }

    #[test]
    fn errors() {
        assert_eq!(
            lex("a SOA ( 1 2\n b A 1.2.3.4\n"),
            vec![Err(LexErrorKind::MissingClose { line: 1, col: 7 })]
        );
        let r = lex("a A 1.2.3.4 )\nb A 1.2.3.4\n");
        assert_eq!(r[0], Err(LexErrorKind::UnbalancedClose));
        assert!(r[1].is_ok());
        assert_eq!(
            lex("a TXT \"abc\n"),
            vec![Err(LexErrorKind::UnterminatedQuote)]
        );
        assert_eq!(lex("a TXT ( ( x ) )\n")[0], Err(LexErrorKind::NestedParen));
    }
}
