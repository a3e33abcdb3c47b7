//! The ephemeral state (rate limits, lockout, known devices, invalidations) on both
//! implementations: in-process and a real Redis. Then what only Redis does: several replicas
//! meeting the same limits and hearing each other's invalidations, and the failure policy when
//! Redis goes away.

use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::json;
use tessera::Error;
use tessera::abuse::{Class, Limit, LoginGuard, Outcome, RateLimitConfig, Reservation};
use tessera::shared::{Invalidation, Listener, Shared};

use crate::helpers::{
    Backend, PASSWORD, PrivateRedis, TestApp, eventually, redis_url, unique_redis_prefix,
};

#[derive(Clone, Copy, Debug)]
enum Kind {
    InProcess,
    Redis,
}

async fn shared(kind: Kind) -> Shared {
    match kind {
        Kind::InProcess => Shared::local(),
        Kind::Redis => Shared::connect(&redis_url().await, &unique_redis_prefix(), None)
            .await
            .unwrap(),
    }
}

macro_rules! on_both_states {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Kind::InProcess).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Kind::Redis).await } )*
        }
    };
}

on_both_states!(
    buckets_allow_the_burst_then_refill_at_the_rate,
    concurrent_attempts_reserve_no_more_checks_than_the_threshold,
    lockout_backs_off_exponentially_and_spares_known_devices,
    a_stashed_value_is_taken_once,
);

/// Ceremony state (WebAuthn) is stashed for one taker: the first take gets it, every later one
/// nothing; keys are separate.
async fn a_stashed_value_is_taken_once(kind: Kind) {
    let state = shared(kind).await;
    state.stash("c1", b"state one", 60).await.unwrap();
    state.stash("c2", b"state two", 60).await.unwrap();
    let (a, b) = tokio::join!(state.take_stashed("c1"), state.take_stashed("c1"));
    let got: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(got, vec![b"state one".to_vec()], "exactly one taker");
    assert_eq!(state.take_stashed("c1").await.unwrap(), None);
    assert_eq!(
        state.take_stashed("c2").await.unwrap(),
        Some(b"state two".to_vec())
    );
    assert_eq!(state.take_stashed("never").await.unwrap(), None);
}

fn retry_after(result: Result<(), Error>) -> u64 {
    match result {
        Err(Error::TooManyRequests { retry_after }) => retry_after,
        other => panic!("expected 429, got {other:?}"),
    }
}

async fn buckets_allow_the_burst_then_refill_at_the_rate(kind: Kind) {
    let state = shared(kind).await;
    let l = tessera::abuse::Limiter::new(
        RateLimitConfig {
            login_ip: Limit::new(3, 60),
            register_ip: Limit::new(2, 1),
            ..Default::default()
        },
        state.clone(),
    );
    for _ in 0..3 {
        assert!(l.check(Class::LoginIp, "192.0.2.4", 100).await.is_ok());
    }
    assert_eq!(
        retry_after(l.check(Class::LoginIp, "192.0.2.4", 100).await),
        1
    );
    assert!(
        l.check(Class::LoginIp, "192.0.2.5", 100).await.is_ok(),
        "other keys have their own bucket"
    );
    assert!(
        l.check(Class::RegisterIp, "192.0.2.4", 100).await.is_ok(),
        "other classes have their own bucket"
    );
    assert!(
        l.check(Class::LoginIp, "192.0.2.4", 101).await.is_ok(),
        "refilled one per second"
    );
    assert!(l.check(Class::LoginIp, "192.0.2.4", 101).await.is_err());
    // A whole IPv6 /64 shares one bucket: rotating addresses in it does not escape the limit.
    assert!(l.check(Class::RegisterIp, "2001:db8::1", 0).await.is_ok());
    assert!(l.check(Class::RegisterIp, "2001:db8::2", 0).await.is_ok());
    assert_eq!(
        retry_after(l.check(Class::RegisterIp, "2001:db8::3", 0).await),
        60
    );
    let off = tessera::abuse::Limiter::new(
        RateLimitConfig {
            enabled: false,
            ..Default::default()
        },
        state,
    );
    for _ in 0..100 {
        assert!(off.check(Class::LoginIp, "x", 0).await.is_ok());
    }
}

fn guard(state: &Shared, cfg: RateLimitConfig) -> LoginGuard {
    LoginGuard::new(&tessera::abuse::Limiter::new(cfg, state.clone()))
}

