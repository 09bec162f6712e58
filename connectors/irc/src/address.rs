//! IRC has no message ids and no replies. People answer a bridged message by addressing its
//! sender: `alice: sure`. The connector gives every message it sends an id of its own
//! (`irc-out.<event key>`) and remembers, per channel, the last one sent for each remote name; a
//! line addressed to that name becomes a reply to that message (the address is removed, as the
//! reply names the person). The memory is kept in the connector state (saved at most a second
//! after it changes, and when the session ends), so replies after a restart still find their
//! message.

use passerelle_sdk::{RemoteMessageId, StateHandle};
use std::collections::{HashMap, HashSet};

/// How many names a channel remembers (the least recent is forgotten first).
const PER_CHANNEL: usize = 64;

/// Remembered names per channel.
#[derive(Debug, Default)]
pub struct Addressing {
    /// Channel (lowercase) → (name lowercase, message id), least recent first.
    recent: HashMap<String, Vec<(String, String)>>,
    /// Channels changed since the last save.
    dirty: HashSet<String>,
}

fn state_key(channel: &str) -> String {
    passerelle_sdk::state::key(&["addressed", channel])
}

impl Addressing {
    /// Loads what the state remembers for these channels (lowercase names).
    pub async fn load<'a>(state: &StateHandle, channels: impl Iterator<Item = &'a String>) -> Self {
        let mut me = Self::default();
        for channel in channels {
            if let Ok(Some(bytes)) = state.get(&state_key(channel)).await
                && let Ok(list) = serde_json::from_slice::<Vec<(String, String)>>(&bytes)
            {
                me.recent.insert(channel.clone(), list);
            }
        }
        me
    }

    /// Records that `id` was the last message sent for `name` in `channel` (saved by the next
    /// [`Addressing::save`]).
    pub fn record(&mut self, channel: &str, name: &str, id: &str) {
        let name = name.to_lowercase();
        if name.is_empty() {
            return;
        }
        let list = self.recent.entry(channel.to_owned()).or_default();
        list.retain(|(n, _)| *n != name);
        list.push((name, id.to_owned()));
        if list.len() > PER_CHANNEL {
            let extra = list.len() - PER_CHANNEL;
            list.drain(..extra);
        }
        if !self.dirty.contains(channel) {
            self.dirty.insert(channel.to_owned());
        }
    }

    /// Whether something changed since the last save.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Saves the channels changed since the last save. A channel that fails stays to be saved.
    pub async fn save(&mut self, state: &StateHandle) {
        for channel in std::mem::take(&mut self.dirty) {
            let Some(list) = self.recent.get(&channel) else {
                continue;
            };
            let saved = match serde_json::to_vec(list) {
                Ok(bytes) => state.put(&state_key(&channel), bytes).await,
                Err(_) => continue,
            };
            if let Err(e) = saved {
                tracing::warn!(error = %e, "could not save the reply memory; trying again");
                self.dirty.insert(channel);
            }
        }
    }

    /// If `text` addresses a remembered name (`name: …` or `name, …`), the message it answers and
    /// the text without the address.
    pub fn resolve<'t>(&self, channel: &str, text: &'t str) -> Option<(RemoteMessageId, &'t str)> {
        let list = self.recent.get(channel)?;
        // Longest name first, so `bob smith:` wins over `bob`.
        let mut best: Option<(usize, &str)> = None;
        for (name, id) in list {
            let chars = name.chars().count();
            let Some((end, sep)) = text.char_indices().nth(chars) else {
                continue;
            };
            if matches!(sep, ':' | ',')
                && text[..end].to_lowercase() == *name
                && best.is_none_or(|(len, _)| end > len)
            {
                best = Some((end, id));
            }
        }
        let (len, id) = best?;
        let rest = text[len + 1..].trim_start();
        (!rest.is_empty()).then(|| (RemoteMessageId::new(id), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressed_lines_find_the_last_message_of_that_name() {
        let mut a = Addressing::default();
        a.recent.insert(
            "#a".into(),
            vec![
                ("bob".into(), "irc-out.1".into()),
                ("bob smith".into(), "irc-out.2".into()),
                ("Ünïcode".to_lowercase(), "irc-out.3".into()),
            ],
        );
        let (id, rest) = a.resolve("#a", "Bob: sure thing").unwrap();
        assert_eq!((id.as_str(), rest), ("irc-out.1", "sure thing"));
        let (id, rest) = a.resolve("#a", "bob smith, later").unwrap();
        assert_eq!((id.as_str(), rest), ("irc-out.2", "later"));
        assert_eq!(
            a.resolve("#a", "ünïcode: ok").unwrap().0.as_str(),
            "irc-out.3"
        );
        assert!(a.resolve("#a", "bobby: no").is_none());
        assert!(
            a.resolve("#a", "bob:").is_none(),
            "an address alone is no reply"
        );
        assert!(a.resolve("#a", "hello bob: no").is_none());
        assert!(a.resolve("#b", "bob: other channel").is_none());
    }
}
