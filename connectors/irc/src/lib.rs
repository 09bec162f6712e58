//! wip
pub struct IrcFactory;
