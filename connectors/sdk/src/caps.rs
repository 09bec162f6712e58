//! What a connector's network can carry. The core adapts every event to these (see the daemon's
//! degrade rules) and never asks a connector for something it declared it can't do.

use serde::{Deserialize, Serialize};

/// Optional features of a network. Everything off is a valid, plain-text-only network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Messages can be edited after sending.
    pub edits: bool,
    /// Messages can be deleted (redacted).
    pub deletes: bool,
    /// Reactions can be added to messages.
    pub reactions: bool,
    /// A message can be sent as an answer to another.
    pub replies: bool,
    /// Messages can belong to threads.
    pub threads: bool,
    /// Files can be sent.
    pub attachments: bool,
    /// Rich text (the HTML subset or Markdown) can be sent.
    pub rich_text: bool,
    /// Each message can carry its own sender name and avatar (webhooks, API fields), so the core
    /// need not prefix the text with the sender's name.
    pub per_message_identity: bool,
    /// Remote people can appear as real users of this network (ghosts, puppets).
    pub puppets: bool,
    /// Typing notifications can be shown.
    pub typing: bool,
    /// Joins and leaves can be shown.
    pub membership: bool,
    /// Room topics can be set.
    pub topic: bool,
}

/// Size limits of a network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The most bytes one message can carry, when the network splits or refuses beyond it. A
    /// connector that splits long messages itself leaves this `None`.
    pub max_text_bytes: Option<usize>,
    /// The largest file that can be sent, in bytes.
    pub max_upload_bytes: Option<u64>,
    /// Set where each line of a message is shown as a message of its own (IRC): the core then
    /// puts the sender's name before every line (so no line can pass for someone else's) and
    /// sends at most this many lines of one message, followed by a line saying how many more
    /// there were (with a link to the whole text where the operator enabled paste links).
    pub max_lines: Option<usize>,
    /// With `max_lines`: how many bytes a line shows before the network wraps it onto another
    /// line; a longer line counts as the lines it becomes.
    pub line_bytes: Option<usize>,
}
