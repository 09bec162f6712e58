//! IRC formatting codes (mIRC style) and CTCP framing.
//!
//! Inbound text has its formatting codes removed for the plain body; bold, italic, underline,
//! strike-through and monospace become the HTML subset of the event model, colours are dropped.

/// Bold.
const BOLD: char = '\x02';
/// Colour, followed by up to two digits, optionally `,` and up to two more.
const COLOR: char = '\x03';
/// Hex colour, followed by six hex digits, optionally `,` and six more.
const HEX_COLOR: char = '\x04';
/// Reset everything.
const RESET: char = '\x0f';
/// Monospace.
const MONO: char = '\x11';
/// Reverse video.
const REVERSE: char = '\x16';
/// Italic.
const ITALIC: char = '\x1d';
/// Strike-through.
const STRIKE: char = '\x1e';
/// Underline.
const UNDERLINE: char = '\x1f';

/// The styles that map to HTML, in nesting order.
const STYLES: [(char, &str); 5] = [
    (BOLD, "b"),
    (ITALIC, "i"),
    (UNDERLINE, "u"),
    (STRIKE, "s"),
    (MONO, "code"),
];

/// Plain text, and HTML when the text had any style that HTML carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Codes removed.
    pub plain: String,
    /// The HTML form, when styled.
    pub html: Option<String>,
}

fn escape(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
    }
}

/// Skips a colour code's arguments: up to `width` digits, then optionally `,` and up to `width`
/// more (the `,` only when a digit follows it, as clients do).
fn skip_colour(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    width: usize,
    digit: fn(&char) -> bool,
) {
    let take_digits = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        for _ in 0..width {
            if chars.next_if(digit).is_none() {
                break;
            }
        }
    };
    take_digits(chars);
    let mut look = chars.clone();
    if look.next() == Some(',') && look.peek().is_some_and(digit) {
        chars.next();
        take_digits(chars);
    }
}

/// Converts IRC-formatted text.
pub fn convert(text: &str) -> Converted {
    let mut plain = String::with_capacity(text.len());
    let mut html = String::with_capacity(text.len() + 16);
    let mut active = [false; 5];
    let mut styled = false;
    let mut chars = text.chars().peekable();
    let close_all = |html: &mut String, active: &[bool; 5]| {
        for (i, (_, tag)) in STYLES.iter().enumerate().rev() {
            if active[i] {
                html.push_str("</");
                html.push_str(tag);
                html.push('>');
            }
        }
    };
    let open_all = |html: &mut String, active: &[bool; 5]| {
        for (i, (_, tag)) in STYLES.iter().enumerate() {
            if active[i] {
                html.push('<');
                html.push_str(tag);
                html.push('>');
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            COLOR => skip_colour(&mut chars, 2, |d| d.is_ascii_digit()),
            HEX_COLOR => skip_colour(&mut chars, 6, |d| d.is_ascii_hexdigit()),
            REVERSE => {}
            RESET => {
                close_all(&mut html, &active);
                active = [false; 5];
            }
            c if STYLES.iter().any(|(code, _)| *code == c) => {
                close_all(&mut html, &active);
                if let Some(i) = STYLES.iter().position(|(code, _)| *code == c) {
                    active[i] = !active[i];
                    styled = true;
                }
                open_all(&mut html, &active);
            }
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => {
                plain.push(c);
                escape(c, &mut html);
            }
        }
    }
    close_all(&mut html, &active);
    let html = styled.then(|| html.replace("<b></b>", "").replace("<i></i>", ""));
    Converted { plain, html }
}

/// A CTCP request inside a PRIVMSG: `\x01COMMAND args\x01`.
pub fn ctcp(text: &str) -> Option<(&str, &str)> {
    let inner = text.strip_prefix('\x01')?;
    let inner = inner.strip_suffix('\x01').unwrap_or(inner);
    Some(match inner.split_once(' ') {
        Some((cmd, args)) => (cmd, args),
        None => (inner, ""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_become_plain_text_and_html() {
        let c = convert("plain \x02bold\x02 \x0304,12red\x03 \x1ditalic \x02both\x0f done");
        assert_eq!(c.plain, "plain bold red italic both done");
        assert_eq!(
            c.html.as_deref(),
            Some("plain <b>bold</b> red <i>italic </i><b><i>both</i></b> done")
        );
        let c = convert("no styles <here>");
        assert_eq!(c.plain, "no styles <here>");
        assert_eq!(c.html, None);
        let c = convert("\x04FF00AAhex\x03 and \x0399 2 digits");
        assert_eq!(c.plain, "hex and  2 digits");
        assert_eq!(
            convert("\x1funclosed <").html.as_deref(),
            Some("<u>unclosed &lt;</u>")
        );
    }

    #[test]
    fn ctcp_is_recognised() {
        assert_eq!(ctcp("\x01ACTION waves\x01"), Some(("ACTION", "waves")));
        assert_eq!(ctcp("\x01VERSION\x01"), Some(("VERSION", "")));
        assert_eq!(
            ctcp("\x01ACTION unterminated"),
            Some(("ACTION", "unterminated"))
        );
        assert_eq!(ctcp("hello"), None);
    }
}
