//! What the API connector takes over from matterbridge's `[api.NAME]` tables: the same
//! endpoints, so scripts written for matterbridge's API keep working.

use passerelle_sdk::import::{Channel, ImportedAccount, ImportedRoom, MatterbridgeImport, text};
use serde_json::{Map, Value};

/// matterbridge's `api` protocol.
pub struct Import;

impl MatterbridgeImport for Import {
    fn protocols(&self) -> &'static [&'static str] {
        &["api"]
    }

    fn account(&self, name: &str, t: &Map<String, Value>) -> ImportedAccount {
        let mut a = ImportedAccount::default();
        a.read(&["bindaddress", "token", "buffer"]);
        a.set("listen", text(t, "bindaddress").unwrap_or("127.0.0.1:4242"));
        match text(t, "token") {
            Some(token) if token.len() >= 16 => a.secret("token", token),
            Some(token) => match fresh_token() {
                Some(new) => {
                    a.secret("token", &new);
                    a.note(format!("[api.{name}]'s Token was {} characters; passerelle takes at least 16, so a new random one was written to its token file: give it to your scripts (Authorization: Bearer …)", token.len()));
                }
                None => {
                    a.secret("token", token);
                    a.note(format!("[api.{name}]'s Token is shorter than the 16 characters passerelle takes: write a longer one to its token file"));
                }
            },
            None => {
                a.disabled = true;
                a.note(format!("[api.{name}] had no Token (anyone could post); passerelle needs one: set token_file and enable the account"));
            }
        }
        if let Some(n) = t.get("buffer").and_then(Value::as_u64).filter(|n| *n > 0) {
            a.set("buffer", n);
        }
        a.set("rights", Value::from(vec!["read", "write", "delete"]));
        a
    }

    /// An API account's room is the gateway's name: scripts post `"gateway": "<name>"`.
    fn channel(&self, c: &Channel<'_>) -> Result<ImportedRoom, String> {
        Ok(ImportedRoom {
            room: c.gateway.to_owned(),
            ..ImportedRoom::default()
        })
    }
}

/// 32 random hex characters from the system's generator.
fn fresh_token() -> Option<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .ok()?
        .read_exact(&mut bytes)
        .ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
