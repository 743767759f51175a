//! Building the RFC 5322 message shared by both mailers.

use std::time::SystemTime;

use iam_domain::MailMessage;
use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::MESSAGE_ID_HEADER;

/// `X-IAM-Message-Id`: the outbox id, stable across retries (unlike a transport's queue id).
#[derive(Debug, Clone)]
pub(crate) struct IamMessageId(String);

impl Header for IamMessageId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(MESSAGE_ID_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Why a message could not be built; these never carry the body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("recipient address is not acceptable to the mail library")]
    Recipient,
    #[error("message could not be built: {0}")]
    Message(#[source] lettre::error::Error),
}

/// Builds the multipart/alternative (text + HTML) message. The `Message-ID` is derived from the
/// outbox id so that a retried delivery carries the same id and receivers can deduplicate.
pub(crate) fn build(from: &Mailbox, message: &MailMessage) -> Result<Message, BuildError> {
    let to: Mailbox = message
        .to
        .as_str()
        .parse()
        .map_err(|_| BuildError::Recipient)?;
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(message.subject.clone())
        .date(SystemTime::from(message.created_at))
        .message_id(Some(format!("<{}@{}>", message.id, domain)))
        .header(IamMessageId(message.id.to_string()))
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))
        .map_err(BuildError::Message)
}
