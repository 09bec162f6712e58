//! A raw IRC client for tests: a plain user on a real server, answering PINGs by itself.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A PRIVMSG or NOTICE the client received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// PRIVMSG or NOTICE.
    pub command: String,
    /// The sender's nick.
    pub nick: String,
    /// The channel (or our nick, for a private message).
    pub target: String,
    /// The text, CTCP framing included.
    pub text: String,
}

impl Received {
    /// The text of an action (`\x01ACTION text\x01`), if this is one.
    pub fn action(&self) -> Option<&str> {
        self.text
            .strip_prefix("\x01ACTION ")
            .map(|t| t.strip_suffix('\x01').unwrap_or(t))
    }
}

/// A connected, registered client.
pub struct IrcClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Our nick.
    pub nick: String,
    /// Lines read while waiting for something else (JOINs, numerics, messages).
    backlog: VecDeque<String>,
}

const TIMEOUT: Duration = Duration::from_secs(15);

impl IrcClient {
    /// Connects to 127.0.0.1:`port` and registers as `nick`.
    pub async fn connect(port: u16, nick: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the IRC server");
        let (r, w) = stream.into_split();
        let mut client = Self {
            reader: BufReader::new(r),
            writer: w,
            nick: nick.to_owned(),
            backlog: VecDeque::new(),
        };
        client.raw(&format!("NICK {nick}")).await;
        client
            .raw(&format!("USER {nick} 0 * :test user {nick}"))
            .await;
        client
            .wait_line(TIMEOUT, |l| numeric(l) == Some("001"))
            .await
            .expect("registration (001) within 15 s");
        client
    }

    /// Sends a raw line (CR LF added).
    pub async fn raw(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write to the IRC server");
    }

    /// Sends raw bytes as one line (CR LF added), for input that is not UTF-8.
    pub async fn raw_bytes(&mut self, line: &[u8]) {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.writer
            .write_all(&bytes)
            .await
            .expect("write to the IRC server");
    }

    /// Joins `channel` and waits for the end of its names list.
    pub async fn join(&mut self, channel: &str) {
        self.raw(&format!("JOIN {channel}")).await;
        let chan = channel.to_lowercase();
        self.wait_line(TIMEOUT, |l| {
            numeric(l) == Some("366")
                && l.split(' ')
                    .nth(3)
                    .is_some_and(|c| c.to_lowercase() == chan)
        })
        .await
        .expect("joined within 15 s");
    }

    /// Says `text` to `target`.
    pub async fn say(&mut self, target: &str, text: &str) {
        self.raw(&format!("PRIVMSG {target} :{text}")).await;
    }

    /// Acts `text` (`/me`) in `target`.
    pub async fn act(&mut self, target: &str, text: &str) {
        self.raw(&format!("PRIVMSG {target} :\x01ACTION {text}\x01"))
            .await;
    }

    /// Waits until `nick` joins `channel` (for instance the bridge).
    pub async fn wait_for_join(&mut self, nick: &str, channel: &str, timeout: Duration) -> bool {
        let (nick, chan) = (nick.to_lowercase(), channel.to_lowercase());
        self.wait_line(timeout, |l| {
            let mut parts = l.split(' ');
            let source = parts.next().unwrap_or("");
            let cmd = parts.next().unwrap_or("");
            let target = parts
                .next()
                .unwrap_or("")
                .trim_start_matches(':')
                .to_lowercase();
            cmd == "JOIN"
                && target == chan
                && source
                    .trim_start_matches(':')
                    .to_lowercase()
                    .starts_with(&format!("{nick}!"))
        })
        .await
        .is_some()
    }

