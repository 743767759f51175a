//! TOTP enrolment, two-step sign-in, replay, skew, lockout, recovery codes and step-up.

use chrono::Duration;
use iam_adapters_crypto::RfcTotp;
use iam_application::{
    AuthError, MfaError, Principal, SecondFactor, SignIn, StepUp, Unauthenticated,
};
use iam_domain::mfa::totp_step;
use iam_domain::{Password, RecoveryCode, TotpSecret};

use crate::support::{CLIENT, Harness, PASSWORD, tokens};

fn code(h: &Harness, secret: &TotpSecret, offset: i64) -> String {
    RfcTotp::code(secret, totp_step(iam_ports::Clock::now(&*h.clock)) + offset)
}

async fn signed_in(h: &Harness, email: &str) -> Principal {
    h.register(email).await;
    let pair = h.login(email, PASSWORD).await.expect("login");
    h.auth.authenticate(&pair.access_token).await.expect("auth")
}

/// Enrols and confirms; returns the secret and the recovery codes.
async fn enrolled(h: &Harness, p: &Principal) -> (TotpSecret, Vec<RecoveryCode>) {
    let enrolment = h.mfa.enable(p).await.expect("enable");
    let codes = h
        .mfa
        .confirm(p, &code(h, &enrolment.secret, 0))
        .await
        .expect("confirm");
    // The confirming code's step is spent; sign-ins use the next one.
    h.clock.advance(Duration::seconds(30));
    (enrolment.secret, codes)
}

async fn challenge(h: &Harness, email: &str) -> String {
    match h.sign_in(email, PASSWORD).await.expect("first factor") {
        SignIn::MfaRequired {
            mfa_token,
            expires_in,
        } => {
            assert_eq!(expires_in, 300);
            mfa_token.expose().to_owned()
        }
        SignIn::Tokens(_) => panic!("tokens without the second factor"),
        SignIn::TenantSelection { .. } => panic!("unexpected tenant selection"),
    }
}

#[tokio::test]
async fn enrolment_then_two_step_sign_in() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let enrolment = h.mfa.enable(&p).await.expect("enable");
    assert!(
        enrolment
            .otpauth_uri
            .starts_with("otpauth://totp/IAM%20Test:ada%40example.com?secret=")
    );
    assert!(enrolment.otpauth_uri.contains(&enrolment.secret.base32()));
    assert!(enrolment.qr_svg.starts_with("<?xml") || enrolment.qr_svg.starts_with("<svg"));
    // Not active until confirmed: sign-in still needs one factor.
    tokens(h.sign_in("ada@example.com", PASSWORD).await.expect("login"));

    let wrong = h.mfa.confirm(&p, "000000").await;
    assert!(matches!(wrong, Err(MfaError::InvalidCode)), "{wrong:?}");
    let codes = h
        .mfa
        .confirm(&p, &code(&h, &enrolment.secret, 0))
        .await
        .expect("confirm");
    assert_eq!(codes.len(), 10);
    let mut lookups: Vec<_> = codes.iter().map(|c| c.lookup().to_owned()).collect();
    lookups.dedup();
    assert_eq!(lookups.len(), 10);
    assert!(matches!(
        h.mfa.enable(&p).await,
        Err(MfaError::AlreadyEnabled)
    ));

    h.clock.advance(Duration::seconds(30));
    let token = challenge(&h, "ada@example.com").await;
    let pair = h
        .auth
        .complete_mfa(
            &token,
            SecondFactor::Totp(code(&h, &enrolment.secret, 0)),
            CLIENT,
        )
        .await
        .expect("second factor");
    let principal = h.auth.authenticate(&pair.access_token).await.expect("auth");
    assert_eq!(principal.claims.amr, vec!["pwd", "otp", "mfa"]);
    // The challenge is spent.
    let again = h
        .auth
        .complete_mfa(
            &token,
            SecondFactor::Totp(code(&h, &enrolment.secret, 1)),
            CLIENT,
        )
        .await;
    assert!(
        matches!(again, Err(AuthError::InvalidMfaToken)),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_code_works_once_and_only_near_now() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, _) = enrolled(&h, &p).await;

    // One step either side is accepted; two are not.
    for (offset, accepted) in [(-2, false), (2, false), (-1, true), (1, true)] {
        let token = challenge(&h, "ada@example.com").await;
        let r = h
            .auth
            .complete_mfa(
                &token,
                SecondFactor::Totp(code(&h, &secret, offset)),
                CLIENT,
            )
            .await;
        assert_eq!(r.is_ok(), accepted, "offset {offset}: {r:?}");
        // Move on so each case starts after the last accepted step.
        h.clock.advance(Duration::seconds(90));
    }

    // Replay: the same code for a second sign-in is refused.
    let used = code(&h, &secret, 0);
    let first = challenge(&h, "ada@example.com").await;
    h.auth
        .complete_mfa(&first, SecondFactor::Totp(used.clone()), CLIENT)
        .await
        .expect("first use");
    let second = challenge(&h, "ada@example.com").await;
    let replay = h
        .auth
        .complete_mfa(&second, SecondFactor::Totp(used), CLIENT)
        .await;
    assert!(
        matches!(replay, Err(AuthError::InvalidMfaCode)),
        "{replay:?}"
    );
    // And an earlier step's code after a later one was used is refused too.
    let earlier = h
        .auth
        .complete_mfa(&second, SecondFactor::Totp(code(&h, &secret, -1)), CLIENT)
        .await;
    assert!(
        matches!(earlier, Err(AuthError::InvalidMfaCode)),
        "{earlier:?}"
    );
}

