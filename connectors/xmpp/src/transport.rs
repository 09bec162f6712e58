//! Opening a client stream: TCP, then STARTTLS (or TLS from the first byte), certificate checked
//! against the JID's domain with the SDK's TLS set-up (Mozilla roots plus `tls_ca_file`), SASL
//! (SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, the best the server offers, only ever over TLS), and
//! resource binding. tokio-xmpp provides the XML stream and the SASL exchange; the connection
//! itself is ours, so that a private CA works and every failure is classified for the supervisor.

use crate::bounds::Bounded;
use crate::config::{Mode, Settings, TlsMode};
use crate::nsswap::NamespaceSwap;
use futures::{SinkExt, StreamExt};
use passerelle_sdk::{AccountId, ConnectorError};
use std::borrow::Cow;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::error::{AuthError, Error as XmppError};
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::xmlstream::{
    self, ReadError, StreamHeader, Timeouts, XmppStream, XmppStreamElement,
};

/// A logged-in, bound client stream.
pub type Stream = XmppStream<Box<dyn AsyncReadAndWrite + Send + 'static>>;

/// What one stream read gave.
pub enum Read {
    /// A stanza or nonza (boxed: stanzas are large).
    Element(Box<XmppStreamElement>),
    /// An element that did not parse: logged (without content) and skipped.
    Malformed(String),
    /// Nothing for the stream's read timeout: time to check the link.
    Idle,
}

/// Reads the next element. `Err` ends the session.
pub async fn read(stream: &mut Stream) -> Result<Read, ConnectorError> {
    match stream
        .next()
        .await
        .map(|r| r.and_then(|e| e.into_read_error()))
    {
        Some(Ok(XmppStreamElement::StreamError(e))) => Err(ConnectorError::Disconnected(format!(
            "the server ended the stream: {:?}",
            e.0.condition
        ))),
        Some(Ok(el)) => Ok(Read::Element(Box::new(el))),
        Some(Err(ReadError::SoftTimeout)) => Ok(Read::Idle),
        Some(Err(ReadError::ParseError(e))) => Ok(Read::Malformed(e.to_string())),
        // XML that is not well-formed (or cut off by the end of the connection) ends the stream:
        // the parser can't find its footing again, and would report the same error for ever.
        Some(Err(ReadError::HardError(e)))
            if e.get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rxml::Error>().is_some()) =>
        {
            Err(ConnectorError::Disconnected(format!(
                "the server's XML is not well-formed: {e}"
            )))
        }
        // A stanza that is well-formed XML but not valid (tokio-xmpp reports it as InvalidData
        // and keeps the stream): skipped. The error names the element and the rule, never text.
        Some(Err(ReadError::HardError(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
            Ok(Read::Malformed(e.to_string()))
        }
        Some(Err(ReadError::HardError(e))) => {
            Err(ConnectorError::Disconnected(format!("read failed: {e}")))
        }
        Some(Err(ReadError::StreamFooterReceived)) | None => Err(ConnectorError::Disconnected(
            "the server closed the stream".into(),
        )),
    }
}

/// Writes one stanza.
pub async fn send(stream: &mut Stream, stanza: impl Into<Stanza>) -> Result<(), ConnectorError> {
    stream
        .send(&XmppStreamElement::Stanza(stanza.into()))
        .await
        .map_err(|e| ConnectorError::Disconnected(format!("write failed: {e}")))
}

/// Connects, secures, logs in and binds (client mode), or connects and completes the component
/// handshake (component mode), within the connect timeout. Returns our address: the bound JID,
/// or the bot's address in the component's domain.
pub async fn open(
    settings: &Settings,
    account: &AccountId,
) -> Result<(Stream, FullJid), ConnectorError> {
    let opening = async {
        match settings.mode {
            Mode::Client => open_client(settings, account).await,
            Mode::Component => open_component(settings, account).await,
        }
    };
    tokio::time::timeout(settings.connect_timeout, opening)
        .await
        .map_err(|_| {
            ConnectorError::Disconnected(format!(
                "connecting to {}:{} and logging in timed out",
                settings.server, settings.port
            ))
        })?
}

fn timeouts(settings: &Settings) -> Timeouts {
    Timeouts {
        read_timeout: settings.ping_interval,
        response_timeout: settings.ping_timeout,
    }
}

fn header(settings: &Settings) -> StreamHeader<'static> {
    StreamHeader {
        to: Some(Cow::Owned(settings.jid.domain().to_string())),
        from: None,
        id: None,
    }
}

fn stream_error(what: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Disconnected(format!("{what}: {e}"))
}

