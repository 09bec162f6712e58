//! The matrix-sdk client both modes use: built on the account's SQLite store (optionally
//! encrypted) in its data dir; the session is saved once and restored on every start, so the
//! device and its keys persist.

use crate::config::Settings;
use crate::errors::{self, Meaning};
use matrix_sdk::Client;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::ruma::OwnedUserId;
use matrix_sdk::store::RoomLoadSettings;
use passerelle_sdk::ConnectorError;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tracing::warn;

fn session_file(dir: &std::path::Path) -> PathBuf {
    dir.join("session.json")
}

pub(crate) fn store_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("store")
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// A matrix-sdk client with its store in `data_dir/store`.
pub(crate) async fn build_client(
    cfg: &Settings,
    data_dir: &std::path::Path,
) -> Result<Client, ConnectorError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ConnectorError::Fatal(format!("cannot create {}: {e}", data_dir.display())))?;
    Client::builder()
        .homeserver_url(&cfg.homeserver)
        .sqlite_store(
            store_dir(data_dir),
            cfg.store_passphrase.as_ref().map(|s| s.expose()),
        )
        .handle_refresh_tokens()
        .build()
        .await
        .map_err(|e| ConnectorError::Fatal(format!("matrix client: {e}")))
}

/// The session saved in `data_dir`, if any.
pub(crate) fn saved_session(data_dir: &std::path::Path) -> Option<MatrixSession> {
    std::fs::read(session_file(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Saves the client's session in `data_dir` (owner-readable only).
pub(crate) fn save_session(
    client: &Client,
    data_dir: &std::path::Path,
) -> Result<(), ConnectorError> {
    if let Some(session) = client.matrix_auth().session() {
        let bytes = serde_json::to_vec(&session)
            .map_err(|e| ConnectorError::Fatal(format!("session: {e}")))?;
        write_private(&session_file(data_dir), &bytes).map_err(|e| {
            ConnectorError::Fatal(format!(
                "cannot save the session in {}: {e}",
                data_dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Restores a saved session on a client and checks that its token still works. `Ok(None)` when
/// the homeserver logged it out (the caller logs in again).
pub(crate) async fn restore_saved(
    cfg: &Settings,
    data_dir: &std::path::Path,
    session: MatrixSession,
) -> Result<Option<Client>, ConnectorError> {
    let client = build_client(cfg, data_dir).await?;
    client
        .matrix_auth()
        .restore_session(session, RoomLoadSettings::default())
        .await
        .map_err(|e| ConnectorError::Fatal(format!("restore session: {e}")))?;
    match client.whoami().await {
        Ok(_) => Ok(Some(client)),
        Err(e) => match errors::http_meaning(&e) {
            Meaning::BadToken => {
                warn!("the saved session was logged out; logging in again");
                Ok(None)
            }
            m => Err(errors::connector_error(m, "whoami")),
        },
    }
}

/// Forgets the local store (a new device starts with an empty one).
pub(crate) fn reset_store(data_dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(store_dir(data_dir));
}

pub(crate) fn parse_user(id: &str) -> Result<OwnedUserId, ConnectorError> {
    OwnedUserId::try_from(id).map_err(|_| ConnectorError::Fatal("bad user id from whoami".into()))
}

/// `GET /account/whoami` with a bare token: the token's user and device.
pub(crate) async fn whoami(
    homeserver: &str,
    token: &str,
) -> Result<(String, String), ConnectorError> {
    let resp = reqwest::Client::new()
        .get(format!("{homeserver}/_matrix/client/v3/account/whoami"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|_| ConnectorError::Disconnected("whoami: homeserver unreachable".into()))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200 => {}
        401 => return Err(ConnectorError::AuthRejected("access_token refused".into())),
        s if s >= 500 => return Err(ConnectorError::Disconnected(format!("whoami: status {s}"))),
        s => return Err(ConnectorError::Fatal(format!("whoami: status {s}"))),
    }
    let user = body["user_id"].as_str().unwrap_or_default().to_owned();
    let device = body["device_id"].as_str().unwrap_or_default().to_owned();
    if user.is_empty() || device.is_empty() {
        return Err(ConnectorError::Config(
            "access_token has no device (log in with a password instead, or use a token from a \
             device login)"
                .into(),
        ));
    }
    Ok((user, device))
}
