//! A real, minimal SMTP server on 127.0.0.1 for tests: it speaks enough of RFC 5321 for lettre
//! (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT), keeps what it receives,
//! and can be told to refuse, or to go down and come back, to exercise retries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The message as transmitted after dot-unstuffing, lines joined with CRLF.
    pub data: String,
}

impl Received {
    /// The decoded text/plain part (quoted-printable or base64 undone).
    pub fn text_body(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.body_text(0).map(|s| s.into_owned())
    }

    /// The decoded text/html part.
    pub fn html_body(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.body_html(0).map(|s| s.into_owned())
    }

    /// The decoded `Subject`.
    pub fn subject(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.subject().map(str::to_owned)
    }

    /// A header's raw value, trimmed (e.g. `X-IAM-Message-Id`).
    pub fn header(&self, name: &str) -> Option<String> {
        let parsed = mail_parser::MessageParser::default().parse(self.data.as_bytes())?;
        parsed.header_raw(name).map(|v| v.trim().to_owned())
    }
}

/// Scripted refusals: each queued code answers one command of that kind, then normal service
/// resumes.
#[derive(Default)]
struct Faults {
    rcpt: VecDeque<u16>,
    data: VecDeque<u16>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    faults: Mutex<Faults>,
    count: watch::Sender<usize>,
}

impl Shared {
    // A test that panicked while holding the lock must not hide the other tests' messages.
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A loopback SMTP server; dropped or stopped, it stops accepting and drops its connections.
pub struct SmtpTestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SmtpTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SmtpTestServer {
    /// Starts on a free port.
    pub async fn start() -> SmtpTestServer {
        Self::start_on(0).await
    }

    /// Starts on `port` (e.g. the port of a server stopped earlier, to bring it back). Panics if
    /// the port stays taken for two seconds.
    pub async fn start_on(port: u16) -> SmtpTestServer {
        let listener = bind(port).await;
        let addr = listener
            .local_addr()
            .expect("test SMTP listener has an address");
        let (count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults::default()),
            count,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        SmtpTestServer { addr, shared, task }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything accepted so far, in order.
    pub async fn received(&self) -> Vec<Received> {
        self.shared.received().clone()
    }

    /// Waits until at least `n` messages have arrived or `timeout` has passed, and returns what
    /// arrived (the caller asserts on the count).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let mut count = self.shared.count.subscribe();
        // Errors mean the timeout passed or the server went away: either way, report what came.
        let _ = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        self.shared.received().clone()
    }

    /// Answers the next `times` `DATA` transactions (after the final dot) with `code`
    /// (e.g. 451 for a temporary failure, 554 for a permanent one).
    pub fn fail_data(&self, code: u16, times: usize) {
        self.shared
            .faults()
            .data
            .extend(std::iter::repeat_n(code, times));
    }

    /// Answers the next `times` `RCPT TO` commands with `code` (e.g. 550 for an unknown user).
    pub fn fail_rcpt(&self, code: u16, times: usize) {
        self.shared
            .faults()
            .rcpt
            .extend(std::iter::repeat_n(code, times));
    }

    /// Stops accepting and drops every open connection (the listener closes as the task ends).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for SmtpTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind(port: u16) -> TcpListener {
    // A just-stopped server's listener closes asynchronously, so retry briefly on "in use".
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot bind test SMTP server on 127.0.0.1:{port}: {e}"),
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the connections here means aborting this task drops (closes) all of them.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn reply_text(code: u16) -> &'static str {
    match code {
        421 => "4.3.0 Service not available",
        450..=452 => "4.3.0 Temporary failure, try again later",
        550 => "5.1.1 Mailbox unavailable",
        552 => "5.3.4 Message too big",
        553 => "5.1.3 Mailbox name not allowed",
        554 => "5.7.1 Transaction failed",
        c if c >= 500 => "5.0.0 Refused",
        _ => "4.0.0 Refused",
    }
}

/// The address between the angle brackets of `MAIL FROM:<a> ...` / `RCPT TO:<a>`.
fn path_arg(rest: &str) -> Option<String> {
    let start = rest.find('<')?;
    let end = start + rest[start..].find('>')?;
    Some(rest[start + 1..end].to_owned())
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 localhost ESMTP iam-test\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            from = None;
            to.clear();
            "250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760".into()
        } else if upper.starts_with("HELO") {
            from = None;
            to.clear();
            "250 localhost".into()
        } else if upper.starts_with("MAIL FROM:") {
            match path_arg(&command[10..]) {
                Some(a) => {
                    from = Some(a);
                    to.clear();
                    "250 2.1.0 Ok".into()
                }
                None => "501 5.5.4 Syntax error in MAIL".into(),
            }
        } else if upper.starts_with("RCPT TO:") {
            let fault = shared.faults().rcpt.pop_front();
            match (from.is_some(), path_arg(&command[8..]), fault) {
                (false, _, _) => "503 5.5.1 MAIL first".into(),
                (true, None, _) => "501 5.5.4 Syntax error in RCPT".into(),
                (true, Some(_), Some(code)) => format!("{code} {}", reply_text(code)),
                (true, Some(a), None) => {
                    to.push(a);
                    "250 2.1.5 Ok".into()
                }
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                "503 5.5.1 RCPT first".into()
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut lines: Vec<String> = Vec::new();
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = String::from_utf8_lossy(&line);
                    let l = text.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    // RFC 5321 4.5.2: a leading dot was doubled by the client.
                    lines.push(l.strip_prefix('.').unwrap_or(l).to_owned());
                }
                let fault = shared.faults().data.pop_front();
                let envelope_from = from.take().unwrap_or_default();
                let recipients = std::mem::take(&mut to);
                match fault {
                    Some(code) => format!("{code} {}", reply_text(code)),
                    None => {
                        let message = Received {
                            from: envelope_from,
                            to: recipients,
                            data: lines.join("\r\n") + "\r\n",
                        };
                        let n = {
                            let mut received = shared.received();
                            received.push(message);
                            received.len()
                        };
                        shared.count.send_replace(n);
                        "250 2.0.0 Ok: queued".into()
                    }
                }
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 Ok".into()
        } else if upper.starts_with("NOOP") {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not recognized".into()
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}
