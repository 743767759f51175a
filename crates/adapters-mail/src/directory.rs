//! The development mailer: each message becomes an `.eml` file.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use iam_domain::MailMessage;
use iam_ports::{MailError, Mailer};
use lettre::message::Mailbox;
use tokio::io::AsyncWriteExt;

use crate::message;
use crate::smtp::MailConfigError;

/// Writes each message as `<dir>/<created_at>-<id>.eml` (owner-only on unix: it holds a secret
/// link) and logs where, so a person trying the service can open it.
#[derive(Debug, Clone)]
pub struct DirectoryMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl DirectoryMailer {
    /// A mailer writing into `dir` (created on first send) with the sender mailbox `from`.
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Result<Self, MailConfigError> {
        let from = from
            .parse()
            .map_err(|_| MailConfigError::From(from.to_owned()))?;
        Ok(Self {
            dir: dir.into(),
            from,
        })
    }

    /// The directory messages are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a message is (or would be) written to.
    pub fn path_for(&self, message: &MailMessage) -> PathBuf {
        // Sortable by time, no ':' (not allowed in Windows file names), unique by id.
        let stamp = message.created_at.format("%Y%m%dT%H%M%S%.3fZ");
        self.dir.join(format!("{stamp}-{}.eml", message.id))
    }
}

async fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

async fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    // A retry of the same message rewrites its own file rather than failing.
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(bytes).await?;
    file.flush().await?;
    file.sync_all().await
}

#[async_trait]
impl Mailer for DirectoryMailer {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError> {
        let email =
            message::build(&self.from, message).map_err(|e| MailError::Permanent(Box::new(e)))?;
        let path = self.path_for(message);
        // I/O errors name the path at most, never the contents; a full disk may clear up.
        create_dir(&self.dir)
            .await
            .map_err(|e| MailError::Transient(Box::new(e)))?;
        write_file(&path, &email.formatted())
            .await
            .map_err(|e| MailError::Transient(Box::new(e)))?;
        tracing::info!(
            to = %message.to,
            subject = %message.subject,
            path = %path.display(),
            "mail written to file (development mailer)"
        );
        Ok(())
    }
}
