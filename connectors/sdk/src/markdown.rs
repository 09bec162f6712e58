//! The event model's HTML subset ([`crate::html`]) to and from the Markdown that chat networks
//! write (Mattermost's CommonMark, Discord's variant), for connectors whose network speaks
//! Markdown rather than HTML.
//!
//! - [`from_html`]: bold `**`, italic `*`, strike `~~`, code spans and fenced blocks, links
//!   `[text](url)`, quotes `> `, lists `- ` and `1. `, paragraphs and line breaks. Text that would
//!   read as Markdown is escaped with `\`, so a literal `*` stays a `*`.
//! - [`to_html`]: the same constructs back, plus `__` and `_`, autolinks `<https://…>` and
//!   backslash escapes. What is not Markdown stays text (HTML tags in the source are escaped, never
//!   passed through); links only to http(s) and mailto. Nesting is bounded ([`MAX_DEPTH`]) and
//!   every scan is linear in the input per nesting level, so hostile input costs little.
//!
//! The one difference between the flavors: Discord reads `__text__` as underline, CommonMark as
//! bold; underline has no CommonMark form, so it is dropped (its text kept) there.
//!
//! Slack's mrkdwn ([`Flavor::Slack`]) is a cousin rather than a flavor: `*bold*`, `_italic_`,
//! `~strike~`, code as in Markdown, links `<https://…|label>`, quotes `> `, no lists and no
//! backslash escapes. Its only escaping is `&amp;`, `&lt;` and `&gt;`, which is what keeps a
//! bridged `<!channel>` from pinging anyone; a literal `*` cannot be escaped, so it stays as written.

use crate::html::{escape, sanitize, unescape};

/// Which Markdown a network writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// CommonMark (Mattermost and most others): `__x__` is bold.
    CommonMark,
    /// Discord's: `__x__` is underline.
    Discord,
    /// Slack's mrkdwn: `*x*` bold, `_x_` italic, `~x~` strike, `<url|label>` links, entities.
    Slack,
}

/// How deeply quotes and inline spans may nest before the rest is read as plain text.
pub const MAX_DEPTH: usize = 16;

// ----- HTML subset to Markdown ---------------------------------------------------------------

/// One piece of sanitized HTML.
enum Token<'a> {
    Text(String),
    Open(&'a str, Option<String>),
    Close(&'a str),
}

/// Splits sanitized HTML (only the subset's tags, text escaped) into tokens.
fn tokens(html: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            out.push(Token::Text(unescape(rest)));
            break;
        };
        if lt > 0 {
            out.push(Token::Text(unescape(&rest[..lt])));
        }
        let Some(gt) = rest[lt..].find('>') else {
            out.push(Token::Text(unescape(&rest[lt..])));
            break;
        };
        let inside = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if let Some(name) = inside.strip_prefix('/') {
            out.push(Token::Close(name));
        } else if let Some(href) = inside.strip_prefix("a href=\"") {
            out.push(Token::Open("a", Some(unescape(href.trim_end_matches('"')))));
        } else {
            out.push(Token::Open(inside, None));
        }
    }
    out
}

/// Slack's three entities (`&`, `<`, `>`), the only escaping mrkdwn has.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes what Markdown would read as formatting in plain text.
fn escape_text(text: &str, line_start: bool, flavor: Flavor) -> String {
    if flavor == Flavor::Slack {
        return slack_escape(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at_start = line_start;
    for c in text.chars() {
        let special = matches!(c, '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '|')
            || (at_start && matches!(c, '>' | '#' | '-' | '+'));
        if special {
            out.push('\\');
        }
        out.push(c);
        at_start = c == '\n' || (at_start && c == ' ');
    }
    out
}

/// The fence or backtick run that does not occur in `text`.
fn fence_for(text: &str, at_least: usize) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(at_least.max(longest + 1))
}

/// A list being written: ordered lists count their items.
struct List {
    ordered: bool,
    next: usize,
}

/// Writes Markdown, prefixing every new line with the open quotes' `> `.
struct Writer {
    out: String,
    quote: usize,
    lists: Vec<List>,
    flavor: Flavor,
}

impl Writer {
    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n') || self.out.ends_with("> ")
    }

    fn newline(&mut self) {
        // Trailing spaces of the line go: they would make a hard break in CommonMark.
        while self.out.ends_with(' ') && !self.out.ends_with("> ") {
            self.out.pop();
        }
        self.out.push('\n');
        for _ in 0..self.quote {
            self.out.push_str("> ");
        }
    }

    /// A new block (paragraph, list, quote, code block): a blank line after what came before.
    fn block(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if !self.at_line_start() {
            self.newline();
        }
        // The line before this one, without its quote markers: blank already, or not.
        let before = self.out.trim_end_matches(['>', ' ']);
        let previous = before.strip_suffix('\n').unwrap_or(before);
        let blank = previous.is_empty() || previous.trim_end_matches(['>', ' ']).ends_with('\n');
        if !blank {
            self.newline();
        }
    }

    fn text(&mut self, text: &str) {
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            let escaped = escape_text(line, self.at_line_start(), self.flavor);
            self.out.push_str(&escaped);
        }
    }

    fn raw(&mut self, text: &str) {
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            self.out.push_str(line);
        }
    }
}