async fn tls(
    settings: &Settings,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectorError> {
    let config = passerelle_sdk::tls::client_config(settings.tls_ca_file.as_deref())
        .map_err(|e| ConnectorError::Config(format!("tls_ca_file {e}")))?;
    let domain = settings.jid.domain().to_string();
    let name = rustls::pki_types::ServerName::try_from(domain.clone())
        .map_err(|_| ConnectorError::Config(format!("{domain} is not a valid TLS server name")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ConnectorError::Disconnected(format!("TLS with {domain} failed: {e}")))
}

async fn connect_tcp(settings: &Settings) -> Result<TcpStream, ConnectorError> {
    let tcp = TcpStream::connect((settings.server.as_str(), settings.port))
        .await
        .map_err(|e| {
            ConnectorError::Disconnected(format!(
                "cannot connect to {}:{}: {e}",
                settings.server, settings.port
            ))
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// XEP-0114: a plain TCP stream to the server's component port, the stream header naming the
/// component's domain, and the handshake proving the shared secret.
async fn open_component(
    settings: &Settings,
    account: &AccountId,
) -> Result<(Stream, FullJid), ConnectorError> {
    let tcp = connect_tcp(settings).await?;
    let io: Box<dyn AsyncReadAndWrite + Send> = Box::new(BufStream::new(NamespaceSwap::new(
        Bounded::new(tcp, account.clone()),
    )));
    let mut pending =
        xmlstream::initiate_stream(io, ns::JABBER_CLIENT, header(settings), timeouts(settings))
            .await
            .map_err(|e| stream_error("opening the component stream", e))?;
    let Some(stream_id) = pending.take_header().id else {
        return Err(ConnectorError::Disconnected(
            "the server's component stream has no id".into(),
        ));
    };
    let mut stream: Stream = pending.skip_features();
    let handshake =
        Handshake::from_stream_id_and_password(stream_id.into_owned(), settings.password.expose());
    stream
        .send(&XmppStreamElement::ComponentHandshake(handshake))
        .await
        .map_err(|e| stream_error("sending the component handshake", e))?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|e| e.into_read_error()))
        {
            Some(Ok(XmppStreamElement::ComponentHandshake(_))) => break,
            Some(Ok(XmppStreamElement::StreamError(e))) => {
                return Err(ConnectorError::AuthRejected(format!(
                    "the server refused the component {} ({:?}); check password and the \
                     server's component secret",
                    settings.jid.domain(),
                    e.0.condition
                )));
            }
            Some(Ok(_))
            | Some(Err(ReadError::SoftTimeout))
            | Some(Err(ReadError::ParseError(_))) => {}
            Some(Err(ReadError::HardError(e))) => {
                return Err(stream_error("component handshake", e));
            }
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(ConnectorError::AuthRejected(format!(
                    "the server closed the stream during the handshake of {} (wrong secret?)",
                    settings.jid.domain()
                )));
            }
        }
    }
    let me = settings
        .jid
        .with_resource_str(&settings.resource)
        .map_err(|e| ConnectorError::Config(format!("resource: {e}")))?;
    Ok((stream, me))
}

async fn open_client(
    settings: &Settings,
    account: &AccountId,
) -> Result<(Stream, FullJid), ConnectorError> {
    let tcp = connect_tcp(settings).await?;
    let tcp = match settings.tls {
        TlsMode::Direct => tcp,
        TlsMode::Starttls => starttls(settings, account, tcp).await?,
    };
    let secured = tls(settings, tcp).await?;
    let io: Box<dyn AsyncReadAndWrite + Send> =
        Box::new(BufStream::new(Bounded::new(secured, account.clone())));
    let pending =
        xmlstream::initiate_stream(io, ns::JABBER_CLIENT, header(settings), timeouts(settings))
            .await
            .map_err(|e| stream_error("opening the stream", e))?;
    let (features, stream) = pending
        .recv_features()
        .await
        .map_err(|e| stream_error("reading stream features", e))?;
    let credentials = sasl::common::Credentials::default()
        .with_username(settings.jid.node().map(|n| n.as_str()).unwrap_or_default())
        .with_password(settings.password.expose());
    let authed = tokio_xmpp::client_login(stream, features.sasl_mechanisms, credentials)
        .await
        .map_err(|e| match e {
            XmppError::Auth(AuthError::Fail(condition)) => ConnectorError::AuthRejected(format!(
                "the server refused the password for {} ({condition:?})",
                settings.jid
            )),
            XmppError::Auth(AuthError::NoMechanism) => ConnectorError::AuthRejected(
                "the server offers no SASL mechanism we support".into(),
            ),
            other => stream_error("logging in", other),
        })?;
    let pending = authed
        .send_header(header(settings))
        .await
        .map_err(|e| stream_error("restarting the stream", e))?;
    let (features, mut stream): (_, Stream) = pending
        .recv_features()
        .await
        .map_err(|e| stream_error("reading stream features", e))?;
    if !features.can_bind() {
        return Err(ConnectorError::Disconnected(
            "the server offers no resource binding".into(),
        ));
    }
    let bind = Iq::from_set("bind", BindQuery::new(Some(settings.resource.clone())));
    send(&mut stream, bind).await?;
    loop {
        let Read::Element(el) = read(&mut stream).await? else {
            continue;
        };
        match *el {
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Result {
                id,
                payload: Some(payload),
                ..
            })) if id == "bind" => {
                let bound = BindResponse::try_from(payload)
                    .map_err(|e| stream_error("binding a resource", e))?;
                return Ok((stream, FullJid::from(bound)));
            }
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Error { id, error, .. })) if id == "bind" => {
                return Err(ConnectorError::Disconnected(format!(
                    "the server refused the resource: {:?}",
                    error.defined_condition
                )));
            }
            _ => {}
        }
    }
}

