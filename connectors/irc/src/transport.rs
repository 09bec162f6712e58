//! The byte stream to the server (TCP, or TLS through rustls) and a line reader over it that
//! bounds memory: a line longer than the protocol allows is discarded, not buffered.

use crate::config::Settings;
use crate::line::MAX_INBOUND_LINE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

/// A connected stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to the configured server, with TLS when configured.
pub async fn connect(settings: &Settings) -> Result<Box<dyn Stream>, String> {
    let addr = (settings.server.as_str(), settings.port);
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            format!(
                "connecting to {}:{} timed out",
                settings.server, settings.port
            )
        })?
        .map_err(|e| {
            format!(
                "cannot connect to {}:{}: {e}",
                settings.server, settings.port
            )
        })?;
    let _ = tcp.set_nodelay(true);
    if !settings.tls {
        return Ok(Box::new(tcp));
    }
    let config = passerelle_sdk::tls::client_config(settings.tls_ca_file.as_deref())
        .map_err(|e| format!("tls_ca_file {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(settings.server.clone())
        .map_err(|_| format!("{} is not a valid TLS server name", settings.server))?;
    let tls = tokio::time::timeout(
        settings.connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake with {} failed: {e}", settings.server))?;
    Ok(Box::new(tls))
}

/// What the reader produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// One line, without CR LF, as raw bytes.
    Line(Vec<u8>),
    /// A line over the limit was skipped.
    Oversized,
    /// The server closed the connection.
    Closed,
}

/// Reads lines. Cancel-safe: dropping a pending [`LineReader::next`] loses no data.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(4096),
            discarding: false,
        }
    }

    /// The next line.
    pub async fn next(&mut self) -> std::io::Result<Read> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.discarding) || line.len() > MAX_INBOUND_LINE {
                    return Ok(Read::Oversized);
                }
                if line.is_empty() {
                    continue;
                }
                return Ok(Read::Line(line));
            }
            if self.buf.len() > MAX_INBOUND_LINE {
                self.buf.clear();
                self.discarding = true;
            }
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Read::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_oversized_ones_skipped() {
        let mut data = b"PING :a\r\n\r\nPING :b\n".to_vec();
        data.extend(vec![b'x'; MAX_INBOUND_LINE + 10]);
        data.extend(b"\r\nPING :c\r\n");
        let mut r = LineReader::new(&data[..]);
        assert_eq!(r.next().await.unwrap(), Read::Line(b"PING :a".to_vec()));
        assert_eq!(r.next().await.unwrap(), Read::Line(b"PING :b".to_vec()));
        assert_eq!(r.next().await.unwrap(), Read::Oversized);
        assert_eq!(r.next().await.unwrap(), Read::Line(b"PING :c".to_vec()));
        assert_eq!(r.next().await.unwrap(), Read::Closed);
    }
}
