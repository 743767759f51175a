//! RFC 6238 TOTP with totp-rs, and QR codes (SVG) with qrcode.

use iam_domain::TotpSecret;
use iam_domain::mfa::{TOTP_DIGITS, TOTP_STEP_SECS};
use iam_ports::Totp;

/// TOTP with HMAC-SHA-1, 6 digits and 30-second steps: what every authenticator app supports.
#[derive(Debug, Clone, Copy, Default)]
pub struct RfcTotp;

impl RfcTotp {
    /// The 6-digit code of `secret` at time step `step` (what an authenticator app shows).
    pub fn code(secret: &TotpSecret, step: i64) -> String {
        let digits = u8::try_from(TOTP_DIGITS).unwrap_or(6);
        Self::code_with(secret.expose(), step, digits).unwrap_or_default()
    }

    fn code_with(secret: &[u8], step: i64, digits: u8) -> Option<String> {
        let totp = totp_rs::Builder::new()
            .with_digits(digits)
            .with_step_duration(TOTP_STEP_SECS.unsigned_abs())
            .with_secret(secret.to_vec())
            .build()
            .ok()?;
        let time = u64::try_from(step).ok()? * TOTP_STEP_SECS.unsigned_abs();
        Some(totp.generate(time).to_string())
    }
}

impl Totp for RfcTotp {
    fn matches(&self, secret: &TotpSecret, step: i64, code: &str) -> bool {
        let digits = u8::try_from(TOTP_DIGITS).unwrap_or(6);
        Self::code_with(secret.expose(), step, digits).is_some_and(|expected| {
            constant_time_eq::constant_time_eq(expected.as_bytes(), code.as_bytes())
        })
    }

    fn provisioning_uri(&self, secret: &TotpSecret, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_SECS}",
            escape(issuer),
            escape(account),
            secret.base32(),
            escape(issuer),
        )
    }

    fn qr_svg(&self, text: &str) -> String {
        match qrcode::QrCode::new(text.as_bytes()) {
            Ok(code) => code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(240, 240)
                .build(),
            // Only texts over ~2.9 KB fail; an otpauth URI is a few hundred bytes.
            Err(_) => String::new(),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1 rows: (time, 8-digit TOTP).
    const VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc_6238_test_vectors() {
        for (time, expected) in VECTORS {
            let step = time / TOTP_STEP_SECS;
            assert_eq!(
                RfcTotp::code_with(b"12345678901234567890", step, 8).as_deref(),
                Some(expected)
            );
            // Six digits are the low-order six of the same value.
            let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
            assert!(RfcTotp.matches(&secret, step, &expected[2..]), "{time}");
            assert!(
                !RfcTotp.matches(&secret, step + 1, &expected[2..]),
                "{time}"
            );
        }
    }

    #[test]
    fn malformed_codes_never_match() {
        let secret = TotpSecret::from_bytes(vec![7; 20]);
        for code in ["", "12345", "1234567", "abcdef", "12345 "] {
            assert!(!RfcTotp.matches(&secret, 1, code), "{code:?}");
        }
    }

    #[test]
    fn provisioning_uri_and_qr() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let uri = RfcTotp.provisioning_uri(&secret, "Acme IAM", "ada@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20IAM:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20IAM&algorithm=SHA1&digits=6&period=30"
        );
        let svg = RfcTotp.qr_svg(&uri);
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
