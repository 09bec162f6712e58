//! Files from other networks, uploaded with HTTP File Upload (XEP-0363): finding the server's
//! upload service, asking it for a slot, and putting the file there. The file itself is fetched
//! with the SDK's `fetch` (public addresses only unless `media_fetch_private`, size-capped).

use crate::transport::{self, Read, Stream};
use passerelle_sdk::{ConnectorError, SendError};
use std::time::Duration;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult,
};
use tokio_xmpp::parsers::http_upload::{SlotRequest, SlotResult};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::xmlstream::XmppStreamElement;

/// XEP-0363.
pub const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// How many of the server's items are asked whether they are an upload service.
const MAX_ITEMS: usize = 20;

/// An upload service and the largest file it (and the config) takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its JID.
    pub jid: Jid,
    /// The most bytes one file may have.
    pub max: u64,
}

/// Sends `iq` (with id `id`) and reads until its answer: the result's payload, or `None` for an
/// error answer. Only for the start of a session, before presence, when nothing else is sent to
/// us (anything else read meanwhile is ignored).
async fn ask(stream: &mut Stream, iq: Iq, id: &str) -> Result<Option<Element>, ConnectorError> {
    transport::send(stream, iq).await?;
    loop {
        let Read::Element(el) = transport::read(stream).await? else {
            continue;
        };
        match *el {
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Result {
                id: got, payload, ..
            })) if got == id => return Ok(payload),
            XmppStreamElement::Stanza(Stanza::Iq(Iq::Error { id: got, .. })) if got == id => {
                return Ok(None);
            }
            _ => {}
        }
    }
}

/// The largest size a disco#info answer allows, when it is an upload service.
fn upload_limit(info: &DiscoInfoResult) -> Option<Option<u64>> {
    if !info.features.contains(NS_UPLOAD) {
        return None;
    }
    let max = info
        .extensions
        .iter()
        .filter(|f| f.form_type() == Some(NS_UPLOAD))
        .flat_map(|f| f.fields.iter())
        .find(|f| f.var.as_deref() == Some("max-file-size"))
        .and_then(|f| f.values.first())
        .and_then(|v| v.parse::<u64>().ok());
    Some(max)
}

/// Finds the server's upload service (disco#items, then disco#info of every item at once)
/// within `timeout`. A server without one, or that does not answer, gives `None`: files then go
/// out as links.
pub async fn discover(
    stream: &mut Stream,
    server: &Jid,
    configured: Option<&Jid>,
    max: u64,
    timeout: Duration,
) -> Result<Option<Service>, ConnectorError> {
    let search = async {
        let candidates: Vec<Jid> = match configured {
            Some(j) => vec![j.clone()],
            None => {
                let items = Iq::from_get(
                    "pss-disco-items",
                    DiscoItemsQuery {
                        node: None,
                        rsm: None,
                    },
                )
                .with_to(server.clone());
                match ask(stream, items, "pss-disco-items").await? {
                    Some(p) => DiscoItemsResult::try_from(p)
                        .map(|r| r.items.into_iter().map(|i| i.jid).take(MAX_ITEMS).collect())
                        .unwrap_or_default(),
                    None => Vec::new(),
                }
            }
        };
        // Every candidate is asked at once: one that never answers (a component that is down
        // or ignores disco) must not keep the others from being heard.
        let mut waiting: Vec<(String, Jid)> = Vec::with_capacity(candidates.len());
        for (n, jid) in candidates.into_iter().enumerate() {
            let id = format!("pss-disco-info-{n}");
            let info = Iq::from_get(id.clone(), DiscoInfoQuery { node: None }).with_to(jid.clone());
            transport::send(stream, info).await?;
            waiting.push((id, jid));
        }
        while !waiting.is_empty() {
            let Read::Element(el) = transport::read(stream).await? else {
                continue;
            };
            let (id, payload) = match *el {
                XmppStreamElement::Stanza(Stanza::Iq(Iq::Result { id, payload, .. })) => {
                    (id, payload)
                }
                XmppStreamElement::Stanza(Stanza::Iq(Iq::Error { id, .. })) => (id, None),
                _ => continue,
            };
            let Some(at) = waiting.iter().position(|(w, _)| *w == id) else {
                continue;
            };
            let (_, jid) = waiting.swap_remove(at);
            let Some(info) = payload.and_then(|p| DiscoInfoResult::try_from(p).ok()) else {
                continue;
            };
            if let Some(limit) = upload_limit(&info) {
                let max = limit.map_or(max, |l| l.min(max));
                return Ok(Some(Service { jid, max }));
            }
        }
        Ok(None)
    };
    match tokio::time::timeout(timeout, search).await {
        Ok(found) => found,
        Err(_) => {
            tracing::warn!(
                "the XMPP server did not say in time whether it has an upload service; files go out as links"
            );
            Ok(None)
        }
    }
}

