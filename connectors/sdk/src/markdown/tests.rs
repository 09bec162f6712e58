//! The Markdown and mrkdwn conversions both ways.

use super::*;

#[test]
fn the_subset_becomes_markdown() {
    let md = |h: &str| from_html(h, Flavor::CommonMark);
    assert_eq!(md("<b>bold</b> and <i>it</i>"), "**bold** and *it*");
    assert_eq!(md("<strong>x</strong><del>gone</del>"), "**x**~~gone~~");
    assert_eq!(
        md("see <a href=\"https://example.org/a (b)\">this</a>"),
        "see [this](https://example.org/a%20%28b%29)"
    );
    assert_eq!(md("<code>a*b</code>"), "`a*b`");
    assert_eq!(md("<code>a`b</code>"), "``a`b``");
    assert_eq!(
        md("<pre>let x = 1;\n```\n</pre>"),
        "````\nlet x = 1;\n```\n````"
    );
    assert_eq!(md("2 * 3 = 6_a [x]"), "2 \\* 3 = 6\\_a \\[x\\]");
    assert_eq!(
        md("<blockquote>quoted\nmore</blockquote>answer"),
        "> quoted\n> more\n\nanswer"
    );
    assert_eq!(md("<ul><li>one</li><li>two</li></ul>"), "- one\n- two");
    assert_eq!(md("<ol><li>one</li><li>two</li></ol>"), "1. one\n2. two");
    assert_eq!(md("<p>one</p><p>two</p>"), "one\n\ntwo");
    assert_eq!(md("a<br>b"), "a\nb");
    assert_eq!(md("<b></b>x"), "x");
    assert_eq!(md("<u>under</u>"), "under");
    assert_eq!(from_html("<u>under</u>", Flavor::Discord), "__under__");
    assert_eq!(
        md("<script>alert(1)</script><a href=\"javascript:x\">t</a>"),
        "t"
    );
    assert_eq!(md("# not a heading"), "\\# not a heading");
}

#[test]
fn markdown_becomes_the_subset() {
    let html = |m: &str| to_html(m, Flavor::CommonMark);
    assert_eq!(
        html("**bold** and *it* and _it_"),
        "<b>bold</b> and <i>it</i> and <i>it</i>"
    );
    assert_eq!(html("~~gone~~ `a*b*` "), "<s>gone</s> <code>a*b*</code> ");
    assert_eq!(html("snake_case_name"), "snake_case_name");
    assert_eq!(html("2 * 3 * 4"), "2 * 3 * 4");
    assert_eq!(html("\\*not\\*"), "*not*");
    assert_eq!(
        html("[site](https://example.org) [bad](javascript:alert(1))"),
        "<a href=\"https://example.org\">site</a> bad"
    );
    assert_eq!(
        html("<https://example.org>"),
        "<a href=\"https://example.org\">https://example.org</a>"
    );
    assert_eq!(html("<b>not html</b>"), "&lt;b&gt;not html&lt;/b&gt;");
    assert_eq!(html("```\nlet *x* = 1;\n```"), "<pre>let *x* = 1;</pre>");
    assert_eq!(
        html("> quoted\n> **more**\n\nanswer"),
        "<blockquote>quoted<br><b>more</b></blockquote><p>answer</p>"
    );
    assert_eq!(html("- one\n- two"), "<ul><li>one</li><li>two</li></ul>");
    assert_eq!(html("1. one\n2. two"), "<ol><li>one</li><li>two</li></ol>");
    assert_eq!(html("a\nb\n\nc"), "<p>a<br>b</p><p>c</p>");
    assert_eq!(html("__bold__"), "<b>bold</b>");
    assert_eq!(to_html("__under__", Flavor::Discord), "<u>under</u>");
    assert_eq!(html("**a *b* c**"), "<b>a <i>b</i> c</b>");
}

#[test]
fn what_is_written_reads_back_the_same() {
    for flavor in [Flavor::CommonMark, Flavor::Discord] {
        for html in [
            "<b>bold</b> and <i>it</i>",
            "2 * 3 = 6_a [x] \\ `tick`",
            "<s>gone</s> <code>a*b</code>",
            "see <a href=\"https://example.org/\">this</a>",
            "<blockquote>quoted</blockquote><p>answer</p>",
            "<ul><li>one</li><li>two</li></ul>",
            "<pre>let x = 1;</pre>",
        ] {
            let md = from_html(html, flavor);
            assert_eq!(to_html(&md, flavor), sanitize(html), "{flavor:?}: {md:?}");
        }
    }
}

#[test]
fn hostile_input_is_bounded() {
    // Unclosed openers by the thousand: each kind is searched for once, not once each.
    let many = "*_~~**__[<`".repeat(20_000);
    let html = to_html(&many, Flavor::CommonMark);
    assert!(html.len() >= many.len());
    // Deep nesting stops at MAX_DEPTH and keeps the rest as text.
    let deep = format!("{}x{}", "**".repeat(1000), "**".repeat(1000));
    assert!(to_html(&deep, Flavor::CommonMark).contains('x'));
    let quotes = format!("{}x", "> ".repeat(1000));
    assert!(to_html(&quotes, Flavor::CommonMark).contains('x'));
    let nested = format!(
        "{}x{}",
        "<blockquote>".repeat(500),
        "</blockquote>".repeat(500)
    );
    assert!(from_html(&nested, Flavor::CommonMark).ends_with('x'));
}

#[test]
fn slack_mrkdwn_both_ways() {
    let to = |h: &str| from_html(h, Flavor::Slack);
    assert_eq!(
        to("<b>bold</b>, <i>it</i> and <s>gone</s>"),
        "*bold*, _it_ and ~gone~"
    );
    assert_eq!(
        to("<a href=\"https://example.org/a|b\">the <b>site</b></a>"),
        "<https://example.org/a%7Cb|the *site*>"
    );
    // The three entities are the only escaping: no `<!channel>` can be formed.
    assert_eq!(
        to("&lt;!channel&gt; &amp; a*b"),
        "&lt;!channel&gt; &amp; a*b"
    );
    assert_eq!(to("<code>a&lt;b</code>"), "`a&lt;b`");
    assert_eq!(
        to("<blockquote>quoted</blockquote>after"),
        "> quoted\n\nafter"
    );
    let back = |m: &str| to_html(m, Flavor::Slack);
    assert_eq!(
        back("*bold* _it_ ~gone~"),
        "<b>bold</b> <i>it</i> <s>gone</s>"
    );
    assert_eq!(
        back("see <https://example.org|the site> or <https://example.org/x>"),
        "see <a href=\"https://example.org\">the site</a> or <a href=\"https://example.org/x\">https://example.org/x</a>"
    );
    assert_eq!(back("a &lt;b&gt; &amp; c"), "a &lt;b&gt; &amp; c");
    assert_eq!(back("&gt; quoted"), "<blockquote>quoted</blockquote>");
    assert_eq!(
        back("snake_case_name and 2*3*4"),
        "snake_case_name and 2*3*4"
    );
    assert_eq!(back("- not a list"), "- not a list");
    assert_eq!(
        back("<javascript:alert(1)|x>"),
        "&lt;javascript:alert(1)|x&gt;"
    );
    assert_eq!(back("\\*kept\\*"), "\\<b>kept\\</b>");
    for html in ["<b>b</b> <i>i</i>", "<s>x</s> <code>c</code>"] {
        assert_eq!(back(&to(html)), html);
    }
}