async fn concurrent_attempts_reserve_no_more_checks_than_the_threshold(kind: Kind) {
    let state = shared(kind).await;
    let g = guard(
        &state,
        RateLimitConfig {
            lockout_threshold: 3,
            ..Default::default()
        },
    );
    let mut held: Vec<Reservation> = Vec::new();
    for _ in 0..3 {
        held.push(g.reserve("ada", "ip", 0).await.unwrap());
    }
    assert!(
        g.reserve("ada", "ip", 0).await.is_err(),
        "a fourth in flight"
    );
    // Two fail: one more check is left before the lock.
    assert_eq!(g.failed("ada", "ip", 0).await.unwrap(), Outcome::Counted);
    assert_eq!(g.failed("ada", "ip", 0).await.unwrap(), Outcome::Counted);
    drop(held);
    // Released from `Drop`: at once in process, a moment later in Redis.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let last = loop {
        if let Ok(r) = g.reserve("ada", "ip", 0).await {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(g.reserve("ada", "ip", 0).await.is_err(), "only one is left");
    drop(last);
    eventually(5, "the last reservation to be released", || {
        let g = g.clone();
        async move { g.reserve("ada", "ip", 0).await.is_ok() }
    })
    .await;
}

async fn lockout_backs_off_exponentially_and_spares_known_devices(kind: Kind) {
    let state = shared(kind).await;
    let g = guard(
        &state,
        RateLimitConfig {
            lockout_threshold: 3,
            lockout_account_threshold: 6,
            lockout_base_secs: 10,
            lockout_max_secs: 40,
            ..Default::default()
        },
    );
    let locked = |secs, account_wide| Outcome::Locked { secs, account_wide };
    g.succeeded("ada", "home").await;
    assert!(g.is_known("ada", "home").await);
    assert!(!g.is_known("ada", "evil").await);
    assert_eq!(g.failed("ada", "evil", 0).await.unwrap(), Outcome::Counted);
    assert_eq!(g.failed("ada", "evil", 0).await.unwrap(), Outcome::Counted);
    assert_eq!(g.failed("ada", "evil", 0).await.unwrap(), locked(10, false));
    assert!(g.reserve("ada", "evil", 5).await.is_err());
    drop(g.reserve("ada", "evil", 10).await.unwrap());
    assert_eq!(
        g.failed("ada", "evil", 10).await.unwrap(),
        locked(20, false)
    );
    assert_eq!(
        g.failed("ada", "evil", 10).await.unwrap(),
        locked(40, false)
    );
    assert_eq!(
        g.failed("ada", "evil2", 10).await.unwrap(),
        locked(10, true)
    );
    assert!(
        g.reserve("ada", "cafe", 11).await.is_err(),
        "account-wide lock for unknown devices"
    );
    assert!(
        g.reserve("ada", "home", 11).await.is_ok(),
        "the known device still signs in"
    );
    assert_eq!(
        g.failed("ada", "evil", 60).await.unwrap(),
        locked(40, false),
        "capped"
    );
}

/// Records what a replica hears.
#[derive(Default)]
struct Heard {
    changes: Mutex<Vec<Invalidation>>,
    gaps: Mutex<u32>,
}

impl Listener for Heard {
    fn apply(&self, change: &Invalidation) {
        // A busy replica: the publisher must wait for it, not merely for Redis.
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.changes.lock().unwrap().push(change.clone());
    }
    fn forget_all(&self) {
        *self.gaps.lock().unwrap() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_share_limits_lockouts_devices_and_invalidations() {
    let (url, prefix) = (redis_url().await, unique_redis_prefix());
    let a = Shared::connect(&url, &prefix, None).await.unwrap();
    let b = Shared::connect(&url, &prefix, None).await.unwrap();
    let cfg = RateLimitConfig {
        login_ip: Limit::new(4, 1),
        lockout_threshold: 2,
        ..Default::default()
    };
    let (limit_a, limit_b) = (
        tessera::abuse::Limiter::new(cfg.clone(), a.clone()),
        tessera::abuse::Limiter::new(cfg.clone(), b.clone()),
    );
    // Requests spread over both replicas meet one limit.
    for l in [&limit_a, &limit_b, &limit_a, &limit_b] {
        assert!(l.check(Class::LoginIp, "198.51.100.1", 0).await.is_ok());
    }
    assert!(
        limit_a
            .check(Class::LoginIp, "198.51.100.1", 0)
            .await
            .is_err()
    );
    assert!(
        limit_b
            .check(Class::LoginIp, "198.51.100.1", 0)
            .await
            .is_err()
    );
    // A lockout made on A holds on B; a device known on A is known on B.
    let (guard_a, guard_b) = (guard(&a, cfg.clone()), guard(&b, cfg));
    assert_eq!(
        guard_a.failed("bob", "ip", 0).await.unwrap(),
        Outcome::Counted
    );
    assert!(matches!(
        guard_a.failed("bob", "ip", 0).await.unwrap(),
        Outcome::Locked { .. }
    ));
    assert!(guard_b.reserve("bob", "ip", 1).await.is_err());
    guard_a.succeeded("bob", "office").await;
    assert!(guard_b.is_known("bob", "office").await);
    // A ceremony started on A finishes on B (the WebAuthn state is shared), once.
    a.stash("ceremony", b"sealed", 60).await.unwrap();
    assert_eq!(
        b.take_stashed("ceremony").await.unwrap(),
        Some(b"sealed".to_vec())
    );
    assert_eq!(a.take_stashed("ceremony").await.unwrap(), None);
    // Invalidations published by A reach B, and not another deployment's prefix.
    let heard = Arc::new(Heard::default());
    tokio::spawn(b.clone().listen(heard.clone()));
    let other = Shared::connect(&url, &unique_redis_prefix(), None)
        .await
        .unwrap();
    eventually(5, "B's subscription", || {
        let b = b.clone();
        async move { b.caches_trusted() }
    })
    .await;
    other.publish(&Invalidation::User("elsewhere".into())).await;
    a.publish(&Invalidation::Session("tss_x".into())).await;
    a.publish(&Invalidation::Client("c1".into())).await;
    // Applied on B by the time A's publish returns (a logout on A is refused on B at once).
    assert_eq!(
        *heard.changes.lock().unwrap(),
        vec![
            Invalidation::Session("tss_x".into()),
            Invalidation::Client("c1".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_goes_away_limits_fall_back_lockout_fails_closed_and_caches_are_bypassed() {
    let mut server = PrivateRedis::start().await;
    let state = Shared::connect(&server.url(), "t:", None).await.unwrap();
    let heard = Arc::new(Heard::default());
    tokio::spawn(state.clone().listen(heard.clone()));
    let trusted = |want: bool| {
        let state = state.clone();
        async move { state.caches_trusted() == want }
    };
    eventually(5, "the subscription", || trusted(true)).await;
    let cfg = RateLimitConfig {
        register_ip: Limit::new(2, 1),
        ..Default::default()
    };
    let limiter = tessera::abuse::Limiter::new(cfg.clone(), state.clone());
    let g = guard(&state, cfg);
    server.stop();
    // Rate limits: the in-process bucket takes over and still limits.
    assert!(limiter.check(Class::RegisterIp, "ip", 0).await.is_ok());
    assert!(limiter.check(Class::RegisterIp, "ip", 0).await.is_ok());
    assert!(limiter.check(Class::RegisterIp, "ip", 0).await.is_err());
    // Lockout: no password check while the counters are out of reach.
    assert!(matches!(
        g.reserve("ada", "ip", 0).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        g.failed("ada", "ip", 0).await,
        Err(Error::Unavailable(_))
    ));
    // Ceremony state: refused (503), never kept where another replica cannot find it.
    assert!(matches!(
        state.stash("ceremony", b"x", 60).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        state.take_stashed("ceremony").await,
        Err(Error::Unavailable(_))
    ));
    // Caches: not trusted while invalidations cannot arrive, emptied when they can again.
    eventually(25, "the lost subscription to be noticed", || trusted(false)).await;
    let gaps = *heard.gaps.lock().unwrap();
    assert!(
        gaps >= 2,
        "emptied at the first subscription and at the loss"
    );
    server.restart().await;
    eventually(30, "the subscription to come back", || trusted(true)).await;
    assert!(
        *heard.gaps.lock().unwrap() > gaps,
        "emptied again on return"
    );
    eventually(10, "lockout to work again", || {
        let g = g.clone();
        async move { g.reserve("ada", "ip", 0).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_at_start_up_is_an_error_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let err = Shared::connect(&url, "t:", None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("redis-server"), "says how to start it: {err}");
    assert!(
        !err.contains("hunter2"),
        "no password in the message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_is_refused_with_503_while_redis_is_down_and_tokens_keep_working() {
    let mut server = PrivateRedis::start().await;
    let url = server.url();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some(url.into());
        c.redis_prefix = unique_redis_prefix();
    })
    .await;
    let tokens = app.signed_in("ada@example.com").await;
    server.stop();
    let res = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE, "{}", res.text);
    assert!(res.body["error"].is_string(), "a JSON error: {}", res.text);
    let me = app.get("/identity/me", &tokens.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let res = app
        .post(
            "/auth/register",
            json!({"email": "bo@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
}

/// `rediss://` goes through rustls (aws-lc-rs) and verifies the server's certificate: against
/// `TESSERA_REDIS_CA_FILE` when set, so a server signed by an unknown authority is refused at
/// start-up with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_configured_authority() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start_tls(dir.path()).await;
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");

    let err = Shared::connect(&url, "t:", None)
        .await
        .err()
        .expect("a certificate from an unknown authority is refused")
        .to_string();
    assert!(err.contains(&format!("localhost:{}", server.port)), "{err}");

    let ca = server.ca_file();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some(url.into());
        c.redis_prefix = unique_redis_prefix();
        c.redis_ca_file = Some(ca);
    })
    .await;
    app.register("ada@example.com").await;
    // A password login reserves its attempt in Redis: it fails closed (503) if TLS does not work.
    let res = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let wrong = app.login("ada@example.com", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text);
}
