//! Homeserver errors to the SDK's typed errors.

use matrix_sdk::ruma::api::error::{ErrorKind, LimitExceededErrorData, RetryAfter};
use passerelle_sdk::{ConnectorError, SendError};
use std::time::{Duration, SystemTime};

/// What a homeserver error means for us.
#[derive(Debug, PartialEq, Eq)]
pub enum Meaning {
    /// Slow down for this long.
    RateLimited(Duration),
    /// The access token is not (or no longer) valid.
    BadToken,
    /// Refused for good, with a content-free reason (`errcode` or status).
    Refused(String),
    /// The room or event is not there.
    NotFound,
    /// Could not reach the homeserver, or it failed; try again.
    Transient,
}

fn retry(after: &Option<RetryAfter>) -> Duration {
    match after {
        Some(RetryAfter::Delay(d)) => *d,
        Some(RetryAfter::DateTime(t)) => t
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::from_secs(1)),
        None => Duration::from_secs(5),
    }
}

/// Classifies an SDK error.
pub fn meaning(e: &matrix_sdk::Error) -> Meaning {
    let Some(api) = e.as_client_api_error() else {
        return match e {
            matrix_sdk::Error::Http(_) => Meaning::Transient,
            _ => Meaning::Refused("client_error".into()),
        };
    };
    classify(api.status_code.as_u16(), api.error_kind())
}

/// Classifies an HTTP-layer SDK error.
pub fn http_meaning(e: &matrix_sdk::HttpError) -> Meaning {
    match e.as_client_api_error() {
        Some(api) => classify(api.status_code.as_u16(), api.error_kind()),
        None => Meaning::Transient,
    }
}

/// Classifies a status code and `errcode`.
pub fn classify(status: u16, kind: Option<&ErrorKind>) -> Meaning {
    match kind {
        Some(ErrorKind::LimitExceeded(LimitExceededErrorData { retry_after, .. })) => {
            Meaning::RateLimited(retry(retry_after))
        }
        Some(ErrorKind::UnknownToken(_)) | Some(ErrorKind::MissingToken) => Meaning::BadToken,
        Some(ErrorKind::NotFound) => Meaning::NotFound,
        // Synapse answers a join to a room it has never heard of with 404 and M_UNKNOWN.
        Some(ErrorKind::Unknown) if status == 404 => Meaning::NotFound,
        Some(k) if status < 500 => Meaning::Refused(k.errcode().to_string()),
        _ if status == 429 => Meaning::RateLimited(Duration::from_secs(5)),
        _ if status == 404 => Meaning::NotFound,
        _ if status >= 500 => Meaning::Transient,
        _ => Meaning::Refused(format!("status {status}")),
    }
}

/// As a send error.
pub fn send_error(m: Meaning) -> SendError {
    match m {
        Meaning::RateLimited(d) => SendError::RateLimited { retry_after: d },
        Meaning::BadToken | Meaning::Transient => SendError::Disconnected,
        Meaning::NotFound => SendError::Rejected("M_NOT_FOUND".into()),
        Meaning::Refused(why) => SendError::Rejected(why),
    }
}

/// As a connector error.
pub fn connector_error(m: Meaning, what: &str) -> ConnectorError {
    match m {
        Meaning::RateLimited(d) => ConnectorError::RateLimited { retry_after: d },
        Meaning::BadToken => ConnectorError::AuthRejected(format!("{what}: access token refused")),
        Meaning::Transient => {
            ConnectorError::Disconnected(format!("{what}: homeserver unreachable"))
        }
        Meaning::NotFound => ConnectorError::Fatal(format!("{what}: not found")),
        Meaning::Refused(why) => ConnectorError::Fatal(format!("{what}: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_is_not_found_whatever_generic_code_comes_with_it() {
        assert!(matches!(
            classify(404, Some(&ErrorKind::Unknown)),
            Meaning::NotFound
        ));
        assert!(matches!(classify(404, None), Meaning::NotFound));
        assert!(matches!(
            classify(404, Some(&ErrorKind::NotFound)),
            Meaning::NotFound
        ));
        assert!(matches!(
            classify(403, Some(&ErrorKind::Forbidden)),
            Meaning::Refused(code) if code == "M_FORBIDDEN"
        ));
        assert!(matches!(classify(502, None), Meaning::Transient));
    }
}
