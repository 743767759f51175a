//! Delivery over SMTP with lettre.

use std::time::Duration;

use async_trait::async_trait;
use iam_domain::MailMessage;
use iam_ports::{MailError, Mailer};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::message::{self, BuildError};

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text: only for loopback tests and local relays.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// Where and how to deliver.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Relay host name (also the name its TLS certificate must carry).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub security: SmtpSecurity,
    /// Login name, if the relay wants authentication.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// Sender mailbox, e.g. `IAM <no-reply@example.com>`.
    pub from: String,
    /// Bound on the whole delivery of one message, from connecting to the relay's final reply.
    pub timeout: Duration,
}

// The password must never print, so Debug is written by hand.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a mailer could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    /// The sender is not a valid mailbox.
    #[error("invalid sender mailbox {0:?}")]
    From(String),
    /// The transport could not be set up (e.g. TLS parameters).
    #[error("invalid SMTP transport settings: {0}")]
    Transport(#[source] lettre::transport::smtp::Error),
    /// A password without a user name, or the reverse.
    #[error("SMTP username and password must be given together")]
    Credentials,
}

/// Delivers through an SMTP relay; one connection per message (mail volume is low, and no pooled
/// connection can go stale between messages).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Builds the mailer; it connects only when sending.
    pub fn new(config: SmtpConfig) -> Result<Self, MailConfigError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|_| MailConfigError::From(config.from.clone()))?;
        let builder = match config.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                    .map_err(MailConfigError::Transport)?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .map_err(MailConfigError::Transport)?,
        };
        let mut builder = builder.port(config.port).timeout(Some(config.timeout));
        match (config.username, config.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user, password));
            }
            (None, None) => {}
            _ => return Err(MailConfigError::Credentials),
        }
        Ok(Self {
            transport: builder.build(),
            from,
            timeout: config.timeout,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError> {
        let email = message::build(&self.from, message).map_err(|e| match e {
            BuildError::Recipient | BuildError::Message(_) => MailError::Permanent(Box::new(e)),
        })?;
        // lettre's own timeout does not cover every wait (a relay that accepts the connection but
        // never greets would hold the worker forever), so the whole exchange is bounded here.
        let outcome = match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
            Ok(outcome) => outcome.map_err(classify),
            Err(elapsed) => Err(MailError::Transient(Box::new(elapsed))),
        };
        match outcome {
            Ok(_) => {
                tracing::debug!(mail_id = %message.id, "mail delivered to relay");
                Ok(())
            }
            Err(error) => {
                // lettre errors hold the server's reply, never the message or the password.
                tracing::warn!(mail_id = %message.id, error = %error_chain(&error), "mail delivery failed");
                Err(error)
            }
        }
    }
}

/// 5xx replies and client-side refusals (a message the library will not send) cannot succeed
/// later; everything else (refused or dropped connections, timeouts, TLS trouble, 4xx) may.
fn classify(e: lettre::transport::smtp::Error) -> MailError {
    if e.is_permanent() || e.is_client() {
        MailError::Permanent(Box::new(e))
    } else {
        MailError::Transient(Box::new(e))
    }
}

fn error_chain(e: &MailError) -> String {
    use std::error::Error as _;
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
