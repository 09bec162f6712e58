//! Slack and Mattermost name their reactions (`thumbsup`, `+1`); the bus carries the emoji itself.
//! The common ones are translated both ways; any other comes in as `:name:`, and goes out by its
//! name when it is written so.

/// The usual reactions' names (Slack's and Mattermost's are the same for these) and their emoji (the first name of an emoji is the one
/// sent).
const TABLE: &[(&str, &str)] = &[
    ("+1", "👍"),
    ("thumbsup", "👍"),
    ("-1", "👎"),
    ("thumbsdown", "👎"),
    ("heart", "❤️"),
    ("joy", "😂"),
    ("smile", "😄"),
    ("slightly_smiling_face", "🙂"),
    ("grinning", "😀"),
    ("laughing", "😆"),
    ("wink", "😉"),
    ("blush", "😊"),
    ("heart_eyes", "😍"),
    ("thinking_face", "🤔"),
    ("cry", "😢"),
    ("sob", "😭"),
    ("open_mouth", "😮"),
    ("scream", "😱"),
    ("angry", "😠"),
    ("rage", "😡"),
    ("pray", "🙏"),
    ("clap", "👏"),
    ("raised_hands", "🙌"),
    ("wave", "👋"),
    ("ok_hand", "👌"),
    ("eyes", "👀"),
    ("fire", "🔥"),
    ("tada", "🎉"),
    ("rocket", "🚀"),
    ("100", "💯"),
    ("white_check_mark", "✅"),
    ("heavy_check_mark", "✔️"),
    ("x", "❌"),
    ("warning", "⚠️"),
    ("star", "⭐"),
    ("sparkles", "✨"),
    ("bulb", "💡"),
    ("coffee", "☕"),
    ("beer", "🍺"),
    ("muscle", "💪"),
    ("sunglasses", "😎"),
    ("upside_down_face", "🙃"),
    ("facepalm", "🤦"),
    ("shrug", "🤷"),
    ("heavy_plus_sign", "➕"),
    ("question", "❓"),
    ("exclamation", "❗"),
];

/// The emoji for a reaction name (a skin tone suffix `::skin-tone-N` dropped), else
/// `:name:`.
pub fn from_name(name: &str) -> String {
    let base = name.split("::").next().unwrap_or(name);
    TABLE
        .iter()
        .find(|(n, _)| *n == base)
        .map(|(_, e)| (*e).to_owned())
        .unwrap_or_else(|| format!(":{}:", base.chars().take(100).collect::<String>()))
}

/// The name for a reaction key: an emoji of the table, or `:name:` as written.
pub fn to_name(key: &str) -> Option<String> {
    let trimmed = key.trim_end_matches('\u{fe0f}');
    if let Some((n, _)) = TABLE
        .iter()
        .find(|(_, e)| *e == key || e.trim_end_matches('\u{fe0f}') == trimmed)
    {
        return Some((*n).to_owned());
    }
    let name = key.strip_prefix(':')?.strip_suffix(':')?;
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-+'".contains(&b));
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_emoji_both_ways() {
        assert_eq!(from_name("thumbsup"), "👍");
        assert_eq!(from_name("+1::skin-tone-3"), "👍");
        assert_eq!(from_name("partyparrot"), ":partyparrot:");
        assert_eq!(to_name("👍").as_deref(), Some("+1"));
        assert_eq!(to_name("❤").as_deref(), Some("heart"));
        assert_eq!(to_name(":partyparrot:").as_deref(), Some("partyparrot"));
        assert_eq!(to_name("🦀"), None);
        assert_eq!(to_name(":no spaces:"), None);
    }
}
