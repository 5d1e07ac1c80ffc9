//! TLS for the driver (feature `tls`): a connection that starts in
//! plaintext and may be upgraded in place (SMTP `STARTTLS`, RFC 3207; POP3
//! `STLS`, RFC 2595), or that is TLS from its first byte (RFC 8314's
//! implicit TLS on ports 465 and 995), by rustls.
//!
//! The upgrade is the driver's: the host answers the session's
//! `StartTls` event with [`Driver::accept_tls`] (server) or
//! [`Driver::connect_tls`] (client), then tells the session the handshake
//! is done. Nothing read before the handshake reaches the session after
//! it: the driver holds no input of its own, and the sessions drop what
//! they had buffered (the CVE-2011-0411 class of bugs).
//!
//! ```no_run
//! use std::time::Duration;
//! use mail_session::driver::Driver;
//! use mail_session::tls::{Stream, TlsAcceptor};
//!
//! # async fn demo(tcp: tokio::net::TcpStream, acceptor: TlsAcceptor) -> std::io::Result<()> {
//! let mut driver = Driver::new(Stream::Plain(tcp));
//! // ... the session said `220 Ready to start TLS` and asked for TLS:
//! let info = driver.accept_tls(&acceptor, Duration::from_secs(30)).await?;
//! println!("{}", info.received_clause()); // using TLSv1.3 with cipher ...
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::CommonState;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::driver::{read_scratch, Driver, Transport};

/// A TCP connection, plaintext or TLS, that the driver reads and writes.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext (before `STARTTLS`, or a listener without TLS).
    Plain(TcpStream),
    /// TLS, server side.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, client side.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// No connection: a handshake failed (the socket is closed).
    Closed,
}

impl Stream {
    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Server(_) | Stream::Client(_))
    }

    /// The TCP socket underneath, if any.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Server(s) => Some(s.get_ref().0),
            Stream::Client(s) => Some(s.get_ref().0),
            Stream::Closed => None,
        }
    }
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection closed after a failed TLS handshake",
    )
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Closed => Poll::Ready(Err(not_connected())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s).poll_flush(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Closed => Poll::Ready(Ok(())),
        }
    }
}

/// Reads decrypted bytes through the driver's per-thread buffer, so an
/// idle TLS connection holds no read buffer of ours either.
async fn read_tls<R: AsyncRead + Unpin>(
    r: &mut R,
    mut consume: impl FnMut(&[u8]),
) -> io::Result<bool> {
    std::future::poll_fn(|cx| {
        read_scratch(|b| {
            let mut rb = ReadBuf::new(b);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    consume(got);
                    Poll::Ready(Ok(!got.is_empty()))
                }
                // A peer that closes TCP without close_notify: mail clients
                // do, and nothing after QUIT matters (RFC 8314 section 5.3
                // leaves truncation to the application protocol).
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(false))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

impl Transport for Stream {
    async fn read_with(&mut self, consume: impl FnMut(&[u8]) + Send) -> io::Result<bool> {
        match self {
            Stream::Plain(s) => s.read_with(consume).await,
            Stream::Server(s) => read_tls(s, consume).await,
            Stream::Client(s) => read_tls(s, consume).await,
            Stream::Closed => Err(not_connected()),
        }
    }
}

/// What was negotiated, for logs and the `Received:` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`, as OpenSSL and Postfix write it.
    pub version: &'static str,
    /// The cipher suite by its OpenSSL name (`TLS_AES_256_GCM_SHA384`,
    /// `ECDHE-RSA-AES128-GCM-SHA256`), as Postfix logs it.
    pub cipher: String,
    /// The cipher's key size in bits.
    pub cipher_bits: u16,
    /// The key exchange group (`X25519`, `secp256r1`), if known.
    pub key_exchange: Option<String>,
    /// The name the client asked for (SNI), server side.
    pub server_name: Option<String>,
    /// The application protocol agreed by ALPN (RFC 7301), if any.
    pub alpn: Option<String>,
}

impl TlsInfo {
    fn from_state(state: &CommonState, server_name: Option<&str>) -> TlsInfo {
        let version = match state.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let (cipher, cipher_bits) = state
            .negotiated_cipher_suite()
            .map(|s| openssl_cipher(s.suite()))
            .unwrap_or_else(|| ("unknown".into(), 0));
        TlsInfo {
            version,
            cipher,
            cipher_bits,
            key_exchange: state
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name())),
            server_name: server_name.map(str::to_owned),
            alpn: state
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        }
    }

    /// Postfix's `Received:` clause, without its parentheses:
    /// `using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
    /// key-exchange X25519`.
    pub fn received_clause(&self) -> String {
        let mut s = format!(
            "using {} with cipher {} ({}/{} bits)",
            self.version, self.cipher, self.cipher_bits, self.cipher_bits
        );
        if let Some(k) = &self.key_exchange {
            s.push_str(" key-exchange ");
            s.push_str(k);
        }
        s
    }
}

impl fmt::Display for TlsInfo {
    /// The form of the transcript's TLS boundary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} bits)",
            self.version, self.cipher, self.cipher_bits
        )?;
        if let Some(k) = &self.key_exchange {
            write!(f, " key-exchange {k}")?;
        }
        if let Some(n) = &self.server_name {
            write!(f, " sni={n}")?;
        }
        if let Some(a) = &self.alpn {
            write!(f, " alpn={a}")?;
        }
        // We never ask for one (a client certificate is never required).
        write!(f, " no client certificate")
    }
}

