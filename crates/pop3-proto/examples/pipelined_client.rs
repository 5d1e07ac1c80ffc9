//! Pipelined POP3 retrieval probe for benchmarks: logs in, then keeps a
//! window of `RETR n` commands in flight (RFC 2449 PIPELINING) until every
//! message of the maildrop has come back, and reports the rate. Compiled
//! and allocation-free per message, so that on a small machine the figure
//! is the server's rate, not the client's.
//!
//! ```text
//! cargo run --release -p pop3-proto --example pipelined_client -- \
//!     127.0.0.1:1110 user1 PASSWORD [dele]
//! ```
//!
//! With `dele`, each `RETR` is followed by `DELE` and the timed part ends
//! with the `+OK` of `QUIT` (the expunge); without, the session ends with
//! `RSET` and `QUIT` after the timing. Prints
//! `messages=… seconds=… per_s=… octets=…` on one line.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Commands in flight at once.
const WINDOW: usize = 64;

struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    /// Start of the first response not yet parsed.
    pos: usize,
    /// Valid data up to here.
    end: usize,
}

impl Conn {
    /// Reads more. Offsets relative to `pos` stay valid: compaction moves
    /// the unparsed data to the front as a whole.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > self.buf.len() / 2 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.sock.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// The end of the status line (relative to `pos`), which must be `+OK`.
    fn status_end(&mut self) -> io::Result<usize> {
        loop {
            let w = &self.buf[self.pos..self.end];
            if let Some(i) = memchr::memmem::find(w, b"\r\n") {
                if !w.starts_with(b"+OK") {
                    let line = String::from_utf8_lossy(&w[..i]).into_owned();
                    return Err(io::Error::other(format!("server said: {line}")));
                }
                return Ok(i);
            }
            self.fill()?;
        }
    }

    /// One single-line `+OK` response.
    fn single(&mut self) -> io::Result<()> {
        let eol = self.status_end()?;
        self.pos += eol + 2;
        Ok(())
    }

    /// One multi-line response; returns the octets between the status line
    /// and the terminating `.` line.
    fn multi(&mut self) -> io::Result<usize> {
        let eol = self.status_end()?;
        // The status line's CRLF may be the first half of the terminator
        // (an empty body), so the search starts at it.
        let mut from = eol;
        loop {
            let w = &self.buf[self.pos..self.end];
            if let Some(i) = memchr::memmem::find(&w[from..], b"\r\n.\r\n") {
                let at = from + i;
                self.pos += at + 5;
                return Ok((at + 2).saturating_sub(eol + 2));
            }
            // Only the last 4 octets can start a terminator split by a read.
            from = w.len().saturating_sub(4).max(eol);
            self.fill()?;
        }
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(user), Some(pass)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: pipelined_client HOST:PORT USER PASSWORD [dele]");
        std::process::exit(2);
    };
    let dele = args.get(4).is_some_and(|a| a == "dele");
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let mut out = sock.try_clone()?;
    let mut c = Conn {
        sock,
        buf: vec![0; 1 << 20],
        pos: 0,
        end: 0,
    };
    c.single()?; // greeting
    out.write_all(format!("USER {user}\r\nPASS {pass}\r\nSTAT\r\n").as_bytes())?;
    c.single()?;
    c.single()?;
    let eol = c.status_end()?;
    let stat = String::from_utf8_lossy(&c.buf[c.pos..c.pos + eol]).into_owned();
    c.pos += eol + 2;
    let count: usize = stat
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad STAT reply: {stat}")))?;

    let t = Instant::now();
    let mut octets = 0usize;
    let (mut sent, mut done) = (0usize, 0usize);
    let mut cmds = Vec::with_capacity(WINDOW * 24);
    while done < count {
        if sent < count && sent - done < WINDOW / 2 {
            cmds.clear();
            while sent < count && sent - done < WINDOW {
                sent += 1;
                write!(cmds, "RETR {sent}\r\n")?;
                if dele {
                    write!(cmds, "DELE {sent}\r\n")?;
                }
            }
            out.write_all(&cmds)?;
        }
        octets += c.multi()?;
        if dele {
            c.single()?;
        }
        done += 1;
    }
    if dele {
        out.write_all(b"QUIT\r\n")?;
        c.single()?;
    }
    let secs = t.elapsed().as_secs_f64();
    if !dele {
        out.write_all(b"RSET\r\nQUIT\r\n")?;
        c.single()?;
        c.single()?;
    }
    println!(
        "messages={count} seconds={secs:.4} per_s={:.1} octets={octets}",
        count as f64 / secs.max(1e-9)
    );
    Ok(())
}
