//! Passwords under the NIST SP 800-63B policy, and their stored hashes.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// Fewest characters a password may have (NIST 800-63B asks for at least 8; we ask 12).
pub const MIN_CHARS: usize = 12;
/// Most characters a password may have; NIST asks that at least 64 be allowed.
pub const MAX_CHARS: usize = 256;

/// A password that meets the policy, NFKC-normalised so that the same characters typed on
/// different keyboards hash alike. It never prints its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a candidate password is refused. Never carries the password itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must have at least {MIN_CHARS} characters")]
    TooShort,
    #[error("password must have at most {MAX_CHARS} characters")]
    TooLong,
}

impl Password {
    /// Applies the policy for a new password: length only, any Unicode, no composition rules.
    pub fn new(candidate: &str) -> Result<Self, PasswordError> {
        let normal: String = candidate.nfkc().collect();
        let chars = normal.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(normal))
    }

    /// Wraps a password presented at login. No policy applies (an old password may predate it),
    /// but it is normalised the same way and bounded so that hashing cost stays bounded.
    pub fn presented(candidate: &str) -> Result<Self, PasswordError> {
        let normal: String = candidate.nfkc().collect();
        if normal.chars().count() > MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        Ok(Self(normal))
    }

    /// The normalised bytes to feed the hash function.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a password that meets the length policy is still refused (NIST 800-63B §5.1.1.2).
/// The message names the reason and never echoes the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Weakness {
    #[error("this password is too common: it appears in lists of breached passwords")]
    Common,
    #[error("this password is too easy to guess: it is repetitive or sequential")]
    Predictable,
    #[error("this password is built from your email address, your name or the product's name")]
    Personal,
}

/// A password hash in PHC string format (`$argon2id$v=19$m=…`). Safe to store, never to log.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a PHC string produced by a hasher or read back from storage.
    pub fn from_phc(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_table() {
        let cases: &[(&str, Result<(), PasswordError>)] = &[
            ("short", Err(PasswordError::TooShort)),
            ("elevenchars", Err(PasswordError::TooShort)),
            ("twelve chars", Ok(())),
            ("correct horse battery staple", Ok(())),
            ("ÄÖÜäöüßéèêëą", Ok(())),
            ("🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑", Ok(())),
            ("allsmallletters", Ok(())),
        ];
        for (input, expected) in cases {
            assert_eq!(Password::new(input).map(|_| ()), *expected, "{input:?}");
        }
        assert!(Password::new(&"x".repeat(64)).is_ok());
        assert!(Password::new(&"x".repeat(MAX_CHARS)).is_ok());
        assert_eq!(
            Password::new(&"x".repeat(MAX_CHARS + 1)),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn normalises_compatibility_forms() {
        // Full-width letters and the ligature ﬁ are NFKC-equivalent to ASCII.
        let a = Password::new("ｐａｓｓｗｏｒｄ ﬁle12").unwrap();
        let b = Password::new("password file12").unwrap();
        assert_eq!(a.expose(), b.expose());
    }

    #[test]
    fn never_prints_its_value() {
        let p = Password::new("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let h = PasswordHash::from_phc("$argon2id$v=19$secret".into());
        assert!(!format!("{h:?}").contains("argon2id"));
    }

    #[test]
    fn presented_passwords_skip_the_length_floor() {
        assert!(Password::presented("short").is_ok());
        assert!(Password::presented(&"x".repeat(MAX_CHARS + 1)).is_err());
    }
}