/// The Markdown for `html` (any HTML: it is sanitized to the subset first).
pub fn from_html(html: &str, flavor: Flavor) -> String {
    let clean = sanitize(html);
    let tokens = tokens(&clean);
    let mut w = Writer {
        out: String::with_capacity(clean.len()),
        quote: 0,
        lists: Vec::new(),
        flavor,
    };
    // Code is verbatim, but Slack reads its entities there too.
    let code_text = |code: &str| match flavor {
        Flavor::Slack => slack_escape(code),
        _ => code.to_owned(),
    };
    // Where each open inline span's delimiter starts, to drop spans left empty.
    let mut spans: Vec<(&str, usize, &'static str)> = Vec::new();
    let mut links: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Text(t) => w.text(t),
            Token::Open("pre", _) => {
                // A code block: its text verbatim inside a fence longer than any run in it.
                let mut code = String::new();
                let mut j = i + 1;
                while j < tokens.len() && !matches!(tokens[j], Token::Close("pre")) {
                    if let Token::Text(t) = &tokens[j] {
                        code.push_str(t);
                    }
                    j += 1;
                }
                let fence = fence_for(&code, 3);
                w.block();
                w.raw(&fence);
                w.newline();
                w.raw(&code_text(code.trim_end_matches('\n')));
                w.newline();
                w.raw(&fence);
                i = j;
            }
            Token::Open("code", _) => {
                let mut code = String::new();
                let mut j = i + 1;
                while j < tokens.len() && !matches!(tokens[j], Token::Close("code")) {
                    if let Token::Text(t) = &tokens[j] {
                        code.push_str(t);
                    }
                    j += 1;
                }
                if !code.is_empty() {
                    let ticks = fence_for(&code, 1);
                    let pad = if code.starts_with('`') || code.ends_with('`') {
                        " "
                    } else {
                        ""
                    };
                    w.raw(&format!(
                        "{ticks}{pad}{}{pad}{ticks}",
                        code_text(&code.replace('\n', " "))
                    ));
                }
                i = j;
            }
            Token::Open(tag @ ("b" | "i" | "s" | "u"), _) => {
                let delimiter = match (*tag, flavor) {
                    ("b", Flavor::Slack) => "*",
                    ("i", Flavor::Slack) => "_",
                    ("s", Flavor::Slack) => "~",
                    ("b", _) => "**",
                    ("i", _) => "*",
                    ("s", _) => "~~",
                    ("u", Flavor::Discord) => "__",
                    _ => "",
                };
                spans.push((tag, w.out.len(), delimiter));
                w.out.push_str(delimiter);
            }
            Token::Close(tag @ ("b" | "i" | "s" | "u")) => {
                if let Some(pos) = spans.iter().rposition(|(t, _, _)| t == tag) {
                    let (_, start, delimiter) = spans.remove(pos);
                    if w.out.len() == start + delimiter.len() {
                        w.out.truncate(start);
                    } else {
                        w.out.push_str(delimiter);
                    }
                }
            }
            Token::Open("a", href) => {
                links.push(href.clone());
                match (href, flavor) {
                    (Some(href), Flavor::Slack) => {
                        w.out.push('<');
                        w.out
                            .push_str(&href.replace('|', "%7C").replace('>', "%3E"));
                        w.out.push('|');
                    }
                    (Some(_), _) => w.out.push('['),
                    (None, _) => {}
                }
            }
            Token::Close("a") => {
                if let Some(Some(href)) = links.pop() {
                    if flavor == Flavor::Slack {
                        w.out.push('>');
                        i += 1;
                        continue;
                    }
                    let target = href
                        .replace(' ', "%20")
                        .replace('(', "%28")
                        .replace(')', "%29");
                    w.out.push_str(&format!("]({target})"));
                }
            }
            Token::Open("br", _) => w.newline(),
            Token::Open("p", _) | Token::Close("p") => w.block(),
            Token::Open("blockquote", _) => {
                w.block();
                w.quote += 1;
                w.out.push_str("> ");
            }
            Token::Close("blockquote") => {
                w.quote = w.quote.saturating_sub(1);
                w.block();
            }
            Token::Open(kind @ ("ul" | "ol"), _) => {
                if w.lists.is_empty() {
                    w.block();
                }
                w.lists.push(List {
                    ordered: *kind == "ol",
                    next: 1,
                });
            }
            Token::Close("ul" | "ol") => {
                w.lists.pop();
                if w.lists.is_empty() {
                    w.newline();
                }
            }
            Token::Open("li", _) => {
                if !w.at_line_start() {
                    w.newline();
                }
                let indent = "  ".repeat(w.lists.len().saturating_sub(1));
                let marker = match w.lists.last_mut() {
                    Some(list) if list.ordered => {
                        list.next += 1;
                        format!("{}. ", list.next - 1)
                    }
                    _ => "- ".to_owned(),
                };
                w.out.push_str(&indent);
                w.out.push_str(&marker);
            }
            Token::Open(..) | Token::Close(_) => {}
        }
        i += 1;
    }
    // Trailing blank lines and lines left with only quote markers go (a `>` that ends a line
    // of text, as a Slack link's, stays).
    let mut out = w.out;
    loop {
        let trimmed = out.trim_end_matches(['\n', ' ']).len();
        out.truncate(trimmed);
        let last = out.rfind('\n').map_or(0, |i| i + 1);
        if last < out.len() && out[last..].chars().all(|c| c == '>' || c == ' ') {
            out.truncate(last);
        } else {
            break;
        }
    }
    out.trim_start_matches('\n').to_owned()
}

