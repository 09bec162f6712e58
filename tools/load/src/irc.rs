//! A raw IRC client made for measuring: registers, joins one channel, then either writes tagged
//! lines (buffered, as fast as the socket takes them or paced) or reads them and notes when each
//! arrived. Server PINGs are answered on both sides.

use crate::tally::{self, Arrival};
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};

/// A registered client in one channel.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    channel: String,
}

impl Client {
    /// Connects to 127.0.0.1:`port` as `nick` and joins `channel` (waits for the end of its names).
    pub async fn join(port: u16, nick: &str, channel: &str) -> Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to the IRC server on 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Client {
            reader: BufReader::with_capacity(1 << 16, r),
            writer: BufWriter::with_capacity(1 << 16, w),
            channel: channel.to_owned(),
        };
        c.line(&format!("NICK {nick}")).await?;
        c.line(&format!("USER {nick} 0 * :passerelle load")).await?;
        c.writer.flush().await?;
        c.wait_for(|l| l.split(' ').nth(1) == Some("001")).await?;
        c.line(&format!("JOIN {channel}")).await?;
        c.writer.flush().await?;
        let end_of_names = format!(" 366 {nick} {channel} ");
        c.wait_for(|l| l.contains(&end_of_names)).await?;
        Ok(c)
    }

    async fn line(&mut self, text: &str) -> Result<()> {
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        Ok(())
    }

    /// Reads until a line satisfies `done` (answering PINGs), for at most 15 s.
    async fn wait_for(&mut self, done: impl Fn(&str) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = String::new();
        loop {
            buf.clear();
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.reader.read_line(&mut buf))
                .await
                .context("the IRC server did not answer within 15 s")??;
            if n == 0 {
                bail!("the IRC server closed the connection");
            }
            let l = buf.trim_end();
            if let Some(token) = l.strip_prefix("PING ") {
                self.line(&format!("PONG {token}")).await?;
                self.writer.flush().await?;
            } else if l.split(' ').nth(1).is_some_and(|c| {
                matches!(c, "403" | "405" | "432" | "433" | "436" | "437")
                    || ("471"..="477").contains(&c)
            }) {
                bail!("the IRC server refused: {l}");
            } else if done(l) {
                return Ok(());
            }
        }
    }

    /// Writes `count` tagged lines of run `run` to the channel, at `rate` a second or as fast as the
    /// path takes them (`None`: a burst, with at most `window` lines on their way, counted by
    /// `progress`); returns when the first was written (µs on `clock`) and the connection, open
    /// until dropped. `pad` bytes of filler follow each tag.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        self,
        run: u32,
        count: u64,
        rate: Option<f64>,
        window: u64,
        progress: Arc<Progress>,
        pad: usize,
        clock: Instant,
    ) -> Result<(u64, Open)> {
        let Client {
            reader,
            mut writer,
            channel,
        } = self;
        // The reading side only answers PINGs, through this queue.
        let (pong_tx, mut pong_rx) = mpsc::unbounded_channel::<String>();
        let drain = tokio::spawn(drain(reader, pong_tx));
        let filler = "x".repeat(pad);
        let prefix = format!("PRIVMSG {channel} :");
        let mut first = None;
        let mut out = Vec::with_capacity(512);
        for seq in 0..count {
            if let Some(rate) = rate {
                let due = clock + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if rate.is_none() && window > 0 {
                while seq >= progress.arrived() + window {
                    writer.flush().await?;
                    let notified = progress.notify.notified();
                    if seq < progress.arrived() + window {
                        break;
                    }
                    // Bounded: the receiver gives up by itself, and then nothing more arrives.
                    if tokio::time::timeout(Duration::from_secs(30), notified)
                        .await
                        .is_err()
                    {
                        bail!("nothing arrived for 30 s with {window} lines on their way");
                    }
                }
            }
            while let Ok(token) = pong_rx.try_recv() {
                writer
                    .write_all(format!("PONG {token}\r\n").as_bytes())
                    .await?;
            }
            let sent = clock.elapsed().as_micros() as u64;
            first.get_or_insert(sent);
            out.clear();
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(tally::tag(run, seq, sent).as_bytes());
            if pad > 0 {
                out.push(b' ');
                out.extend_from_slice(filler.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            writer.write_all(&out).await?;
            if rate.is_some() {
                writer.flush().await?;
            }
        }
        writer.flush().await?;
        Ok((
            first.unwrap_or(0),
            Open {
                _writer: writer,
                drain,
            },
        ))
    }

    /// Reads the channel until `count` distinct messages of run `run` arrived, or for as long as
    /// the time `until` allows. The arrivals, in the order read.
    pub async fn receive(
        self,
        run: u32,
        count: u64,
        clock: Instant,
        until: Until,
        progress: Arc<Progress>,
        quickack: bool,
    ) -> Result<Vec<Arrival>> {
        let Until {
            idle,
            deadline,
            sending_done,
        } = until;
        let Client {
            mut reader,
            mut writer,
            ..
        } = self;
        let mut log = tally::Log::new(count);
        let mut buf = String::new();
        let mut last_arrival = Instant::now();
        while log.distinct < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if *sending_done.borrow() && now.duration_since(last_arrival) >= idle {
                break;
            }
            buf.clear();
            let wait = Duration::from_millis(200).min(deadline - now);
            let n = match tokio::time::timeout(wait, reader.read_line(&mut buf)).await {
                Err(_) => continue,
                Ok(r) => r?,
            };
            if n == 0 {
                bail!("the IRC server closed the receiving connection");
            }
            let recv_us = clock.elapsed().as_micros() as u64;
            if quickack && reader.buffer().is_empty() {
                // Everything read so far is consumed: acknowledge it now (not sticky in Linux,
                // so once per socket read).
                let _ = socket2::SockRef::from(reader.get_ref().as_ref()).set_tcp_quickack(true);
            }
            let l = buf.trim_end();
            if let Some(token) = l.strip_prefix("PING ") {
                writer
                    .write_all(format!("PONG {token}\r\n").as_bytes())
                    .await?;
                writer.flush().await?;
                continue;
            }
            if !l.contains(" PRIVMSG ") {
                continue;
            }
            if let Some(first) = log.record(run, l, recv_us) {
                if first {
                    progress.arrived.store(log.distinct, Ordering::Release);
                    progress.notify.notify_one();
                }
                last_arrival = Instant::now();
            }
        }
        Ok(log.arrivals)
    }
}

/// When a receiver stops before every message arrived: nothing for `idle` once `sending_done`
/// says so, or at `deadline`.
pub struct Until {
    /// Quiet time after sending ended.
    pub idle: Duration,
    /// The latest end.
    pub deadline: Instant,
    /// Set once the sender is done.
    pub sending_done: tokio::sync::watch::Receiver<bool>,
}

/// How many distinct messages of the run arrived so far, shared by the receiver with a bursting
/// sender.
#[derive(Default)]
pub struct Progress {
    arrived: AtomicU64,
    notify: Notify,
}

impl Progress {
    fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::Acquire)
    }
}

/// A writing client's connection after its run, kept open until dropped (a closing sender must not
/// make the server drop lines it has not relayed yet).
pub struct Open {
    _writer: BufWriter<OwnedWriteHalf>,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Reads and discards what the server sends a writing client, passing PING tokens on.
async fn drain(mut reader: BufReader<OwnedReadHalf>, pong: mpsc::UnboundedSender<String>) {
    let mut buf = String::new();
    loop {
        buf.clear();
        match reader.read_line(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Some(token) = buf.trim_end().strip_prefix("PING ") {
                    let _ = pong.send(token.to_owned());
                }
            }
        }
    }
}
