//! Signed links to Mattermost's files (`/accounts/NAME/media/…`, when `media_public_url` is set):
//! fetched with the token from `GET /files/{id}` and passed on as they come.

use crate::api::Api;
use crate::config::valid_id;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use passerelle_sdk::http::{Admission, Body, HttpHandler, Request, Response};
use passerelle_sdk::signed_link::{self, SignedLinks};

/// The account's endpoints.
pub struct Endpoints {
    /// Signed file links.
    pub links: Option<SignedLinks>,
    /// For the download.
    pub api: Api,
    /// File size cap.
    pub max_bytes: u64,
}

impl HttpHandler for Endpoints {
    fn admit(&self, head: &http::request::Parts) -> Admission {
        signed_link::admit_media(head)
    }

    fn handle(&self, request: Request) -> BoxFuture<'static, Response> {
        let api = self.api.clone();
        let max = self.max_bytes;
        signed_link::serve(self.links.as_ref(), &request, move |id| async move {
            if !valid_id(&id) {
                return Err((404, "file not available\n"));
            }
            let answer = api
                .http
                .get(api.url(&format!("files/{id}")))
                .header(reqwest::header::AUTHORIZATION, api.bearer())
                .send()
                .await
                .map_err(|_| (502, "download failed\n"))?;
            if !answer.status().is_success() {
                return Err((404, "file not available\n"));
            }
            let len = answer.content_length();
            if len.is_some_and(|l| l > max) {
                return Err((413, "file too large\n"));
            }
            let mime = answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let stream = answer
                .bytes_stream()
                .map_err(|e| std::io::Error::other(e.to_string()));
            Ok(signed_link::File {
                body: Body::capped(stream, max),
                mime,
                len,
            })
        })
    }
}
