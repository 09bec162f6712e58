//! The IRC line parser on lines as a busy channel sends them: with and without message tags, a
//! CTCP action, a numeric. Figures: `docs/performance.md`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use passerelle_irc::line::{Line, decode};
use std::hint::black_box;

const LINES: [&str; 4] = [
    ":alice!~alice@host.example.org PRIVMSG #passerelle :did the bridge pick up the new room yet?",
    "@time=2026-11-23T01:02:03.456Z;msgid=abc123;account=alice :alice!~alice@host.example.org PRIVMSG #passerelle :with tags",
    ":bob!bob@198.51.100.7 PRIVMSG #passerelle :\u{1}ACTION waves\u{1}",
    ":irc.example.org 353 bridge = #passerelle :alice bob carol dave @erin +frank",
];

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("irc_line");
    let bytes: usize = LINES.iter().map(|l| l.len()).sum();
    group.throughput(Throughput::Elements(LINES.len() as u64));
    group.bench_function("parse_4_lines", |b| {
        b.iter(|| {
            for l in LINES {
                black_box(Line::parse(black_box(l)).expect("a valid line"));
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("decode_and_parse_4_lines", |b| {
        b.iter(|| {
            for l in LINES {
                let text = decode(black_box(l.as_bytes()));
                black_box(Line::parse(&text).expect("a valid line"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