#[tokio::test]
async fn the_challenge_dies_after_five_wrong_codes_or_five_minutes() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, _) = enrolled(&h, &p).await;

    let token = challenge(&h, "ada@example.com").await;
    for _ in 0..5 {
        let r = h
            .auth
            .complete_mfa(&token, SecondFactor::Totp("000000".into()), CLIENT)
            .await;
        assert!(matches!(r, Err(AuthError::InvalidMfaCode)), "{r:?}");
    }
    let right = h
        .auth
        .complete_mfa(&token, SecondFactor::Totp(code(&h, &secret, 0)), CLIENT)
        .await;
    assert!(
        matches!(right, Err(AuthError::InvalidMfaToken)),
        "dead after five: {right:?}"
    );

    let token = challenge(&h, "ada@example.com").await;
    h.clock.advance(Duration::minutes(5));
    let late = h
        .auth
        .complete_mfa(&token, SecondFactor::Totp(code(&h, &secret, 0)), CLIENT)
        .await;
    assert!(
        matches!(late, Err(AuthError::InvalidMfaToken)),
        "expired: {late:?}"
    );

    for garbage in ["", "not-a-token"] {
        let r = h
            .auth
            .complete_mfa(garbage, SecondFactor::Totp(code(&h, &secret, 0)), CLIENT)
            .await;
        assert!(matches!(r, Err(AuthError::InvalidMfaToken)));
    }
}

#[tokio::test]
async fn the_second_factor_cannot_be_skipped() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    enrolled(&h, &p).await;
    let token = challenge(&h, "ada@example.com").await;
    // The challenge token is no access token and no refresh token.
    let as_access = h.auth.authenticate(&token).await;
    assert!(matches!(
        as_access,
        Err(AuthError::Unauthenticated(Unauthenticated::Malformed))
    ));
    assert!(matches!(
        h.auth.refresh(&token, CLIENT).await,
        Err(AuthError::InvalidGrant)
    ));
    // Another user's valid code does not open this user's challenge.
    let q = signed_in(&h, "bob@example.com").await;
    let (bob_secret, _) = enrolled(&h, &q).await;
    let token = challenge(&h, "ada@example.com").await;
    let r = h
        .auth
        .complete_mfa(&token, SecondFactor::Totp(code(&h, &bob_secret, 0)), CLIENT)
        .await;
    assert!(matches!(r, Err(AuthError::InvalidMfaCode)), "{r:?}");
}

#[tokio::test]
async fn recovery_codes_are_single_use_and_cost_one_verification() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (_, codes) = enrolled(&h, &p).await;

    let token = challenge(&h, "ada@example.com").await;
    let before = h.stats.verifications();
    let pair = h
        .auth
        .complete_mfa(&token, SecondFactor::Recovery(codes[3].clone()), CLIENT)
        .await
        .expect("recovery");
    assert_eq!(
        h.stats.verifications(),
        before + 1,
        "one Argon2 check, not ten"
    );
    let amr = h
        .auth
        .authenticate(&pair.access_token)
        .await
        .expect("auth")
        .claims
        .amr;
    assert_eq!(amr, vec!["pwd", "rcv", "mfa"]);

    let token = challenge(&h, "ada@example.com").await;
    let reuse = h
        .auth
        .complete_mfa(&token, SecondFactor::Recovery(codes[3].clone()), CLIENT)
        .await;
    assert!(matches!(reuse, Err(AuthError::InvalidMfaCode)), "{reuse:?}");
    let before = h.stats.verifications();
    let unknown = RecoveryCode::parse("ZZZZ-ZZZZ-ZZZZ-ZZZZ").expect("shape");
    let r = h
        .auth
        .complete_mfa(&token, SecondFactor::Recovery(unknown), CLIENT)
        .await;
    assert!(matches!(r, Err(AuthError::InvalidMfaCode)));
    assert_eq!(
        h.stats.verifications(),
        before + 1,
        "an unknown code costs the same"
    );

    let summary = h.mfa.recovery_summary(&p).await.expect("summary");
    assert_eq!((summary.remaining, summary.total), (9, 10));
    assert!(summary.created_at.is_some());
}

