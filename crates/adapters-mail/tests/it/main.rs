//! The mailers against a real (loopback) SMTP server and a real directory.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeZone;
use iam_adapters_mail::testing::SmtpTestServer;
use iam_adapters_mail::{DirectoryMailer, SmtpConfig, SmtpMailer, SmtpSecurity};
use iam_domain::{Email, MailId, MailMessage};
use iam_ports::{MailError, Mailer};

const LINK: &str = "https://iam.example.com/verify?token=AbC-123_xyz.456&tenant=t%201";

fn message(to: &str) -> MailMessage {
    MailMessage {
        id: MailId(uuid::Uuid::now_v7()),
        to: Email::parse(to).expect("valid email"),
        subject: "Confirm your address — Ünïcode".into(),
        // A long line and a leading dot exercise quoted-printable and dot-stuffing.
        text: format!(
            "Hello,\n\nOpen this link to confirm your address:\n{LINK}\n.leading dot line\n{}\n",
            "x".repeat(120)
        ),
        html: format!("<p>Hello,</p><p><a href=\"{LINK}\">Confirm</a></p>"),
        created_at: chrono::Utc
            .with_ymd_and_hms(2025, 3, 4, 5, 6, 7)
            .single()
            .expect("valid time"),
    }
}

fn config(port: u16, timeout: Duration) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "IAM <no-reply@example.com>".into(),
        timeout,
    }
}

fn mailer(port: u16) -> SmtpMailer {
    SmtpMailer::new(config(port, Duration::from_secs(5))).expect("mailer")
}

#[tokio::test]
async fn smtp_delivers_both_parts_with_the_link_intact() {
    let server = SmtpTestServer::start().await;
    let msg = message("Alice@Example.com");
    mailer(server.port()).send(&msg).await.expect("delivered");

    let received = server.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.from, "no-reply@example.com");
    assert_eq!(got.to, vec!["alice@example.com".to_owned()]);
    assert_eq!(got.subject().as_deref(), Some(msg.subject.as_str()));
    assert_eq!(
        got.header("X-IAM-Message-Id"),
        Some(msg.id.to_string()),
        "stable id header"
    );
    assert!(
        got.data
            .to_ascii_lowercase()
            .contains("multipart/alternative")
    );
    let text = got.text_body().expect("text part");
    assert!(text.contains(LINK), "link intact in text: {text}");
    assert!(
        text.contains("\n.leading dot line"),
        "dot-unstuffed: {text}"
    );
    let html = got.html_body().expect("html part");
    assert!(
        html.contains(&format!("href=\"{LINK}\"")),
        "link in html: {html}"
    );
}

#[tokio::test]
async fn server_handles_several_connections() {
    let server = SmtpTestServer::start().await;
    let mailer = Arc::new(mailer(server.port()));
    let sends = (0..4).map(|i| {
        let mailer = mailer.clone();
        tokio::spawn(async move { mailer.send(&message(&format!("u{i}@example.com"))).await })
    });
    for send in sends {
        send.await.expect("task").expect("delivered");
    }
    assert_eq!(server.wait_for(4, Duration::from_secs(5)).await.len(), 4);
}

#[tokio::test]
async fn temporary_failure_on_data_is_transient_and_retry_succeeds() {
    let server = SmtpTestServer::start().await;
    server.fail_data(451, 1);
    let mailer = mailer(server.port());
    let msg = message("bob@example.com");

    let err = mailer.send(&msg).await.expect_err("451 refuses");
    assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    assert!(server.received().await.is_empty());

    mailer.send(&msg).await.expect("retry delivered");
    assert_eq!(server.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn unknown_recipient_is_permanent() {
    let server = SmtpTestServer::start().await;
    server.fail_rcpt(550, 1);
    let err = mailer(server.port())
        .send(&message("nobody@example.com"))
        .await
        .expect_err("550 refuses");
    assert!(matches!(err, MailError::Permanent(_)), "{err:?}");
    assert!(server.received().await.is_empty());
}

#[tokio::test]
async fn permanent_failure_on_data_is_permanent() {
    let server = SmtpTestServer::start().await;
    server.fail_data(554, 1);
    let err = mailer(server.port())
        .send(&message("carol@example.com"))
        .await
        .expect_err("554 refuses");
    assert!(matches!(err, MailError::Permanent(_)), "{err:?}");
}

#[tokio::test]
async fn server_down_is_transient_and_quick_then_recovers() {
    let server = SmtpTestServer::start().await;
    let port = server.port();
    server.stop();
    drop(server);
    let mailer = SmtpMailer::new(config(port, Duration::from_millis(500))).expect("mailer");
    let msg = message("dave@example.com");

    // The stopped listener closes asynchronously; whatever the race, the answer is Transient.
    let started = Instant::now();
    let err = mailer.send(&msg).await.expect_err("server down");
    assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let server = SmtpTestServer::start_on(port).await;
    mailer.send(&msg).await.expect("delivered once up");
    assert_eq!(server.wait_for(1, Duration::from_secs(5)).await.len(), 1);
}

#[tokio::test]
async fn unresponsive_server_times_out_as_transient() {
    // Accepts the connection but never greets: only the timeout ends the wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mailer = SmtpMailer::new(config(port, Duration::from_millis(300))).expect("mailer");
    let started = Instant::now();
    let err = mailer
        .send(&message("erin@example.com"))
        .await
        .expect_err("times out");
    assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}

#[test]
fn config_debug_redacts_the_password() {
    let mut c = config(25, Duration::from_secs(1));
    c.username = Some("user".into());
    c.password = Some("hunter2-secret".into());
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    assert!(SmtpMailer::new(c).is_ok());

    let mut half = config(25, Duration::from_secs(1));
    half.password = Some("p".into());
    assert!(SmtpMailer::new(half).is_err());
    let mut bad = config(25, Duration::from_secs(1));
    bad.from = "not a mailbox".into();
    assert!(SmtpMailer::new(bad).is_err());
}

/// Collects formatted log output of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn directory_mailer_writes_a_private_parseable_file_and_logs_no_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailer = DirectoryMailer::new(dir.path().join("outbox"), "IAM <no-reply@example.com>")
        .expect("mailer");
    let msg = message("frank@example.com");

    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        mailer.send(&msg).await.expect("written");
    }

    let path = mailer.path_for(&msg);
    assert_eq!(
        path.file_name().and_then(|n| n.to_str()),
        Some(format!("20250304T050607.000Z-{}.eml", msg.id).as_str())
    );
    let bytes = std::fs::read(&path).expect("file exists");
    let parsed = mail_parser::MessageParser::default()
        .parse(&bytes)
        .expect("parseable RFC 5322");
    assert_eq!(parsed.subject(), Some(msg.subject.as_str()));
    let text = parsed.body_text(0).expect("text part");
    assert!(text.contains(LINK), "{text}");
    assert!(parsed.body_html(0).expect("html part").contains(LINK));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    let logged = String::from_utf8(logs.0.lock().expect("log buffer").clone()).expect("utf-8");
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.contains("frank@example.com"), "{logged}");
    assert!(logged.contains(&msg.subject), "{logged}");
    assert!(logged.contains(&path.display().to_string()), "{logged}");
    assert!(!logged.contains("token="), "body leaked: {logged}");
    assert!(!logged.contains("Hello"), "body leaked: {logged}");

    // A retry rewrites the same file.
    mailer.send(&msg).await.expect("rewritten");
    assert_eq!(std::fs::read_dir(mailer.dir()).expect("dir").count(), 1);
}
