//! Ghost users' ids: `@<prefix>_<account>_<user>:<server>`, in the appservice's exclusive
//! namespace. Matrix localparts allow only `a-z 0-9 . = - / +` (and `_`, which we keep as the
//! separator), so every other byte is written `=xx` (lowercase hex), and the mapping is
//! one-to-one: two remote people never share a ghost.

/// Escapes one part of a localpart.
pub fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b".-/+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    out
}

/// The ghost localpart for `user` of `account`.
pub fn localpart(prefix: &str, account: &str, user: &str) -> String {
    format!("{prefix}_{}_{}", escape(account), escape(user))
}

/// The localpart of a full user id `@local:server` on `server`, if it is on that server.
pub fn local_of<'a>(user_id: &'a str, server: &str) -> Option<&'a str> {
    let rest = user_id.strip_prefix('@')?;
    let (local, srv) = rest.split_once(':')?;
    (srv == server).then_some(local)
}

/// Undoes [`escape`]; `None` when `part` is not one of its outputs.
pub fn unescape(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                let hex = part.get(i + 1..i + 3)?;
                if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_lowercase() || b.is_ascii_digit() || b".-/+".contains(&b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The (account, room) of a portal alias `#<prefix>_<account>_<room>:<server>`.
pub fn parse_alias(alias: &str, prefix: &str, server: &str) -> Option<(String, String)> {
    let rest = alias.strip_prefix('#')?;
    let (local, srv) = rest.split_once(':')?;
    if srv != server {
        return None;
    }
    let parts = local.strip_prefix(prefix)?.strip_prefix('_')?;
    let (account, room) = parts.split_once('_')?;
    Some((unescape(account)?, unescape(room)?))
}

/// The portal alias localpart for `room` of `account`.
pub fn alias_localpart(prefix: &str, account: &str, room: &str) -> String {
    localpart(prefix, account, room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ghost_localparts_are_valid_and_distinct() {
        assert_eq!(localpart("pss", "irc", "bob"), "pss_irc_bob");
        assert_eq!(
            localpart("pss", "irc.main", "Bob[m]"),
            "pss_irc.main_=42ob=5bm=5d"
        );
        assert_eq!(localpart("pss", "a_b", "c"), "pss_a=5fb_c");
        assert_ne!(localpart("pss", "a_b", "c"), localpart("pss", "a", "b_c"));
        assert_ne!(escape("Bob"), escape("bob"));
        assert_eq!(escape("é"), "=c3=a9");
        let l = localpart("pss", "irc", "weird nick!~@:");
        assert!(
            l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
        );
        assert_eq!(
            local_of("@pss_irc_bob:example.org", "example.org"),
            Some("pss_irc_bob")
        );
        assert_eq!(local_of("@x:other", "example.org"), None);
        for s in ["#chan", "Bob[m]", "a_b", "é ü"] {
            assert_eq!(unescape(&escape(s)).as_deref(), Some(s));
        }
        assert_eq!(unescape("A"), None);
        assert_eq!(unescape("=2"), None);
        let local = alias_localpart("pss", "irc.main", "#Chan");
        assert_eq!(
            parse_alias(&format!("#{local}:example.org"), "pss", "example.org"),
            Some(("irc.main".into(), "#Chan".into()))
        );
        assert_eq!(
            parse_alias(&format!("#{local}:other"), "pss", "example.org"),
            None
        );
        assert_eq!(
            parse_alias("#pss_irc:example.org", "pss", "example.org"),
            None
        );
    }
}
