//! Password screening with zxcvbn's bundled dictionaries (common and breached passwords, words,
//! names) and pattern matchers.

use iam_domain::{Password, Weakness};
use iam_ports::PasswordScreen;
use zxcvbn::matching::patterns::{DictionaryPattern, MatchPattern};

/// Longer passphrases are not screened: no breach list holds them, and zxcvbn's matching grows
/// quadratically with length.
const SCREENED_CHARS: usize = 64;

/// The share of a password that, matched by one kind of weak pattern, makes it weak.
const WEAK_SHARE: f64 = 0.5;

/// zxcvbn-based screening.
#[derive(Debug, Default, Clone, Copy)]
pub struct ZxcvbnScreen;

impl PasswordScreen for ZxcvbnScreen {
    fn weakness(&self, password: &Password, context: &[&str]) -> Option<Weakness> {
        let text = std::str::from_utf8(password.expose()).ok()?;
        let chars = text.chars().count();
        if chars > SCREENED_CHARS {
            return None;
        }
        let inputs: Vec<String> = context
            .iter()
            .flat_map(|c| {
                // Whole values and their parts: "ada.lovelace" also yields "ada" and "lovelace".
                std::iter::once(c.to_lowercase()).chain(
                    c.split(|ch: char| !ch.is_alphanumeric())
                        .filter(|p| p.chars().count() >= 3)
                        .map(str::to_lowercase),
                )
            })
            .collect();
        let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let entropy = zxcvbn::zxcvbn(text, &input_refs);
        let share = |pred: &dyn Fn(&MatchPattern) -> bool| {
            let covered: usize = entropy
                .sequence()
                .iter()
                .filter(|m| pred(&m.pattern))
                .map(|m| m.token.chars().count())
                .sum();
            covered as f64 / chars.max(1) as f64
        };
        // zxcvbn does not export its `DictionaryType`; its variant names are its stable API.
        let dictionary = |kind: &'static str| move |p: &MatchPattern| matches!(p, MatchPattern::Dictionary(DictionaryPattern { dictionary_name, .. }) if format!("{dictionary_name:?}") == kind);
        if personal_share(text, &inputs) >= WEAK_SHARE {
            return Some(Weakness::Personal);
        }
        // Common: one listed password makes up most of it, or listed pieces make up half of
        // a password that is weak overall. Passphrases of several listed words stay allowed.
        let longest_listed = entropy
            .sequence()
            .iter()
            .filter(|m| dictionary("Passwords")(&m.pattern))
            .map(|m| m.token.chars().count())
            .max()
            .unwrap_or(0) as f64
            / chars.max(1) as f64;
        let weak_overall = u8::from(entropy.score()) < 3;
        if longest_listed >= 0.6 || (weak_overall && share(&dictionary("Passwords")) >= WEAK_SHARE)
        {
            return Some(Weakness::Common);
        }
        let patterned = |p: &MatchPattern| {
            matches!(
                p,
                MatchPattern::Repeat(_) | MatchPattern::Sequence(_) | MatchPattern::Spatial(_)
            )
        };
        if share(&patterned) >= 0.8 {
            return Some(Weakness::Predictable);
        }
        None
    }
}

/// The share of `password` covered by context words (forwards or backwards, case ignored).
/// Done directly rather than through zxcvbn's cheapest-guess sequence, which prefers brute force
/// for short stretches and so undercounts names glued between digits and punctuation.
fn personal_share(password: &str, words: &[String]) -> f64 {
    let text: Vec<char> = password.to_lowercase().chars().collect();
    let mut covered = vec![false; text.len()];
    for word in words.iter().filter(|w| w.chars().count() >= 3) {
        let forward: Vec<char> = word.chars().collect();
        let backward: Vec<char> = forward.iter().rev().copied().collect();
        for needle in [forward, backward] {
            if needle.len() > text.len() {
                continue;
            }
            for start in 0..=text.len() - needle.len() {
                if text[start..start + needle.len()] == needle[..] {
                    covered[start..start + needle.len()].fill(true);
                }
            }
        }
    }
    covered.iter().filter(|c| **c).count() as f64 / text.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(password: &str, context: &[&str]) -> Option<Weakness> {
        ZxcvbnScreen.weakness(&Password::new(password).unwrap(), context)
    }

    #[test]
    fn screening_table() {
        let ctx = ["ada.lovelace@example.com", "Ada Lovelace", "Acme IAM"];
        let cases: &[(&str, Option<Weakness>)] = &[
            ("password1234", Some(Weakness::Common)),
            ("qwertyuiop123", Some(Weakness::Common)),
            ("iloveyou1234", Some(Weakness::Common)),
            ("aaaaaaaaaaaaaaaa", Some(Weakness::Predictable)),
            ("abcdefghijklmnop", Some(Weakness::Predictable)),
            ("adalovelace1815", Some(Weakness::Personal)),
            ("lovelace.ada.99", Some(Weakness::Personal)),
            ("acmeiam2024!!", Some(Weakness::Personal)),
            ("correct horse battery staple", None),
            ("vR7#kq2!Lm9@xT", None),
            ("tangerine-orbit-cobalt", None),
        ];
        for (password, expected) in cases {
            assert_eq!(check(password, &ctx), *expected, "{password}");
        }
    }

    #[test]
    fn long_passphrases_pass_unscreened() {
        assert_eq!(check(&"password".repeat(9), &[]), None);
    }

    #[test]
    fn reasons_never_echo_the_password() {
        for w in [Weakness::Common, Weakness::Predictable, Weakness::Personal] {
            assert!(!w.to_string().contains("password1234"));
        }
    }
}