/// rustls' IANA names to OpenSSL's, which Postfix and Dovecot log.
fn openssl_cipher(suite: rustls::CipherSuite) -> (String, u16) {
    use rustls::CipherSuite as C;
    let (name, bits) = match suite {
        C::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        C::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        C::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-ECDSA-AES128-GCM-SHA256", 128),
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-ECDSA-AES256-GCM-SHA384", 256),
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-ECDSA-CHACHA20-POLY1305", 256),
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-RSA-CHACHA20-POLY1305", 256),
        other => return (format!("{other:?}"), 0),
    };
    (name.to_owned(), bits)
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
}

/// Implicit TLS (ports 465 and 995): the handshake on a new connection,
/// bounded by `deadline` so that a client that starts one and stalls
/// holds its slot no longer.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    deadline: Duration,
) -> io::Result<(Stream, TlsInfo)> {
    let tls = tokio::time::timeout(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out())??;
    let info = {
        let conn = tls.get_ref().1;
        TlsInfo::from_state(conn, conn.server_name())
    };
    Ok((Stream::Server(Box::new(tls)), info))
}

impl Driver<Stream> {
    /// The server side of `STARTTLS`/`STLS`: writes what is queued (the
    /// `220`/`+OK`), then runs the handshake within `deadline`. On
    /// failure the connection is closed and every later read or write
    /// fails.
    pub async fn accept_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        deadline: Duration,
    ) -> io::Result<TlsInfo> {
        self.flush().await?;
        let tcp = self.take_plain()?;
        let (stream, info) = accept(tcp, acceptor, deadline).await?;
        *self.stream_mut() = stream;
        self.note(&format!("TLS established: {info}"));
        Ok(info)
    }

    /// The client side of `STARTTLS`/`STLS`, or of implicit TLS on a new
    /// connection: writes what is queued, then runs the handshake for
    /// `name` within `deadline`.
    pub async fn connect_tls(
        &mut self,
        connector: &TlsConnector,
        name: ServerName<'static>,
        deadline: Duration,
    ) -> io::Result<TlsInfo> {
        self.flush().await?;
        let tcp = self.take_plain()?;
        let tls = tokio::time::timeout(deadline, connector.connect(name, tcp))
            .await
            .map_err(|_| timed_out())??;
        let info = TlsInfo::from_state(tls.get_ref().1, None);
        *self.stream_mut() = Stream::Client(Box::new(tls));
        self.note(&format!("TLS established: {info}"));
        Ok(info)
    }

    fn take_plain(&mut self) -> io::Result<TcpStream> {
        match std::mem::replace(self.stream_mut(), Stream::Closed) {
            Stream::Plain(tcp) => Ok(tcp),
            Stream::Closed => Err(not_connected()),
            tls => {
                *self.stream_mut() = tls;
                Err(io::Error::other("TLS is already active"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Interrupt, Session};
    use crate::transcript::TranscriptEntry;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers each line `n` with `n` KiB of `x` and a CRLF.
    #[derive(Default)]
    struct Big {
        buf: Vec<u8>,
        out: Vec<u8>,
        eof: bool,
    }

    impl Session for Big {
        type Event = ();
        fn enqueue_input(&mut self, _: Duration, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }
        fn input_closed(&mut self) {
            self.eof = true;
        }
        fn next(&mut self) -> Result<(), Interrupt> {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let n: usize = String::from_utf8_lossy(&line).trim().parse().unwrap_or(0);
                self.out.resize(n * 1024, b'x');
                self.out.extend_from_slice(b"\r\n");
            }
            if !self.out.is_empty() {
                return Err(Interrupt::Output(std::mem::take(&mut self.out)));
            }
            Err(if self.eof {
                Interrupt::Close
            } else {
                Interrupt::NeedInput
            })
        }
        fn poll_timeout(&self) -> Option<Duration> {
            None
        }
        fn handle_timeout(&mut self, _: Duration) {}
        fn drain_output(&mut self, dst: &mut Vec<u8>) -> usize {
            let n = self.out.len();
            dst.append(&mut self.out);
            n
        }
        fn poll_transcript(&mut self) -> Option<TranscriptEntry> {
            None
        }
        fn tls_active(&self) -> bool {
            true
        }
    }

    fn configs() -> (TlsAcceptor, TlsConnector) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = made.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (
            TlsAcceptor::from(Arc::new(server)),
            TlsConnector::from(Arc::new(client)),
        )
    }

    /// Large answers to a client that reads slowly: every byte arrives
    /// before the server waits for the next command, even when the socket
    /// took the last TLS records only later.
    #[tokio::test]
    async fn large_output_over_tls_is_flushed_before_waiting() {
        let (acceptor, connector) = configs();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let (stream, info) = accept(tcp, &acceptor, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(info
                .received_clause()
                .starts_with("using TLSv1.3 with cipher TLS_"));
            let mut d = Driver::new(stream);
            let mut s = Big::default();
            while d.next(&mut s, false).await.is_ok() {}
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = connector.connect(name, tcp).await.unwrap();
        for kib in [4096usize, 1, 777] {
            c.write_all(format!("{kib}\n").as_bytes()).await.unwrap();
            // Let the server fill the socket buffers before reading.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut got = vec![0; kib * 1024 + 2];
            tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
                .await
                .expect("the whole answer arrives")
                .unwrap();
            assert!(got.ends_with(b"x\r\n"));
        }
        c.shutdown().await.unwrap();
        server.await.unwrap();
    }

    #[test]
    fn cipher_names_are_openssl_s() {
        use rustls::CipherSuite as C;
        assert_eq!(
            openssl_cipher(C::TLS13_AES_256_GCM_SHA384),
            ("TLS_AES_256_GCM_SHA384".to_string(), 256)
        );
        assert_eq!(
            openssl_cipher(C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            ("ECDHE-RSA-AES128-GCM-SHA256".to_string(), 128)
        );
    }
}