/// The request for a slot for one file.
pub fn slot_request(id: &str, service: &Jid, name: &str, size: u64, mime: &str) -> Iq {
    Iq::from_get(
        id.to_owned(),
        SlotRequest {
            filename: name.to_owned(),
            size,
            content_type: Some(mime.to_owned()),
        },
    )
    .with_to(service.clone())
}

/// Where to put a file, the headers to put it with, and where it can then be fetched.
#[derive(Clone, Debug)]
pub struct Slot {
    /// PUT here.
    pub put: String,
    /// With these headers (XEP-0363 allows Authorization, Cookie and Expires only).
    pub headers: Vec<(&'static str, String)>,
    /// The file's address once put.
    pub get: String,
}

/// Reads a slot answer. Only `https`, or `http` to the same host the service named, is taken
/// for the file's address (it is what other people will open).
pub fn slot(payload: Element) -> Result<Slot, SendError> {
    let slot = SlotResult::try_from(payload)
        .map_err(|_| SendError::Rejected("the upload service's answer did not parse".into()))?;
    for url in [&slot.put.url, &slot.get.url] {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(SendError::Rejected(
                "the upload service gave a URL that is not http(s)".into(),
            ));
        }
    }
    Ok(Slot {
        put: slot.put.url,
        headers: slot
            .put
            .headers
            .into_iter()
            .map(|h| (h.name.as_str(), h.value))
            .collect(),
        get: slot.get.url,
    })
}

/// Puts `data` into `slot`.
pub async fn put(slot: &Slot, mime: &str, data: Vec<u8>) -> Result<(), SendError> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|_| SendError::Rejected("http client".into()))?;
    let mut request = client
        .put(&slot.put)
        .header(reqwest::header::CONTENT_TYPE, mime)
        .body(data);
    for (name, value) in &slot.headers {
        request = request.header(*name, value);
    }
    let status = request
        .send()
        .await
        .map_err(|_| SendError::Disconnected)?
        .status()
        .as_u16();
    match status {
        200..=299 => Ok(()),
        413 => Err(SendError::TooLarge),
        429 | 500.. => Err(SendError::Disconnected),
        other => Err(SendError::Rejected(format!("the upload answered {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn a_slot_answer_gives_put_headers_and_get() {
        let payload = Element::from_str(
            "<slot xmlns='urn:xmpp:http:upload:0'>\
               <put url='https://up.example/p/1'><header name='Authorization'>Bearer t</header></put>\
               <get url='https://up.example/g/1'/></slot>",
        )
        .unwrap();
        let s = slot(payload).unwrap();
        assert_eq!(s.put, "https://up.example/p/1");
        assert_eq!(s.headers, vec![("Authorization", "Bearer t".to_owned())]);
        assert_eq!(s.get, "https://up.example/g/1");
        let bad = Element::from_str(
            "<slot xmlns='urn:xmpp:http:upload:0'><put url='ftp://x/p'/><get url='ftp://x/g'/></slot>",
        )
        .unwrap();
        assert!(matches!(slot(bad), Err(SendError::Rejected(_))));
    }

    #[test]
    fn the_limit_comes_from_the_service_form() {
        let info = DiscoInfoResult::try_from(
            Element::from_str(
                "<query xmlns='http://jabber.org/protocol/disco#info'>\
                   <identity category='store' type='file'/>\
                   <feature var='urn:xmpp:http:upload:0'/>\
                   <x xmlns='jabber:x:data' type='result'>\
                     <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
                     <field var='max-file-size'><value>1000</value></field>\
                   </x></query>",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(upload_limit(&info), Some(Some(1000)));
        let plain = DiscoInfoResult::try_from(
            Element::from_str(
                "<query xmlns='http://jabber.org/protocol/disco#info'><identity category='conference' type='text'/></query>",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(upload_limit(&plain), None);
    }
}
