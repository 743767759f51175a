//! Mail delivery adapters for the `iam_ports::Mailer` port.
//!
//! - [`SmtpMailer`]: production delivery over SMTP (plain, STARTTLS or implicit TLS) with lettre.
//! - [`DirectoryMailer`]: the development mailer of the embedded default; it writes each message
//!   as an `.eml` file so a person trying the service can open the link it holds.
//! - `testing` (feature `testing`): a real loopback SMTP server for tests.
//!
//! *Invariant:* the only crate naming lettre. Message bodies hold secret links, and passwords are
//! secrets: neither ever appears in an error or a log line.

mod directory;
mod message;
mod smtp;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use directory::DirectoryMailer;
pub use smtp::{MailConfigError, SmtpConfig, SmtpMailer, SmtpSecurity};

/// The header carrying the outbox id of a message, so a delivered copy can be traced back to it.
pub const MESSAGE_ID_HEADER: &str = "X-IAM-Message-Id";
