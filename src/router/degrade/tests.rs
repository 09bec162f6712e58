use super::*;
use crate::config::Rights;
use passerelle_sdk::{Capabilities, EventKey, Limits, Sender};

fn policy(caps: Capabilities, delete: bool) -> AccountPolicy {
    AccountPolicy {
        enabled: true,
        rights: Rights {
            read: true,
            write: true,
            delete,
        },
        capabilities: caps,
        limits: Limits::default(),
        remote_nick_format: None,
    }
}

fn routed(kind: EventKind) -> RoutedEvent {
    let mut sender = Sender::new("u1");
    sender.display_name = Some("alice".into());
    RoutedEvent {
        event: Event::new("#a", sender, kind),
        origin: "chat.one".into(),
        link: "l".into(),
        reply_to: None,
        thread_root: None,
        target: None,
        moderation: false,
    }
}

fn text_of(e: &Event) -> &str {
    e.content().map(|c| c.text.as_str()).unwrap_or("")
}

#[test]
fn names_are_prefixed_only_without_per_message_identity() {
    let r = routed(EventKind::Message(Content::plain("hi")));
    let g = General::default();
    let plain = adapt(
        &r,
        &"#b".into(),
        &policy(Capabilities::default(), false),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&plain), "<alice> hi");
    let caps = Capabilities {
        per_message_identity: true,
        ..Default::default()
    };
    let api = adapt(
        &r,
        &"x".into(),
        &policy(caps, false),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&api), "hi");
    let emote = routed(EventKind::Message(Content::emote("waves")));
    let out = adapt(
        &emote,
        &"#b".into(),
        &policy(Capabilities::default(), false),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&out), "alice waves");
    assert_eq!(out.content().unwrap().kind, MessageKind::Emote);
}

#[test]
fn nick_formats_know_matterbridges_placeholders_translated() {
    let r = routed(EventKind::Message(Content::plain("hi")));
    let mut p = policy(Capabilities::default(), false);
    p.remote_nick_format = Some("[{account}/{link}] <{nopingnick}> ".into());
    let out = adapt(
        &r,
        &"#b".into(),
        &p,
        DestRelations::default(),
        &General::default(),
    )
    .unwrap();
    assert_eq!(text_of(&out), "[chat.one/l] <a\u{200b}lice> hi");
}

#[test]
fn a_name_that_looks_like_a_placeholder_stays_as_written() {
    assert_eq!(
        super::fill_nick_format(
            "<{nick}> [{link}] {other}",
            "{link}{account}",
            "irc.a",
            "lobby"
        ),
        "<{link}{account}> [lobby] {other}"
    );
}

fn lines_policy(max_lines: usize) -> AccountPolicy {
    let mut p = policy(Capabilities::default(), false);
    p.limits = Limits {
        max_lines: Some(max_lines),
        line_bytes: Some(100),
        ..Default::default()
    };
    p
}

#[test]
fn where_lines_are_messages_every_line_names_its_sender() {
    let g = General::default();
    // Bob can't make a line of his pass for alice's.
    let r = routed(EventKind::Message(Content::plain(
        "hi\n<bob> I am bob\r\n\n  \nbye",
    )));
    let out = adapt(
        &r,
        &"#b".into(),
        &lines_policy(5),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(
        text_of(&out),
        "<alice> hi\n<alice> <bob> I am bob\n<alice> bye"
    );
    let emote = routed(EventKind::Message(Content::emote("waves\nagain")));
    let out = adapt(
        &emote,
        &"#b".into(),
        &lines_policy(5),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&out), "alice waves\nalice again");
    // Elsewhere a message's lines stay one message, named once.
    let out = adapt(
        &r,
        &"#b".into(),
        &policy(Capabilities::default(), false),
        DestRelations::default(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&out), "<alice> hi\n<bob> I am bob\r\n\n  \nbye");
}

#[test]
fn a_long_paste_is_cut_to_max_lines_with_a_count_or_a_link() {
    let g = General::default();
    let paste: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
    let r = routed(EventKind::Message(Content::plain(paste)));
    let dest = lines_policy(5);
    let a = adapt_with(&r, &"#b".into(), &dest, DestRelations::default(), &g, None).unwrap();
    assert!(a.cut);
    assert_eq!(
        text_of(&a.event),
        "<alice> line 1\n<alice> line 2\n<alice> line 3\n<alice> line 4\n<alice> line 5\n\
         <alice> … (1,995 more lines)"
    );
    let link = "https://bridge.example.org/pastes/p1/sig";
    let a = adapt_with(
        &r,
        &"#b".into(),
        &dest,
        DestRelations::default(),
        &g,
        Some(link),
    )
    .unwrap();
    assert!(text_of(&a.event).ends_with(
        "<alice> line 5\n<alice> … (1,995 more lines: https://bridge.example.org/pastes/p1/sig)"
    ));
    // Up to max_lines, nothing is cut.
    let five = routed(EventKind::Message(Content::plain("1\n2\n3\n4\n5")));
    let a = adapt_with(
        &five,
        &"#b".into(),
        &dest,
        DestRelations::default(),
        &g,
        None,
    )
    .unwrap();
    assert!(!a.cut);
    assert_eq!(text_of(&a.event).lines().count(), 5);
    // One line of 10,000 bytes counts as the lines it wraps into: cut short, with the link.
    let long = routed(EventKind::Message(Content::plain("é".repeat(5_000))));
    let a = adapt_with(
        &long,
        &"#b".into(),
        &dest,
        DestRelations::default(),
        &g,
        Some(link),
    )
    .unwrap();
    assert!(a.cut);
    let text = text_of(&a.event);
    let (first, note) = text.split_once('\n').unwrap();
    assert!(first.len() <= 5 * 100 && first.ends_with("é…"), "{first}");
    assert_eq!(note, format!("<alice> … (the whole text: {link})"));
    assert_eq!(thousands(1), "1");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(1234567), "1,234,567");
}

