//! A blocking SMTP server over `std::net` that accepts every message and
//! prints the events: the smallest complete host for a `ServerSession`.
//!
//! ```text
//! cargo run -p smtp-proto --example std_server -- 127.0.0.1:2525 [--once]
//! swaks --server 127.0.0.1:2525 --to user1@csuvnetwork.com
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use smtp_proto::{Delivery, Event, Interrupt, ServerConfig, ServerSession, Verdict};

fn serve(mut stream: TcpStream, id: u64) -> std::io::Result<()> {
    let start = Instant::now();
    let mut session =
        ServerSession::new(ServerConfig::new("mail.csuvnetwork.com"), start.elapsed());
    let mut buf = [0u8; 8192];
    let mut size = 0;
    loop {
        match session.next() {
            Ok(Event::Mail { .. } | Event::Rcpt { .. } | Event::Vrfy { .. }) => session
                .decide(Verdict::Accept)
                .map_err(std::io::Error::other)?,
            Ok(Event::BodyChunk(chunk)) => size += chunk.len(),
            Ok(Event::MessageEnd(envelope)) => {
                println!(
                    "[{id}] message from <{}>, {size} octets, to {:?}",
                    envelope.from, envelope.recipients
                );
                size = 0;
                let queued = Delivery::Accepted {
                    queue_id: format!("{id:X}{:04X}", start.elapsed().as_millis()),
                };
                session
                    .message_result(queued)
                    .map_err(std::io::Error::other)?;
            }
            Ok(event) => println!("[{id}] {event:?}"),
            Err(Interrupt::Output(bytes)) => stream.write_all(&bytes)?,
            Err(Interrupt::NeedInput) => {
                // Read until the session's deadline, then let it time out.
                let deadline = session.poll_timeout().unwrap_or_default();
                let wait = deadline
                    .saturating_sub(start.elapsed())
                    .max(std::time::Duration::from_millis(1));
                stream.set_read_timeout(Some(wait))?;
                match stream.read(&mut buf) {
                    Ok(0) => session.input_closed(),
                    Ok(n) => session.enqueue_input(start.elapsed(), &buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        session.handle_timeout(start.elapsed())
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Interrupt::Close) | Err(Interrupt::AwaitingHost) => return Ok(()),
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:2525".into());
    let once = args.next().as_deref() == Some("--once");
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    for (id, stream) in (1..).zip(listener.incoming()) {
        if let Err(e) = serve(stream?, id) {
            eprintln!("[{id}] {e}");
        }
        if once {
            break;
        }
    }
    Ok(())
}
