//! The event model's safe HTML subset (`b i u s code pre a blockquote br p ul ol li`): rich text
//! from a network (Matrix's `formatted_body`) is sanitized into it, for every connector that
//! reads or writes HTML. Everything else is dropped, keeping its text; links only to http(s)
//! and mailto; Matrix reply fallbacks (`<mx-reply>`) are removed whole.

/// Tags kept, with the name they are written as.
fn keep(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "b" | "strong" => "b",
        "i" | "em" => "i",
        "u" => "u",
        "s" | "del" | "strike" => "s",
        "code" => "code",
        "pre" => "pre",
        "a" => "a",
        "blockquote" => "blockquote",
        "br" => "br",
        "p" => "p",
        "ul" => "ul",
        "ol" => "ol",
        "li" => "li",
        _ => return None,
    })
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    crate::content::escape_html(text)
}

/// Reads an attribute's value from a tag's inside (`a href="..." title=x`).
fn attribute(inside: &str, name: &str) -> Option<String> {
    let lower = inside.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(name) {
        let at = from + pos;
        from = at + name.len();
        let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = inside[at + name.len()..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let rest = rest[1..].trim_start();
        let value = if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next()
        } else if let Some(q) = rest.strip_prefix('\'') {
            q.split('\'').next()
        } else {
            rest.split(|c: char| c.is_ascii_whitespace() || c == '>')
                .next()
        };
        return value.map(unescape);
    }
    None
}

/// Decodes the few entities HTML bodies use.
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let Some(end) = end else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn safe_href(href: &str) -> bool {
    let l = href.trim().to_ascii_lowercase();
    l.starts_with("https://") || l.starts_with("http://") || l.starts_with("mailto:")
}

/// Reduces `html` to the safe subset. Unknown tags are dropped with their text kept; `<mx-reply>`,
/// `<script>` and `<style>` are dropped with their content; every attribute but a safe `href` goes.
pub fn sanitize(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut open: Vec<&'static str> = Vec::new();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                out.push_str(&escape(&unescape(rest)));
            }
            break;
        };
        if skip_until.is_none() {
            out.push_str(&escape(&unescape(&rest[..lt])));
        }
        rest = &rest[lt..];
        let starts_tag = rest[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if !starts_tag {
            if skip_until.is_none() {
                out.push_str("&lt;");
            }
            rest = &rest[1..];
            continue;
        }
        let Some(gt) = rest.find('>') else {
            // A lone '<' is text.
            if skip_until.is_none() {
                out.push_str(&escape(rest));
            }
            break;
        };
        let inside = &rest[1..gt];
        rest = &rest[gt + 1..];
        if inside.starts_with('!') || inside.starts_with('?') {
            continue; // comments, doctypes
        }
        let closing = inside.starts_with('/');
        let body = inside.trim_start_matches('/').trim_end_matches('/');
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if let Some(until) = skip_until {
            if closing && name == until {
                skip_until = None;
            }
            continue;
        }
        match name.as_str() {
            "mx-reply" if !closing => {
                skip_until = Some("mx-reply");
                continue;
            }
            "script" if !closing => {
                skip_until = Some("script");
                continue;
            }
            "style" if !closing => {
                skip_until = Some("style");
                continue;
            }
            _ => {}
        }
        let Some(tag) = keep(&name) else { continue };
        if tag == "br" {
            if !closing {
                out.push_str("<br>");
            }
            continue;
        }
        if closing {
            if let Some(pos) = open.iter().rposition(|t| *t == tag) {
                for t in open.drain(pos..).rev() {
                    out.push_str(&format!("</{t}>"));
                }
            }
            continue;
        }
        if tag == "a" {
            match attribute(body, "href").filter(|h| safe_href(h)) {
                Some(href) => out.push_str(&format!("<a href=\"{}\">", escape(&href))),
                None => out.push_str("<a>"),
            }
        } else {
            out.push_str(&format!("<{tag}>"));
        }
        open.push(tag);
    }
    for t in open.into_iter().rev() {
        out.push_str(&format!("</{t}>"));
    }
    out
}

/// Whether sanitized HTML says more than its plain text would (any tag left).
pub fn has_markup(html: &str) -> bool {
    html.contains('<')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_subset_and_drops_the_rest() {
        assert_eq!(
            sanitize("<strong>bold</strong> <em>it</em> <font color=red>red</font>"),
            "<b>bold</b> <i>it</i> red"
        );
        assert_eq!(
            sanitize("<a href=\"https://example.org/?a=1&amp;b=2\" onclick=\"x()\">l</a>"),
            "<a href=\"https://example.org/?a=1&amp;b=2\">l</a>"
        );
        assert_eq!(sanitize("<a href='javascript:alert(1)'>x</a>"), "<a>x</a>");
        assert_eq!(sanitize("<script>alert(1)</script>ok"), "ok");
        assert_eq!(
            sanitize("<mx-reply><blockquote>quoted <b>x</b></blockquote></mx-reply>answer"),
            "answer"
        );
        assert_eq!(sanitize("a <b>unclosed"), "a <b>unclosed</b>");
        assert_eq!(sanitize("1 < 2 &amp; 3 > 2"), "1 &lt; 2 &amp; 3 &gt; 2");
        assert_eq!(sanitize("line<br/>next"), "line<br>next");
        assert_eq!(sanitize("<img src=x onerror=y>"), "");
    }

    #[test]
    fn entities_decode() {
        assert_eq!(unescape("&lt;&#39;&#x1F980;&amp;x&bogus;"), "<'🦀&x&bogus;");
    }
}
