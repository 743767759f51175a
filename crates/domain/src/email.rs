//! Email addresses, normalised so that one mailbox maps to one account.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A syntactically valid email address in normal form: trimmed, NFKC, lower case.
///
/// The whole address is lower-cased: almost every mail provider treats the local part
/// case-insensitively, and two accounts differing only by case are a support and takeover hazard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email is empty")]
    Empty,
    #[error("email is longer than 254 characters")]
    TooLong,
    #[error("email must contain exactly one @ with text on both sides")]
    Shape,
    #[error("email contains whitespace or control characters")]
    Characters,
    #[error("email domain is not a valid host name")]
    Domain,
}

impl Email {
    /// Parses and normalises an address.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        use unicode_normalization::UnicodeNormalization;
        let normal: String = input.trim().nfkc().collect::<String>().to_lowercase();
        if normal.is_empty() {
            return Err(EmailError::Empty);
        }
        if normal.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        if normal.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Characters);
        }
        let mut parts = normal.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::Shape);
        };
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return Err(EmailError::Shape);
        }
        let domain_ok = domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().count() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(EmailError::Domain);
        }
        Ok(Self(normal))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, EmailError>) {
        assert_eq!(
            Email::parse(input)
                .as_ref()
                .map(Email::as_str)
                .map_err(Clone::clone),
            expected,
            "{input:?}"
        );
    }

    #[test]
    fn parsing_table() {
        check("Alice@Example.COM", Ok("alice@example.com"));
        check("  bob@example.org \n", Ok("bob@example.org"));
        check("ｂｏｂ@example.org", Ok("bob@example.org"));
        check("a@localhost", Ok("a@localhost"));
        check("", Err(EmailError::Empty));
        check("   ", Err(EmailError::Empty));
        check("no-at-sign", Err(EmailError::Shape));
        check("a@b@c", Err(EmailError::Shape));
        check("@example.com", Err(EmailError::Shape));
        check("a@", Err(EmailError::Shape));
        check("a b@example.com", Err(EmailError::Characters));
        check("a@exa_mple.com", Err(EmailError::Domain));
        check("a@example..com", Err(EmailError::Domain));
        check("a@-example.com", Err(EmailError::Domain));
        check(
            &format!("{}@example.com", "a".repeat(65)),
            Err(EmailError::Shape),
        );
        check(
            &format!("a@{}.com", "b".repeat(260)),
            Err(EmailError::TooLong),
        );
    }

    #[test]
    fn local_part() {
        assert_eq!(Email::parse("x.y@z.io").unwrap().local_part(), "x.y");
    }
}