#[test]
fn replies_become_quotes_where_not_carried() {
    let mut r = routed(EventKind::Message(Content::plain("yes")));
    r.reply_to = Some(EventKey::new());
    let rel = DestRelations {
        reply_to: Some("m9".into()),
        reply_sender: Some("bob".into()),
        ..Default::default()
    };
    let g = General::default();
    let out = adapt(
        &r,
        &"#b".into(),
        &policy(Capabilities::default(), false),
        rel.clone(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&out), "<alice> (re bob) yes");
    assert_eq!(out.reply_to, None);
    let caps = Capabilities {
        replies: true,
        per_message_identity: true,
        ..Default::default()
    };
    let out = adapt(&r, &"x".into(), &policy(caps, false), rel, &g).unwrap();
    assert_eq!(out.reply_to, Some("m9".into()));
    assert_eq!(text_of(&out), "yes");
}

#[test]
fn edits_deletes_and_reactions_need_the_capability_and_the_delete_right() {
    let g = General::default();
    let caps = Capabilities {
        edits: true,
        deletes: true,
        reactions: true,
        per_message_identity: true,
        ..Default::default()
    };
    let rel = DestRelations {
        target: Some("m1".into()),
        ..Default::default()
    };
    let edit = routed(EventKind::Edit {
        target: "o1".into(),
        content: Content::plain("fixed"),
    });
    let out = adapt(&edit, &"x".into(), &policy(caps, true), rel.clone(), &g).unwrap();
    assert!(matches!(out.kind, EventKind::Edit { ref target, .. } if target.as_str() == "m1"));
    // Without the delete right, the edit is resent as a correction.
    let out = adapt(&edit, &"x".into(), &policy(caps, false), rel.clone(), &g).unwrap();
    assert_eq!(text_of(&out), "fixed (edited)");
    assert!(matches!(out.kind, EventKind::Message(_)));
    let drop = General {
        edit_fallback: EditFallback::Drop,
        ..General::default()
    };
    assert_eq!(
        adapt(&edit, &"x".into(), &policy(caps, false), rel.clone(), &drop).unwrap_err(),
        "no_edits"
    );
    let delete = routed(EventKind::Delete {
        target: "o1".into(),
    });
    assert!(adapt(&delete, &"x".into(), &policy(caps, true), rel.clone(), &g).is_ok());
    assert_eq!(
        adapt(&delete, &"x".into(), &policy(caps, false), rel.clone(), &g).unwrap_err(),
        "no_deletes"
    );
    assert_eq!(
        adapt(
            &delete,
            &"x".into(),
            &policy(caps, true),
            DestRelations::default(),
            &g
        )
        .unwrap_err(),
        "unknown_target"
    );
    let reaction = routed(EventKind::Reaction {
        target: "o1".into(),
        key: "👍".into(),
        removed: false,
    });
    let quiet = General {
        reaction_fallback: TextFallback::Drop,
        delete_fallback: TextFallback::Drop,
        ..General::default()
    };
    assert_eq!(
        adapt(
            &reaction,
            &"#b".into(),
            &policy(Capabilities::default(), true),
            rel.clone(),
            &quiet
        )
        .unwrap_err(),
        "no_reactions"
    );
    let plain = Capabilities::default();
    let mut reaction = reaction;
    reaction.target = Some(EventKey::new());
    let mut delete = delete;
    delete.target = Some(EventKey::new());
    let rel = DestRelations {
        target_sender: Some("bob".into()),
        ..rel
    };
    let out = adapt(
        &reaction,
        &"#b".into(),
        &policy(plain, true),
        rel.clone(),
        &g,
    )
    .unwrap();
    assert_eq!(text_of(&out), "alice reacted 👍 to bob's message");
    assert_eq!(out.content().map(|c| c.kind), Some(MessageKind::Emote));
    let out = adapt(&delete, &"#b".into(), &policy(plain, true), rel.clone(), &g).unwrap();
    assert_eq!(text_of(&out), "alice deleted a message by bob");
    assert_eq!(
        adapt(
            &delete,
            &"#b".into(),
            &policy(plain, true),
            rel.clone(),
            &quiet
        )
        .unwrap_err(),
        "no_deletes"
    );
    // Saying it is a plain write: the delete right is not needed where nothing is modified.
    assert!(
        adapt(
            &reaction,
            &"#b".into(),
            &policy(plain, false),
            rel.clone(),
            &g
        )
        .is_ok()
    );
    // Where the network could react but the right is missing, nothing is said.
    assert_eq!(
        adapt(
            &reaction,
            &"#b".into(),
            &policy(caps, false),
            rel.clone(),
            &g
        )
        .unwrap_err(),
        "no_reactions"
    );
    let unreact = routed(EventKind::Reaction {
        target: "o1".into(),
        key: "👍".into(),
        removed: true,
    });
    assert_eq!(
        adapt(&unreact, &"#b".into(), &policy(plain, true), rel, &g).unwrap_err(),
        "no_reactions"
    );
}

#[test]
fn long_text_is_cut_on_a_character_boundary() {
    let cut = truncate("ééééé".to_owned(), 7);
    assert_eq!(cut, "éé…");
    assert!(cut.len() <= 7);
    assert_eq!(truncate("short".to_owned(), 10), "short");
}
