//! Reading a program's output as lines, each bounded before it is kept: a line over the limit is
//! skipped to its end and reported by its length, so no output can make the daemon hold more
//! than `max` bytes of one line.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// One line read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line within the limit, without its `\n` (or `\r\n`).
    Bytes(Vec<u8>),
    /// A line over the limit, skipped: its length.
    TooLong(usize),
}

/// Reads `reader` to its end, sending each line to `tx`; a last line without `\n` is dropped
/// (the program died writing it). Ends when the reader ends or `tx` is closed.
pub async fn read<R: AsyncRead + Unpin>(reader: R, max: usize, tx: mpsc::Sender<Line>) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    // The length of an over-long line being skipped.
    let mut skipping: Option<usize> = None;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            _ => return,
        };
        let (taken, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        match skipping.as_mut() {
            Some(len) => *len += taken,
            None if line.len() + taken > max => skipping = Some(line.len() + taken),
            None => line.extend_from_slice(&buf[..taken]),
        }
        reader.consume(if done { taken + 1 } else { taken });
        if !done {
            if skipping.is_some() {
                line.clear();
            }
            continue;
        }
        let item = match skipping.take() {
            Some(len) => {
                line.clear();
                Line::TooLong(len)
            }
            None => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Line::Bytes(std::mem::take(&mut line))
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let (tx, mut rx) = mpsc::channel(100);
        read(input, max, tx).await;
        let mut out = Vec::new();
        while let Ok(l) = rx.try_recv() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_bounded_and_a_partial_last_one_dropped() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nthree", 10).await,
            [
                Line::Bytes(b"one".to_vec()),
                Line::Bytes(b"two".to_vec()),
                Line::Bytes(Vec::new())
            ]
        );
        let mut long = vec![b'x'; 100_000];
        long.extend_from_slice(b"\nok\n");
        assert_eq!(
            lines(&long, 1000).await,
            [Line::TooLong(100_000), Line::Bytes(b"ok".to_vec())]
        );
    }
}