// ----- Markdown to the HTML subset -----------------------------------------------------------

/// The HTML subset for Markdown `text`.
pub fn to_html(text: &str, flavor: Flavor) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    blocks(&lines, flavor, 0, &mut out);
    sanitize(&out)
}

/// Whether a line opens or closes a fenced code block; the fence.
fn fence_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let c = t.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let run = t.chars().take_while(|&x| x == c).count();
    (run >= 3).then(|| &t[..run])
}

/// A list item's marker: whether ordered, and the text after it.
fn list_item(line: &str) -> Option<(bool, &str)> {
    let t = line.trim_start();
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = t.strip_prefix(marker) {
            return Some((false, rest));
        }
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let rest = &t[digits..];
        if let Some(rest) = rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
            return Some((true, rest));
        }
    }
    None
}

fn blocks(lines: &[&str], flavor: Flavor, depth: usize, out: &mut String) {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let flush = |current: &mut Vec<&str>, paragraphs: &mut Vec<String>| {
        if !current.is_empty() {
            let joined = current.join("\n");
            paragraphs.push(inline(&joined, flavor, depth).replace('\n', "<br>"));
            current.clear();
        }
    };
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            flush(&mut current, &mut paragraphs);
            i += 1;
            continue;
        }
        if let Some(fence) = fence_of(line) {
            flush(&mut current, &mut paragraphs);
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with(fence) {
                code.push(lines[i]);
                i += 1;
            }
            i += 1; // the closing fence (or the end)
            paragraphs.push(format!("<pre>{}</pre>", escape(&code.join("\n"))));
            continue;
        }
        // Slack sends a typed `>` as `&gt;`.
        let quote_marker = |line: &str| -> Option<usize> {
            let t = line.trim_start();
            if t.starts_with('>') {
                Some(line.len() - t.len() + 1)
            } else if flavor == Flavor::Slack && t.starts_with("&gt;") {
                Some(line.len() - t.len() + 4)
            } else {
                None
            }
        };
        if quote_marker(line).is_some() && depth < MAX_DEPTH {
            flush(&mut current, &mut paragraphs);
            let mut quoted = Vec::new();
            while let Some(skip) = lines.get(i).and_then(|l| quote_marker(l)) {
                let q = &lines[i][skip..];
                quoted.push(q.strip_prefix(' ').unwrap_or(q));
                i += 1;
            }
            let mut inner = String::new();
            blocks(&quoted, flavor, depth + 1, &mut inner);
            paragraphs.push(format!("<blockquote>{inner}</blockquote>"));
            continue;
        }
        if let Some((ordered, _)) = list_item(line).filter(|_| flavor != Flavor::Slack) {
            flush(&mut current, &mut paragraphs);
            let tag = if ordered { "ol" } else { "ul" };
            let mut list = format!("<{tag}>");
            while i < lines.len() {
                match list_item(lines[i]) {
                    Some((o, item)) if o == ordered => {
                        list.push_str(&format!("<li>{}</li>", inline(item, flavor, depth)));
                        i += 1;
                    }
                    _ => break,
                }
            }
            list.push_str(&format!("</{tag}>"));
            paragraphs.push(list);
            continue;
        }
        current.push(line);
        i += 1;
    }
    flush(&mut current, &mut paragraphs);
    let blocky = |p: &str| {
        p.starts_with("<pre>")
            || p.starts_with("<blockquote>")
            || p.starts_with("<ul>")
            || p.starts_with("<ol>")
    };
    if paragraphs.len() == 1 {
        out.push_str(&paragraphs[0]);
        return;
    }
    for p in paragraphs {
        if blocky(&p) {
            out.push_str(&p);
        } else {
            out.push_str(&format!("<p>{p}</p>"));
        }
    }
}