    /// Waits until `nick` is in `channel`, whether it joined before or after this client: asks
    /// the server for the channel's names until `nick` is among them or `timeout` passes.
    pub async fn wait_in_channel(&mut self, nick: &str, channel: &str, timeout: Duration) -> bool {
        let (nick, chan) = (nick.to_lowercase(), channel.to_lowercase());
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            self.raw(&format!("NAMES {channel}")).await;
            // `353 me = #chan :@a b`, then `366 me #chan :End`: a 353 naming `nick` comes first.
            let line = self
                .wait_line(TIMEOUT, |l| {
                    let parts: Vec<&str> = l.split(' ').collect();
                    match numeric(l) {
                        Some("353") => {
                            parts.get(4).is_some_and(|c| c.to_lowercase() == chan)
                                && parts[5..].iter().any(|n| {
                                    n.trim_start_matches(':')
                                        .trim_start_matches(['@', '+', '%', '&', '~'])
                                        .to_lowercase()
                                        == nick
                                })
                        }
                        Some("366") => parts.get(3).is_some_and(|c| c.to_lowercase() == chan),
                        _ => false,
                    }
                })
                .await;
            if line.is_some_and(|l| numeric(&l) == Some("353")) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// When `nick` signed on to the server, in seconds since the epoch, from `WHOIS` (the
    /// server's `317` answer): the same value means the same connection.
    pub async fn signon(&mut self, nick: &str) -> Option<u64> {
        self.raw(&format!("WHOIS {nick} {nick}")).await;
        let lower = nick.to_lowercase();
        let line = self
            .wait_line(TIMEOUT, |l| {
                numeric(l) == Some("317")
                    && l.split(' ')
                        .nth(3)
                        .is_some_and(|n| n.to_lowercase() == lower)
            })
            .await?;
        line.split(' ').nth(5)?.parse().ok()
    }

    /// Whether `nick` quit (a `QUIT` from it was seen), reading for `timeout` at most; lines
    /// read meanwhile stay for the other waiters.
    pub async fn saw_quit(&mut self, nick: &str, timeout: Duration) -> bool {
        let prefix = format!(":{}!", nick.to_lowercase());
        self.wait_line(timeout, |l| {
            l.to_lowercase().starts_with(&prefix) && l.split(' ').nth(1) == Some("QUIT")
        })
        .await
        .is_some()
    }

    /// The next PRIVMSG or NOTICE from a user, within `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Received> {
        let line = self
            .wait_line(timeout, |l| {
                let cmd = l.split(' ').nth(1).unwrap_or("");
                l.starts_with(':')
                    && l.split(' ').next().is_some_and(|s| s.contains('!'))
                    && (cmd == "PRIVMSG" || cmd == "NOTICE")
            })
            .await?;
        let (head, text) = line
            .split_once(" :")
            .map(|(h, t)| (h, t.to_owned()))
            .unwrap_or((line.as_str(), String::new()));
        let mut parts = head.split(' ');
        let source = parts.next().unwrap_or("").trim_start_matches(':');
        let command = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        Some(Received {
            command,
            nick: source.split('!').next().unwrap_or("").to_owned(),
            target,
            text,
        })
    }

    /// Messages received within `timeout` (stops early once `until` says so).
    pub async fn messages_until(
        &mut self,
        timeout: Duration,
        until: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut got = Vec::new();
        while !until(&got) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match self.next_message(left).await {
                Some(m) => got.push(m),
                None => break,
            }
        }
        got
    }

    async fn read_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if let Some(rest) = line.strip_prefix("PING ") {
            let reply = format!("PONG {rest}\r\n");
            let _ = self.writer.write_all(reply.as_bytes()).await;
        }
        Some(line)
    }

    /// The first line (backlog first) that `pred` accepts; lines it rejects stay in the backlog
    /// only when read from it, so each line is seen by one waiter.
    async fn wait_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        if let Some(i) = self.backlog.iter().position(|l| pred(l)) {
            return self.backlog.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.read_line())
                .await
                .ok()??;
            if pred(&line) {
                return Some(line);
            }
            if self.backlog.len() < 10_000 {
                self.backlog.push_back(line);
            }
        }
    }
}

fn numeric(line: &str) -> Option<&str> {
    line.split(' ')
        .nth(1)
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
}