async fn starttls(
    settings: &Settings,
    account: &AccountId,
    tcp: TcpStream,
) -> Result<TcpStream, ConnectorError> {
    let pending = xmlstream::initiate_stream(
        BufStream::new(Bounded::new(tcp, account.clone())),
        ns::JABBER_CLIENT,
        header(settings),
        timeouts(settings),
    )
    .await
    .map_err(|e| stream_error("opening the stream", e))?;
    let (features, mut stream): (_, XmppStream<BufStream<Bounded<TcpStream>>>) = pending
        .recv_features()
        .await
        .map_err(|e| stream_error("reading stream features", e))?;
    if !features.can_starttls() {
        // Never fall back to plain text: the password would travel in the clear.
        return Err(ConnectorError::Config(format!(
            "{}:{} does not offer STARTTLS (try tls = \"direct\" with its direct TLS port)",
            settings.server, settings.port
        )));
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await
        .map_err(|e| stream_error("asking for STARTTLS", e))?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|e| e.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(_))
            | Some(Err(ReadError::SoftTimeout))
            | Some(Err(ReadError::ParseError(_))) => {}
            Some(Err(ReadError::HardError(e))) => return Err(stream_error("STARTTLS", e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(ConnectorError::Disconnected(
                    "the server closed the stream during STARTTLS".into(),
                ));
            }
        }
    }
    Ok(stream.into_inner().into_inner().into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that sends a message the parsers refuse (an unknown `type`), a stanza cut off by
    /// nothing but well-formed, and then a good message: the bad ones come out as `Malformed`
    /// (no content in the error) and the stream goes on.
    #[tokio::test]
    async fn a_malformed_stanza_is_skipped_and_the_stream_goes_on() {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut header = vec![0u8; 512];
            let _ = theirs.read(&mut header).await;
            theirs
                .write_all(
                    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' version='1.0' \
                      from='example.org' id='s1'><stream:features/>\
                      <message type='nonsense' from='a@example.org/x'><body>secret words</body></message>\
                      <message from='a@example.org/x'><thread>1</thread><thread>2</thread><body>more secret</body></message>\
                      <message type='chat' from='a@example.org/x'><body>fine</body></message>",
                )
                .await
                .expect("write");
            theirs
        });
        let io: Box<dyn AsyncReadAndWrite + Send> = Box::new(BufStream::new(ours));
        let header = StreamHeader {
            to: Some(Cow::Borrowed("example.org")),
            from: None,
            id: None,
        };
        let pending = xmlstream::initiate_stream(io, ns::JABBER_CLIENT, header, Timeouts::tight())
            .await
            .expect("stream");
        let (_, mut stream): (_, Stream) = pending.recv_features().await.expect("features");
        let mut malformed = 0;
        loop {
            match read(&mut stream).await.expect("the stream stays up") {
                Read::Malformed(why) => {
                    assert!(!why.contains("secret"), "the error names no content: {why}");
                    malformed += 1;
                }
                Read::Element(el) => match *el {
                    XmppStreamElement::Stanza(Stanza::Message(m)) => {
                        assert_eq!(m.bodies.values().next().map(String::as_str), Some("fine"));
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                Read::Idle => panic!("idle before the good message"),
            }
        }
        assert_eq!(malformed, 2);
        drop(server.await);
    }
}