/// Delimiters of inline spans, longest first, with the tag each makes.
fn delimiters(flavor: Flavor) -> &'static [(&'static str, &'static str)] {
    match flavor {
        Flavor::Discord => &[
            ("**", "b"),
            ("__", "u"),
            ("~~", "s"),
            ("*", "i"),
            ("_", "i"),
        ],
        Flavor::CommonMark => &[
            ("**", "b"),
            ("__", "b"),
            ("~~", "s"),
            ("*", "i"),
            ("_", "i"),
        ],
        Flavor::Slack => &[("*", "b"), ("_", "i"), ("~", "s")],
    }
}

/// Where a link target's `)` is, parentheses inside it balanced (as CommonMark allows).
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            c if c.is_whitespace() => return None,
            _ => {}
        }
    }
    None
}

fn word_char(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// The inline HTML for one block's text.
fn inline(text: &str, flavor: Flavor, depth: usize) -> String {
    let mut out = String::with_capacity(text.len());
    // For each delimiter, the position from which no closer exists (a failed search is not
    // repeated, so unmatched openers cost one scan each kind, not one each).
    let mut no_closer_after: [Option<usize>; 5] = [None; 5];
    // The same for link brackets, autolinks and code spans (by backtick run length).
    let mut no_link_after: Option<usize> = None;
    let mut no_autolink_after: Option<usize> = None;
    let mut no_ticks_after: std::collections::HashMap<usize, usize> = Default::default();
    let mut plain = String::new();
    let mut i = 0;
    let bytes = text.as_bytes();
    let push_plain = |plain: &mut String, out: &mut String| {
        out.push_str(&escape(plain));
        plain.clear();
    };
    'outer: while i < text.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or(' ');
        // Slack's entities.
        if flavor == Flavor::Slack
            && c == '&'
            && let Some((entity, decoded)) = [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>')]
                .iter()
                .find(|(e, _)| rest.starts_with(e))
        {
            plain.push(*decoded);
            i += entity.len();
            continue;
        }
        // Backslash escapes of ASCII punctuation.
        if flavor != Flavor::Slack
            && c == '\\'
            && let Some(next) = rest[1..].chars().next().filter(char::is_ascii_punctuation)
        {
            plain.push(next);
            i += 1 + next.len_utf8();
            continue;
        }
        // Code spans: a run of backticks up to the same run.
        if c == '`' {
            let run = rest.chars().take_while(|&x| x == '`').count();
            let ticks = &rest[..run];
            let hopeless = no_ticks_after.get(&run).is_some_and(|&p| i >= p);
            let end = if hopeless {
                None
            } else {
                rest[run..].find(ticks)
            };
            if end.is_none() {
                no_ticks_after.insert(run, i);
            }
            if let Some(end) = end {
                let code = &rest[run..run + end];
                let code = if code.len() > 1 && code.starts_with(' ') && code.ends_with(' ') {
                    &code[1..code.len() - 1]
                } else {
                    code
                };
                push_plain(&mut plain, &mut out);
                out.push_str(&format!("<code>{}</code>", escape(code)));
                i += run + end + run;
                continue;
            }
            plain.push_str(ticks);
            i += run;
            continue;
        }
        // Autolinks.
        if c == '<' && no_autolink_after.is_none_or(|p| i < p) {
            let end = rest.find('>');
            if end.is_none() {
                no_autolink_after = Some(i);
            }
            if let Some(end) = end {
                let inside = &rest[1..end];
                // Slack's links carry their label after a `|`.
                let (target, label) = match (flavor, inside.split_once('|')) {
                    (Flavor::Slack, Some((t, l))) if !l.is_empty() => (t, l),
                    _ => (inside, inside),
                };
                let safe = ["https://", "http://", "mailto:"]
                    .iter()
                    .any(|p| target.to_ascii_lowercase().starts_with(p));
                if safe && !target.contains(char::is_whitespace) {
                    push_plain(&mut plain, &mut out);
                    let label = match flavor {
                        Flavor::Slack => inline(label, flavor, depth + 1),
                        _ => escape(label),
                    };
                    out.push_str(&format!("<a href=\"{}\">{label}</a>", escape(target)));
                    i += end + 1;
                    continue;
                }
            }
        }
        // Links: [text](target).
        if c == '['
            && flavor != Flavor::Slack
            && depth < MAX_DEPTH
            && no_link_after.is_none_or(|p| i < p)
        {
            let close = rest.find("](");
            if close.is_none() {
                no_link_after = Some(i);
            }
            if let Some(close) = close {
                let label = &rest[1..close];
                let after = &rest[close + 2..];
                if !label.contains('[')
                    && let Some(end) = closing_paren(after)
                {
                    let target = after[..end].trim();
                    let safe = ["https://", "http://", "mailto:"]
                        .iter()
                        .any(|p| target.to_ascii_lowercase().starts_with(p));
                    push_plain(&mut plain, &mut out);
                    let inner = inline(label, flavor, depth + 1);
                    if safe {
                        out.push_str(&format!("<a href=\"{}\">{inner}</a>", escape(target)));
                    } else {
                        out.push_str(&inner);
                    }
                    i += close + 2 + end + 1;
                    continue;
                }
            }
        }
        // Emphasis.
        if depth < MAX_DEPTH {
            for (k, (delimiter, tag)) in delimiters(flavor).iter().enumerate() {
                if !rest.starts_with(delimiter) {
                    continue;
                }
                let before = text[..i].chars().next_back();
                let after_open = rest[delimiter.len()..].chars().next();
                // `_` (and every mrkdwn delimiter) only opens and closes at a word's edge.
                let underscore = delimiter.starts_with('_') || flavor == Flavor::Slack;
                let can_open = after_open.is_some_and(|a| !a.is_whitespace())
                    && !(underscore && word_char(before));
                if !can_open || no_closer_after[k].is_some_and(|p| i >= p) {
                    continue;
                }
                let from = i + delimiter.len();
                let mut search = from;
                let mut found = None;
                while let Some(pos) = text[search..].find(delimiter) {
                    let at = search + pos;
                    let prev = text[..at].chars().next_back();
                    let next = text[at + delimiter.len()..].chars().next();
                    let can_close = at > from
                        && prev.is_some_and(|p| !p.is_whitespace())
                        && !(underscore && word_char(next));
                    // A single `*` must not be half of a `**`.
                    let lone = delimiter.len() > 1
                        || (bytes.get(at + 1) != Some(&delimiter.as_bytes()[0])
                            && (at == 0 || bytes[at - 1] != delimiter.as_bytes()[0]));
                    if can_close && lone {
                        found = Some(at);
                        break;
                    }
                    search = at + delimiter.len();
                }
                let Some(at) = found else {
                    no_closer_after[k] = Some(i);
                    continue;
                };
                push_plain(&mut plain, &mut out);
                let inner = inline(&text[from..at], flavor, depth + 1);
                out.push_str(&format!("<{tag}>{inner}</{tag}>"));
                i = at + delimiter.len();
                continue 'outer;
            }
        }
        plain.push(c);
        i += c.len_utf8();
    }
    push_plain(&mut plain, &mut out);
    out
}

#[cfg(test)]
mod tests;
