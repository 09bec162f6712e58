//! People's names on Messenger and Instagram, whose webhooks carry only ids: the User Profile
//! APIs (`GET /{PSID}?fields=first_name,last_name,profile_pic` with the Page's token;
//! `GET /{IGSID}?fields=name,username,profile_pic` on Instagram), asked once per person and kept
//! in memory. WhatsApp's webhooks name their senders themselves. A failed look-up leaves the
//! sender named by id (and is asked again next time).

use crate::graph::Graph;
use crate::kind::Kind;
use passerelle_sdk::Sender;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;

/// How many people are remembered; past it the memory is emptied and fills again.
const REMEMBERED: usize = 10_000;

/// A person's display name and avatar URL, as far as known.
pub type Profile = (Option<String>, Option<String>);

/// Names and avatars, by person id.
#[derive(Default)]
pub struct Profiles {
    known: Mutex<HashMap<String, Profile>>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The display name and avatar in a profile answer.
pub fn read(kind: Kind, profile: &Value) -> Profile {
    let name = match kind {
        Kind::Instagram => text(profile, "name").or_else(|| text(profile, "username")),
        _ => {
            let full = [text(profile, "first_name"), text(profile, "last_name")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (!full.is_empty()).then_some(full)
        }
    };
    (name, text(profile, "profile_pic"))
}

impl Profiles {
    /// Fills in `sender`'s name and avatar, asking the API the first time.
    pub async fn name(&self, kind: Kind, graph: &Graph, sender: &mut Sender) {
        if kind == Kind::WhatsApp || sender.display_name.is_some() {
            return;
        }
        let id = sender.id.as_str().to_owned();
        let cached = self.known.lock().ok().and_then(|k| k.get(&id).cloned());
        let (name, avatar) = match cached {
            Some(found) => found,
            None => {
                let fields = match kind {
                    Kind::Instagram => "name,username,profile_pic",
                    _ => "first_name,last_name,profile_pic",
                };
                match graph.get(&format!("{id}?fields={fields}")).await {
                    Ok(profile) => {
                        let found = read(kind, &profile);
                        if let Ok(mut known) = self.known.lock() {
                            if known.len() >= REMEMBERED {
                                known.clear();
                            }
                            known.insert(id, found.clone());
                        }
                        found
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "profile look-up failed; the sender is named by id");
                        (None, None)
                    }
                }
            }
        };
        sender.display_name = name;
        sender.avatar_url = avatar;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_read_as_each_api_gives_them() {
        let m = json!({"first_name": "Peter", "last_name": "Chang", "profile_pic": "https://x/p.jpg", "id": "1"});
        assert_eq!(
            read(Kind::Messenger, &m),
            (Some("Peter Chang".into()), Some("https://x/p.jpg".into()))
        );
        let i = json!({"username": "peter.chang", "id": "2"});
        assert_eq!(
            read(Kind::Instagram, &i),
            (Some("peter.chang".into()), None)
        );
        assert_eq!(read(Kind::Messenger, &json!({"id": "3"})), (None, None));
    }
}