#[tokio::test]
async fn regenerating_needs_step_up_and_invalidates_the_old_set() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, old) = enrolled(&h, &p).await;

    let wrong = h
        .mfa
        .regenerate(
            &p,
            StepUp::Password(Password::presented("not it").expect("pw")),
        )
        .await;
    assert!(matches!(wrong, Err(MfaError::StepUpFailed)), "{wrong:?}");
    let wrong = h.mfa.regenerate(&p, StepUp::Code("123456".into())).await;
    assert!(matches!(wrong, Err(MfaError::StepUpFailed)), "{wrong:?}");
    let new = h
        .mfa
        .regenerate(&p, StepUp::Code(code(&h, &secret, 0)))
        .await
        .expect("regenerate");
    assert_eq!(new.len(), 10);

    let token = challenge(&h, "ada@example.com").await;
    let r = h
        .auth
        .complete_mfa(&token, SecondFactor::Recovery(old[0].clone()), CLIENT)
        .await;
    assert!(
        matches!(r, Err(AuthError::InvalidMfaCode)),
        "the old set is gone: {r:?}"
    );
    h.auth
        .complete_mfa(&token, SecondFactor::Recovery(new[0].clone()), CLIENT)
        .await
        .expect("the new set works");
    let regenerated = h
        .mfa
        .regenerate(
            &p,
            StepUp::Password(Password::presented(PASSWORD).expect("pw")),
        )
        .await
        .expect("password step-up works too");
    assert_eq!(regenerated.len(), 10);
}

#[tokio::test]
async fn disabling_needs_step_up_and_ends_other_sessions() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, _) = enrolled(&h, &p).await;
    let other = {
        let token = challenge(&h, "ada@example.com").await;
        h.auth
            .complete_mfa(&token, SecondFactor::Totp(code(&h, &secret, 0)), CLIENT)
            .await
            .expect("second session")
    };
    h.clock.advance(Duration::seconds(30));

    let refused = h.mfa.disable(&p, StepUp::Code("000000".into())).await;
    assert!(
        matches!(refused, Err(MfaError::StepUpFailed)),
        "{refused:?}"
    );
    h.mfa
        .disable(&p, StepUp::Code(code(&h, &secret, 0)))
        .await
        .expect("disable");
    let ended = h.auth.authenticate(&other.access_token).await;
    assert!(
        matches!(
            ended,
            Err(AuthError::Unauthenticated(Unauthenticated::Revoked))
        ),
        "{ended:?}"
    );
    assert!(h.mfa.recovery_summary(&p).await.expect("summary").total == 0);
    // The caller's own session goes on, and sign-in is one step again.
    h.mfa
        .enable(&p)
        .await
        .expect("the current session still works");
    tokens(h.sign_in("ada@example.com", PASSWORD).await.expect("login"));
    assert!(matches!(
        h.mfa.disable(&p, StepUp::Code(code(&h, &secret, 0))).await,
        Err(MfaError::NotEnabled)
    ));
}

#[tokio::test]
async fn step_up_guesses_are_limited() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, _) = enrolled(&h, &p).await;
    for _ in 0..10 {
        let r = h.mfa.regenerate(&p, StepUp::Code("000000".into())).await;
        assert!(matches!(r, Err(MfaError::StepUpFailed)), "{r:?}");
    }
    let r = h
        .mfa
        .regenerate(&p, StepUp::Code(code(&h, &secret, 0)))
        .await;
    assert!(
        matches!(r, Err(MfaError::Throttled(_))),
        "even a right code waits: {r:?}"
    );
    let r = h
        .mfa
        .disable(
            &p,
            StepUp::Password(Password::presented(PASSWORD).expect("pw")),
        )
        .await;
    assert!(
        matches!(r, Err(MfaError::Throttled(_))),
        "and so does the password: {r:?}"
    );
}

#[tokio::test]
async fn a_password_holder_gets_few_second_factor_guesses_in_all() {
    let h = Harness::new().await;
    let p = signed_in(&h, "ada@example.com").await;
    let (secret, _) = enrolled(&h, &p).await;
    // Fresh challenges from ever new addresses: the per-user count still adds up.
    let mut throttled = false;
    for n in 0..12u8 {
        let token = challenge(&h, "ada@example.com").await;
        let from: std::net::IpAddr = format!("198.51.100.{n}").parse().expect("ip");
        match h
            .auth
            .complete_mfa(&token, SecondFactor::Totp("000000".into()), from)
            .await
        {
            Err(AuthError::InvalidMfaCode) => {}
            Err(AuthError::Throttled(_)) => {
                throttled = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(throttled, "ten wrong codes in all, then a wait");
    // Once the bucket drains, the rightful user passes, and success clears the count.
    h.clock.advance(Duration::minutes(15));
    let token = challenge(&h, "ada@example.com").await;
    h.auth
        .complete_mfa(&token, SecondFactor::Totp(code(&h, &secret, 0)), CLIENT)
        .await
        .expect("the right code after the wait");
}
