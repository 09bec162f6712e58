//! Tagged messages and what arrived of them: delivered, lost, duplicated, reordered, throughput and
//! latency.
//!
//! Every message carries `plt:<run>:<seq>:<sent µs>`: its run (so a stray line from another run is
//! never counted), its sequence number and the time it was written, in microseconds since the
//! run's clock started. Sender and receiver share that clock (one process), so a latency is one
//! subtraction.

use std::fmt;

/// The tag of message `seq` of run `run`, written at `sent_us`.
pub fn tag(run: u32, seq: u64, sent_us: u64) -> String {
    format!("plt:{run}:{seq}:{sent_us}")
}

/// Finds a tag of run `run` anywhere in `text` (a bridge prefixes the sender's name); its sequence
/// number and send time.
pub fn parse(run: u32, text: &str) -> Option<(u64, u64)> {
    let at = text.find("plt:")?;
    let mut parts = text[at + 4..].splitn(3, ':');
    let r: u32 = parts.next()?.parse().ok()?;
    if r != run {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let sent = rest[..end].parse().ok()?;
    Some((seq, sent))
}

/// One arrival: sequence number, send time and receive time (µs on the run's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Its sequence number.
    pub seq: u64,
    /// When it was written.
    pub sent_us: u64,
    /// When it was read.
    pub recv_us: u64,
}

/// What a receiver read so far: every tagged arrival of its run, in order, and how many distinct
/// messages they were.
pub struct Log {
    /// The arrivals, in the order read.
    pub arrivals: Vec<Arrival>,
    seen: Vec<bool>,
    /// Distinct messages among them.
    pub distinct: u64,
}

impl Log {
    /// A log for a run of `count` messages.
    pub fn new(count: u64) -> Self {
        Self {
            arrivals: Vec::with_capacity(count as usize),
            seen: vec![false; count as usize],
            distinct: 0,
        }
    }

    /// Records `text` read at `recv_us` if it carries a tag of run `run`: `None` when it does
    /// not, else whether it was the message's first arrival.
    pub fn record(&mut self, run: u32, text: &str, recv_us: u64) -> Option<bool> {
        let (seq, sent_us) = parse(run, text)?;
        self.arrivals.push(Arrival {
            seq,
            sent_us,
            recv_us,
        });
        let first = self
            .seen
            .get_mut(seq as usize)
            .is_some_and(|slot| !std::mem::replace(slot, true));
        if first {
            self.distinct += 1;
        }
        Some(first)
    }
}

/// The figures of one path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Messages sent.
    pub sent: u64,
    /// Distinct messages that arrived.
    pub delivered: u64,
    /// Sent and never arrived.
    pub lost: u64,
    /// Arrivals of a message that had already arrived.
    pub duplicated: u64,
    /// Arrivals after a message sent later had arrived.
    pub reordered: u64,
    /// Distinct arrivals per second, from the first send to the last arrival.
    pub throughput: f64,
    /// Latency percentiles and maximum, in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Figures {
    /// Tallies `arrivals` (in the order read) of `sent` messages, numbered from 0, the first written
    /// at `first_sent_us`.
    pub fn from_arrivals(sent: u64, first_sent_us: u64, arrivals: &[Arrival]) -> Self {
        let mut seen = vec![false; sent as usize];
        let mut f = Figures {
            sent,
            ..Figures::default()
        };
        let mut highest: Option<u64> = None;
        let mut latencies = Vec::with_capacity(arrivals.len());
        let mut last_recv = first_sent_us;
        for a in arrivals {
            let Some(slot) = seen.get_mut(a.seq as usize) else {
                continue; // not one of ours
            };
            if *slot {
                f.duplicated += 1;
                continue;
            }
            *slot = true;
            f.delivered += 1;
            if highest.is_some_and(|h| a.seq < h) {
                f.reordered += 1;
            }
            highest = highest.max(Some(a.seq));
            latencies.push(a.recv_us.saturating_sub(a.sent_us));
            last_recv = last_recv.max(a.recv_us);
        }
        f.lost = sent - f.delivered;
        let span = last_recv.saturating_sub(first_sent_us).max(1) as f64 / 1e6;
        f.throughput = f.delivered as f64 / span;
        latencies.sort_unstable();
        f.p50_us = percentile(&latencies, 0.50);
        f.p99_us = percentile(&latencies, 0.99);
        f.max_us = latencies.last().copied().unwrap_or(0);
        f
    }
}

/// The nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Microseconds as milliseconds with two decimals.
pub struct Ms(pub u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}ms", self.0 as f64 / 1000.0)
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} delivered={} lost={} duplicated={} reordered={} throughput={:.0}msg/s p50={} p99={} max={}",
            self.sent,
            self.delivered,
            self.lost,
            self.duplicated,
            self.reordered,
            self.throughput,
            Ms(self.p50_us),
            Ms(self.p99_us),
            Ms(self.max_us)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_found_behind_a_prefix_and_only_for_their_run() {
        let t = tag(7, 42, 1234);
        assert_eq!(parse(7, &format!("<la> {t}")), Some((42, 1234)));
        assert_eq!(parse(7, &format!("{t} and more")), Some((42, 1234)));
        assert_eq!(parse(8, &t), None, "another run's tag counted");
        assert_eq!(parse(7, "plt:7:x:1"), None);
        assert_eq!(parse(7, "nothing here"), None);
    }

    #[test]
    fn losses_repeats_and_reorders_are_counted() {
        let a = |seq, sent_us, recv_us| Arrival {
            seq,
            sent_us,
            recv_us,
        };
        // 0, 2, 1 (late), 2 again; 3 never arrives; 99 is not ours.
        let arrivals = [
            a(0, 0, 1_000),
            a(2, 20, 3_000),
            a(1, 10, 4_000),
            a(2, 20, 5_000),
            a(99, 0, 5_000),
        ];
        let f = Figures::from_arrivals(4, 0, &arrivals);
        assert_eq!(
            (f.delivered, f.lost, f.duplicated, f.reordered),
            (3, 1, 1, 1)
        );
        assert_eq!((f.p50_us, f.p99_us, f.max_us), (2_980, 3_990, 3_990));
        // 3 distinct arrivals over 4 ms.
        assert!((f.throughput - 750.0).abs() < 1e-6, "{}", f.throughput);
    }

    #[test]
    fn a_log_keeps_every_arrival_and_counts_each_message_once() {
        let mut log = Log::new(3);
        assert_eq!(log.record(1, "<pin> chatter", 10), None);
        assert_eq!(log.record(1, &tag(2, 0, 5), 11), None, "another run");
        assert_eq!(
            log.record(1, &format!("<da> {}", tag(1, 2, 5)), 12),
            Some(true)
        );
        assert_eq!(log.record(1, &tag(1, 2, 5), 13), Some(false), "a repeat");
        assert_eq!(
            log.record(1, &tag(1, 9, 5), 14),
            Some(false),
            "beyond the run"
        );
        assert_eq!(log.record(1, &tag(1, 0, 6), 15), Some(true));
        assert_eq!(log.distinct, 2);
        let seqs: Vec<u64> = log.arrivals.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [2, 2, 9, 0]);
    }
}
