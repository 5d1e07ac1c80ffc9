//! One-connection SMTP latency probe for benchmarks: for each message it
//! sends `MAIL`, `RCPT`, `DATA` and the body, each waiting for its reply (no
//! pipelining), and times the exchange from `MAIL` to the reply after the
//! final dot. A compiled client keeps its own share of the figure small, so
//! what is measured is the server (and the loopback round trips).
//!
//! ```text
//! cargo run --release -p smtp-proto --example latency_client -- \
//!     127.0.0.1:2525 2000 user2@csuvnetwork.com 4096
//! ```
//!
//! Prints `n=… median_us=… p10_us=… p90_us=… mean_us=…` on one line.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(count)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: latency_client HOST:PORT COUNT [RCPT] [SIZE]");
        std::process::exit(2);
    };
    let count: usize = count.parse().map_err(io::Error::other)?;
    let rcpt = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "user2@csuvnetwork.com".into());
    let size: usize = match args.get(4) {
        Some(s) => s.parse().map_err(io::Error::other)?,
        None => 4096,
    };

    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    expect(&mut input, 220)?;
    out.write_all(b"EHLO latency.example\r\n")?;
    expect(&mut input, 250)?;

    // A body of `size` octets in 78-octet lines, as smtp-source -l sends.
    let mut body = b"Subject: latency\r\n\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    let mail = b"MAIL FROM:<bench@example.net>\r\n";
    let rcpt = format!("RCPT TO:<{rcpt}>\r\n");

    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        out.write_all(mail)?;
        expect(&mut input, 250)?;
        out.write_all(rcpt.as_bytes())?;
        expect(&mut input, 250)?;
        out.write_all(b"DATA\r\n")?;
        expect(&mut input, 354)?;
        out.write_all(&body)?;
        expect(&mut input, 250)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.write_all(b"QUIT\r\n")?;
    let _ = expect(&mut input, 221);

    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
    };
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    println!(
        "n={} median_us={:.1} p10_us={:.1} p90_us={:.1} mean_us={:.1}",
        times.len(),
        at(0.5).unwrap_or(0.0),
        at(0.1).unwrap_or(0.0),
        at(0.9).unwrap_or(0.0),
        mean
    );
    Ok(())
}

/// Reads one (possibly multi-line) reply and checks its code.
fn expect(input: &mut impl BufRead, code: u16) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        // "250-..." continues, "250 ..." (or a bare "250") ends the reply.
        if line
            .as_bytes()
            .get(3)
            .is_none_or(|&b| b == b' ' || b == b'\r')
        {
            break;
        }
    }
    if line.get(..3) != Some(&code.to_string()) {
        return Err(io::Error::other(format!(
            "expected {code}, got {}",
            line.trim_end()
        )));
    }
    Ok(())
}
