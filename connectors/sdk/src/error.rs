//! Typed errors of the connector contract.

use std::fmt;
use std::time::Duration;

/// Why [`crate::Connector::run`] returned. The daemon restarts the connector with backoff when
/// [`ConnectorError::is_retryable`] says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The network refused our credentials; retrying with the same ones would not help.
    #[error("authentication rejected: {0}")]
    AuthRejected(String),
    /// The connection was lost or could not be made.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The network asked us to slow down.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// How long the network asked us to wait.
        retry_after: Duration,
    },
    /// The connector's configuration can't work (found at run time).
    #[error("configuration: {0}")]
    Config(String),
    /// Anything else that retrying would not mend.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl ConnectorError {
    /// Whether restarting the connector could help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Disconnected(_) | Self::RateLimited { .. })
    }
}

/// Why one outbound event was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The network can't carry this kind of event (the connector declared so in its capabilities).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The destination room does not exist or we are not in it.
    #[error("room not found")]
    RoomNotFound,
    /// The event is larger than the network accepts.
    #[error("too large")]
    TooLarge,
    /// The network asked us to slow down; the daemon retries after the given time.
    #[error("rate limited, retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// Not connected right now; the daemon retries with backoff.
    #[error("disconnected")]
    Disconnected,
    /// The network lets a business or bot write to this person only within a time window after
    /// they last wrote (Meta's 24-hour customer-service window), and it is closed. Not retried:
    /// the person must write first.
    #[error("outside the network's reply window: {0}")]
    WindowClosed(String),
    /// The network refused the event for a reason retrying would not mend. The reason must not
    /// contain message content.
    #[error("rejected: {0}")]
    Rejected(String),
}

impl SendError {
    /// Whether the daemon should retry the send later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Disconnected)
    }
    /// A short, content-free reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsupported(_) => "unsupported",
            Self::RoomNotFound => "room_not_found",
            Self::TooLarge => "too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Disconnected => "disconnected",
            Self::WindowClosed(_) => "window_closed",
            Self::Rejected(_) => "rejected",
        }
    }
}

/// Why an inbound event could not be handed to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The daemon is shutting down and takes no more events.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The daemon could not store the event durably; the connector should not acknowledge it to
    /// its network (so the network redelivers it) where it can avoid that.
    #[error("not stored: {0}")]
    NotStored(String),
}

/// One problem in a configuration, named by its key path, e.g.
/// `accounts."irc.main".server: missing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The dotted key path, quoted where a key holds a dot.
    pub path: String,
    /// What is wrong, without any secret value.
    pub message: String,
}

impl ConfigIssue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
    /// The same issue under a parent path (`prefix.path`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
