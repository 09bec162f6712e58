//! Splitting long text into pieces that fit one IRC line, never inside a UTF-8 character, and at
//! a space where one is near the limit. No character is lost: joining the pieces gives the text.
//! A space at a cut starts the next piece rather than ending this one, because servers strip
//! trailing white space from lines.

/// Splits `text` into pieces of at most `max` bytes (at least one character each).
pub fn split(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while cut > 0 && !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // max is smaller than one character: send that character alone.
            cut = rest
                .chars()
                .next()
                .map(char::len_utf8)
                .unwrap_or(rest.len());
        } else if let Some(space) = rest[..cut].rfind(' ')
            && space > 0
            && space >= cut / 2
        {
            cut = space;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head);
        rest = tail;
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_fit_and_join_back() {
        let text = "héllo wörld ".repeat(60) + &"日本語".repeat(40);
        for max in [1, 2, 5, 17, 100, 400] {
            let pieces = split(&text, max);
            assert_eq!(pieces.concat(), text, "max {max}");
            for p in &pieces {
                assert!(
                    p.len() <= max.max(3),
                    "piece of {} bytes for max {max}",
                    p.len()
                );
                assert!(!p.is_empty());
            }
        }
        assert_eq!(split("short", 10), vec!["short"]);
        assert_eq!(split("", 10), vec![""]);
        assert_eq!(split("aaaa bbbb", 6), vec!["aaaa", " bbbb"]);
    }
}
