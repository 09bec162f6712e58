//! The three Meta networks and what differs between them.

/// Which Meta network an account speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// WhatsApp Business Cloud API.
    WhatsApp,
    /// Messenger Platform (a Facebook Page's inbox).
    Messenger,
    /// Instagram Messaging (an Instagram professional account's inbox).
    Instagram,
}

impl Kind {
    /// The config `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp",
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
        }
    }

    /// The webhook body's `object`.
    pub fn object(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp_business_account",
            Self::Messenger => "page",
            Self::Instagram => "instagram",
        }
    }

    /// The Graph API base used when `api_base` is not set.
    pub fn default_api_base(self) -> &'static str {
        match self {
            Self::WhatsApp | Self::Messenger => "https://graph.facebook.com/v23.0",
            Self::Instagram => "https://graph.instagram.com/v23.0",
        }
    }

    /// The longest text one message may carry: (characters, bytes). WhatsApp: 4,096 characters;
    /// Messenger: 2,000 characters; Instagram: 1,000 bytes of UTF-8.
    pub fn max_text(self) -> (usize, usize) {
        match self {
            Self::WhatsApp => (4096, usize::MAX),
            Self::Messenger => (2000, usize::MAX),
            Self::Instagram => (usize::MAX, 1000),
        }
    }
}
