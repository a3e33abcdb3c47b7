//! Sessions: refresh rotation, reuse detection, grace window, logout, listing and revocation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, Tokens, assert_error};
use crate::on_both_backends;

on_both_backends!(
    refresh_rotates_the_token,
    refresh_and_grants_with_cold_caches_need_one_connection,
    reused_refresh_token_revokes_the_whole_session,
    a_rotated_out_refresh_token_is_reuse_by_default,
    a_configured_grace_honours_a_twin_only_until_its_successor_is_used,
    refresh_tokens_expire,
    sessions_end_at_their_absolute_lifetime,
    logout_with_bearer_revokes_access_tokens_at_once,
    logout_with_refresh_token_ends_that_session,
    logout_all_ends_every_session,
    sessions_are_listed_and_revocable_by_their_owner_only,
    access_tokens_expire,
    refresh_tokens_are_stored_only_as_hashes,
    housekeeping_deletes_only_rows_nothing_will_read_again,
    housekeeping_deletes_millions_in_batches_and_keeps_live_rows,
    a_rotation_marks_the_token_used_adds_its_successor_and_touches_the_session,
    a_refused_refresh_writes_nothing,
    write_transactions_wait_their_turn,
    a_checkpoint_copies_the_wal_back_beside_the_writer,
    no_write_skips_the_writer_queue,
);

async fn refresh_rotates_the_token(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t0 = app.signed_in("a@example.com").await;
    app.clock.advance(60);
    let res = app.refresh(&t0.refresh).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.headers["cache-control"], "no-store");
    let t1 = Tokens::from(&res.body);
    assert_ne!(t1.refresh, t0.refresh);
    assert_ne!(t1.access, t0.access);
    assert_eq!(
        app.get("/identity/me", &t1.access).await.status,
        StatusCode::OK
    );
    let t2 = Tokens::from(&app.refresh(&t1.refresh).await.body);
    assert_eq!(
        app.get("/identity/me", &t2.access).await.status,
        StatusCode::OK
    );
}

async fn reused_refresh_token_revokes_the_whole_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t0 = app.signed_in("b@example.com").await;
    let t1 = Tokens::from(&app.refresh(&t0.refresh).await.body);
    app.clock.advance(app.config.refresh_reuse_grace as i64 + 1);
    // An attacker replays the stolen, already rotated token.
    assert_error(
        &app.refresh(&t0.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    // The whole family is gone: the legitimate client's newer tokens stop working at once.
    assert_error(
        &app.refresh(&t1.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    assert_error(
        &app.get("/identity/me", &t1.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.get("/identity/me", &t0.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // Other sessions of the user are unaffected.
    let other = Tokens::from(&app.login("b@example.com", PASSWORD).await.body);
    assert_eq!(
        app.get("/identity/me", &other.access).await.status,
        StatusCode::OK
    );
}

/// RFC 9700 §4.14.2 with no grace (the default): presenting a rotated-out token at once, in
/// the same second, is reuse and ends the family.
async fn a_rotated_out_refresh_token_is_reuse_by_default(b: Backend) {
    let app = TestApp::spawn(b).await;
    assert_eq!(app.config.refresh_reuse_grace, 0);
    let t0 = app.signed_in("c@example.com").await;
    let r1 = app.refresh(&t0.refresh).await;
    assert_eq!(r1.status, StatusCode::OK, "{}", r1.text);
    let t1 = Tokens::from(&r1.body);
    assert_error(
        &app.refresh(&t0.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    assert_error(
        &app.refresh(&t1.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
}

/// With a grace configured, a concurrent twin gets a sibling token; once a successor has been
/// used, the rotated-out token is reuse even within the grace.
async fn a_configured_grace_honours_a_twin_only_until_its_successor_is_used(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.refresh_reuse_grace = 5).await;
    let t0 = app.signed_in("c@example.com").await;
    let (r1, r2) = tokio::join!(app.refresh(&t0.refresh), app.refresh(&t0.refresh));
    assert_eq!(r1.status, StatusCode::OK, "{}", r1.text);
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.text);
    let (a, b2) = (Tokens::from(&r1.body), Tokens::from(&r2.body));
    assert_ne!(a.refresh, b2.refresh);
    // One of them carries on; now the original is reuse, though still within the grace.
    let next = app.refresh(&a.refresh).await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.text);
    assert_error(
        &app.refresh(&t0.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    // ... and the family is gone.
    assert_error(
        &app.refresh(&Tokens::from(&next.body).refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
}

async fn refresh_tokens_expire(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.refresh_token_ttl = 3600).await;
    let t0 = app.signed_in("d@example.com").await;
    app.clock.advance(3599);
    let t1 = Tokens::from(&app.refresh(&t0.refresh).await.body);
    app.clock.advance(3600);
    assert_error(
        &app.refresh(&t1.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
}

async fn sessions_end_at_their_absolute_lifetime(b: Backend) {
    let app = TestApp::spawn_with(b, |c| {
        c.refresh_token_ttl = 3600;
        c.session_max_age = 5000;
    })
    .await;
    let mut t = app.signed_in("e@example.com").await;
    for _ in 0..4 {
        app.clock.advance(1200);
        let res = app.refresh(&t.refresh).await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(res.body["refresh_expires_in"].as_i64().unwrap() <= 3600);
        t = Tokens::from(&res.body);
    }
    app.clock.advance(201);
    assert_error(
        &app.refresh(&t.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
}

async fn logout_with_bearer_revokes_access_tokens_at_once(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("f@example.com").await;
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
    let res = app
        .request(Method::POST, "/auth/logout", Some(&t.access), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_error(
        &app.get("/identity/me", &t.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.refresh(&t.refresh).await,
        StatusCode::UNAUTHORIZED,
        "invalid_grant",
    );
    // Logging out again with the dead token is refused.
    assert_error(
        &app.request(Method::POST, "/auth/logout", Some(&t.access), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

async fn logout_with_refresh_token_ends_that_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("g@example.com").await;
    let other = Tokens::from(&app.login("g@example.com", PASSWORD).await.body);
    let res = app
        .post("/auth/logout", json!({"refresh_token": t.refresh}))
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_error(
        &app.get("/identity/me", &t.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_eq!(
        app.get("/identity/me", &other.access).await.status,
        StatusCode::OK
    );
    // Unknown or malformed refresh tokens are answered the same way.
    assert_eq!(
        app.post("/auth/logout", json!({"refresh_token": "tsr_unknown"}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let res = app.request(Method::POST, "/auth/logout", None, None).await;
    assert_error(&res, StatusCode::UNAUTHORIZED, "unauthenticated");
}

async fn logout_all_ends_every_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    let a = app.signed_in("h@example.com").await;
    let b2 = Tokens::from(&app.login("h@example.com", PASSWORD).await.body);
    let stranger = app.signed_in("stranger@example.com").await;
    let res = app
        .request(Method::POST, "/auth/logout?all=true", Some(&a.access), None)
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    for t in [&a, &b2] {
        assert_error(
            &app.get("/identity/me", &t.access).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert_error(
            &app.refresh(&t.refresh).await,
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
        );
    }
    assert_eq!(
        app.get("/identity/me", &stranger.access).await.status,
        StatusCode::OK
    );
}

async fn sessions_are_listed_and_revocable_by_their_owner_only(b: Backend) {
    let app = TestApp::spawn(b).await;
    let a = app.signed_in("i@example.com").await;
    app.clock.advance(10);
    let a2 = Tokens::from(&app.login("i@example.com", PASSWORD).await.body);
    let mallory = app.signed_in("mallory@example.com").await;
    let res = app.get("/identity/sessions", &a.access).await;
    assert_eq!(res.status, StatusCode::OK);
    let list = res.body["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|s| s["created_at"].is_string()
        && s["last_used_at"].is_string()
        && s["ip"] == "127.0.0.1"));
    let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let other_id = list.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Another user cannot revoke it (and cannot learn it exists).
    let res = app
        .request(
            Method::DELETE,
            &format!("/identity/sessions/{other_id}"),
            Some(&mallory.access),
            None,
        )
        .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.get("/identity/me", &a2.access).await.status,
        StatusCode::OK
    );
    let res = app
        .request(
            Method::DELETE,
            &format!("/identity/sessions/{other_id}"),
            Some(&a.access),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    assert_error(
        &app.get("/identity/me", &a2.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_eq!(
        app.get("/identity/sessions", &a.access).await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let res = app
        .request(
            Method::DELETE,
            &format!("/identity/sessions/{}", "x".repeat(5000)),
            Some(&a.access),
            None,
        )
        .await;
    assert_error(&res, StatusCode::NOT_FOUND, "not_found");
}

async fn access_tokens_expire(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("j@example.com").await;
    app.clock.advance(899);
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
    app.clock.advance(1);
    assert_error(
        &app.get("/identity/me", &t.access).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // The refresh token still gets a fresh one.
    let t2 = Tokens::from(&app.refresh(&t.refresh).await.body);
    assert_eq!(
        app.get("/identity/me", &t2.access).await.status,
        StatusCode::OK
    );
}

async fn refresh_tokens_are_stored_only_as_hashes(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("k@example.com").await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM refresh_tokens")
        .fetch_all(app.state.store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].0, t.refresh);
    assert!(!rows[0].0.contains(&t.refresh[4..]));
    assert_eq!(rows[0].0, tessera::crypto::token_hash(&t.refresh));
}

async fn housekeeping_deletes_only_rows_nothing_will_read_again(b: Backend) {
    let app = TestApp::spawn(b).await;
    let count = |table: &'static str| {
        let pool = app.state.store.pool().clone();
        async move {
            let (n,): (i64,) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n
        }
    };
    let ended = app.signed_in("old@example.com").await;
    assert_eq!(
        app.request(Method::POST, "/auth/logout", Some(&ended.access), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    app.state
        .revoked
        .revoke(&app.state.store, "some-jti", app.clock.now() + 60)
        .await
        .unwrap();
    // The registration's verification link is live for a day.
    assert_eq!(count("email_tokens").await, 1);
    // Nothing is dead yet.
    assert_eq!(
        tessera::app::purge_expired(&app.state.store, app.clock.now())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        (count("sessions").await, count("revoked_tokens").await),
        (1, 1)
    );
    // 31 days later: the ended session (with its refresh token) and the revoked id go; a
    // session started now stays.
    app.clock.advance(31 * 24 * 3600);
    let live = crate::helpers::Tokens::from(&app.login("old@example.com", PASSWORD).await.body);
    let deleted = tessera::app::purge_expired(&app.state.store, app.clock.now())
        .await
        .unwrap();
    assert!(
        deleted >= 4,
        "session, refresh token, revoked id, verification link: {deleted}"
    );
    assert_eq!(count("email_tokens").await, 0, "the expired link is gone");
    assert_eq!(
        (
            count("sessions").await,
            count("refresh_tokens").await,
            count("revoked_tokens").await
        ),
        (1, 1, 0)
    );
    assert_eq!(
        app.get("/identity/me", &live.access).await.status,
        StatusCode::OK
    );
    assert_eq!(app.refresh(&live.refresh).await.status, StatusCode::OK);
}

/// Refresh and the token grants read the tenant inside their transaction. With one database
/// connection and cold caches, a read that went to the pool instead would wait forever for a
/// connection the transaction itself holds.
async fn refresh_and_grants_with_cold_caches_need_one_connection(b: Backend) {
    let app = TestApp::spawn_with(b, |c| c.database_max_connections = 1).await;
    let t = app.signed_in("ada@example.com").await;
    let c = crate::oauth::register_client(&app, false, &["password"], &["openid"]).await;
    app.state.tenants.forget_all();
    let res = tokio::time::timeout(std::time::Duration::from_secs(20), app.refresh(&t.refresh))
        .await
        .expect("refresh hung with one connection");
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    app.state.tenants.forget_all();
    let grant = crate::oauth::token(
        &app,
        Some((&c.id, c.secret.as_deref().unwrap())),
        &[
            ("grant_type", "password"),
            ("username", "ada@example.com"),
            ("password", crate::helpers::PASSWORD),
        ],
    );
    let (status, _, body) = tokio::time::timeout(std::time::Duration::from_secs(20), grant)
        .await
        .expect("the password grant hung with one connection");
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// More expired rows than one batch holds: every batch goes, live rows stay.
async fn housekeeping_deletes_millions_in_batches_and_keeps_live_rows(b: Backend) {
    let app = TestApp::spawn(b).await;
    let live = app.signed_in("live@example.com").await;
    let pool = app.state.store.pool().clone();
    let (session_id, user_id): (String, String) =
        sqlx::query_as("SELECT id, user_id FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
    let now = app.clock.now();
    let batch = tessera::app::PURGE_BATCH as usize;
    let (tokens, sessions) = (2 * batch + 7, batch + 1);
    let mut tx = app.state.store.begin().await.unwrap();
    for i in 0..tokens {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(format!("expired-{i}"))
        .bind(&session_id)
        .bind(now - 7200)
        .bind(now - 1 - i as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    let ended = now - tessera::store::housekeeping::ENDED_SESSION_RETENTION - 1;
    for i in 0..sessions {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at) \
             VALUES ($1, $2, $3, $3, $3)",
        )
        .bind(format!("ended-{i}"))
        .bind(&user_id)
        .bind(ended - i as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let deleted = tessera::app::purge_expired(&app.state.store, now)
        .await
        .unwrap();
    assert_eq!(deleted, (tokens + sessions) as u64);
    let (left_tokens, left_sessions): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM refresh_tokens), (SELECT COUNT(*) FROM sessions)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (left_tokens, left_sessions),
        (1, 1),
        "the live session and its token"
    );
    assert_eq!(app.refresh(&live.refresh).await.status, StatusCode::OK);
    // Nothing left: the next pass deletes nothing.
    assert_eq!(
        tessera::app::purge_expired(&app.state.store, now)
            .await
            .unwrap(),
        0
    );
}

/// A rotation is one round trip on either backend: all three of its writes land.
async fn a_rotation_marks_the_token_used_adds_its_successor_and_touches_the_session(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t0 = app.signed_in("r@example.com").await;
    app.clock.advance(90);
    let now = app.clock.now();
    let t1 = Tokens::from(&app.refresh(&t0.refresh).await.body);
    let pool = app.state.store.pool().clone();
    let token = |raw: &str| {
        let (pool, hash) = (pool.clone(), tessera::crypto::token_hash(raw));
        async move {
            let row: (i64, Option<i64>) = sqlx::query_as(
                "SELECT issued_at, used_at FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    assert_eq!(token(&t0.refresh).await, (now - 90, Some(now)));
    assert_eq!(token(&t1.refresh).await, (now, None));
    let (last_used, families): (i64, i64) =
        sqlx::query_as("SELECT MAX(last_used_at), COUNT(*) FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((last_used, families), (now, 1));
    // The rotated-out token changes nothing when presented again, except ending the family.
    assert_eq!(
        app.refresh(&t0.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(token(&t1.refresh).await, (now, None));
}

/// A rotation is written before it is decided on: every refusal rolls it back, so the
/// presented token stays unused and no successor is left behind.
async fn a_refused_refresh_writes_nothing(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.register("ann@example.com").await;
    let pw = crate::oauth::register_client(
        &app,
        false,
        &["password", "refresh_token"],
        &["openid", "email", "offline_access"],
    )
    .await;
    let other = crate::oauth::register_client(&app, false, &["refresh_token"], &["openid"]).await;
    let auth = Some((pw.id.as_str(), pw.secret.as_deref().unwrap()));
    let (status, _, body) = crate::oauth::token(
        &app,
        auth,
        &[
            ("grant_type", "password"),
            ("username", "ann@example.com"),
            ("password", PASSWORD),
            ("scope", "openid offline_access"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let pool = app.state.store.pool().clone();
    let state = || {
        let pool = pool.clone();
        async move {
            let row: (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COUNT(used_at) FROM refresh_tokens \
                 JOIN sessions s ON s.id = refresh_tokens.session_id WHERE s.client_id IS NOT NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    let before = state().await;
    assert_eq!(before, (1, 0));
    let form = |scope: Option<&'static str>| {
        let mut f = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        f.extend(scope.map(|s| ("scope", s)));
        f
    };
    // Beyond the granted scope (RFC 6749 §6: invalid_scope).
    let (status, _, body) = crate::oauth::token(&app, auth, &form(Some("openid email"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    assert_eq!(state().await, before);
    // Presented by another client (RFC 6749 §6: bound to the client it was issued to).
    let (status, _, body) = crate::oauth::token(
        &app,
        Some((other.id.as_str(), other.secret.as_deref().unwrap())),
        &form(None),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(state().await, before);
    // The token still works, once.
    let (status, _, body) = crate::oauth::token(&app, auth, &form(None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state().await, (2, 1));
}

/// SQLite: the server's checkpoint copies every frame the WAL holds back into the database, on
/// its own connection, while a write transaction is open on the writer (nothing to do on
/// PostgreSQL).
async fn a_checkpoint_copies_the_wal_back_beside_the_writer(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.signed_in("wal@example.com").await;
    let store = &app.state.store;
    let mut open = store.begin().await.unwrap();
    sqlx::query("UPDATE sessions SET last_used_at = last_used_at + 1")
        .execute(&mut *open)
        .await
        .unwrap();
    let checkpoint = tokio::time::timeout(std::time::Duration::from_secs(5), store.checkpoint())
        .await
        .expect("the checkpoint waited for the writer")
        .unwrap();
    open.commit().await.unwrap();
    match b {
        Backend::Sqlite => {
            let (frames, copied) = checkpoint.expect("SQLite checkpoints");
            assert!(frames > 0, "the sign-in was written to the WAL");
            assert_eq!(copied, frames, "every committed frame is in the database");
        }
        Backend::Postgres => assert_eq!(checkpoint, None),
    }
}

/// Write transactions queued behind one that holds the lock all complete once it commits, none
/// losing another's update. On SQLite, where one writer runs at a time, they run in the order
/// they arrived (a housekeeping batch holds a request back by one batch, never by a lottery of
/// busy-handler sleeps).
async fn write_transactions_wait_their_turn(b: Backend) {
    use futures_util::future::{FutureExt, maybe_done};
    use std::sync::{Arc, Mutex};

    let app = TestApp::spawn(b).await;
    app.signed_in("queue@example.com").await;
    let store = app.state.store.clone();
    let bump = "UPDATE sessions SET last_used_at = last_used_at + 1";
    let before: (i64,) = sqlx::query_as("SELECT last_used_at FROM sessions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let mut holder = store.begin().await.unwrap();
    sqlx::query(bump).execute(&mut *holder).await.unwrap();

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for i in 0..8 {
        let (store, order) = (store.clone(), order.clone());
        let mut writer = maybe_done(
            async move {
                let mut tx = store.begin().await?;
                sqlx::query(bump).execute(&mut *tx).await?;
                order.lock().unwrap().push(i);
                tx.commit().await
            }
            .boxed(),
        );
        // One poll puts it in the queue, behind the writers before it.
        std::future::poll_fn(|cx| {
            let _ = writer.poll_unpin(cx);
            std::task::Poll::Ready(())
        })
        .await;
        writers.push(tokio::spawn(async move {
            (&mut writer).await;
            std::pin::Pin::new(&mut writer)
                .take_output()
                .expect("the writer's result")
        }));
    }
    assert!(
        order.lock().unwrap().is_empty(),
        "a writer ran while another transaction held the lock"
    );
    holder.commit().await.unwrap();
    for w in writers {
        tokio::time::timeout(std::time::Duration::from_secs(20), w)
            .await
            .expect("a queued writer hung")
            .unwrap()
            .unwrap();
    }
    let after: (i64,) = sqlx::query_as("SELECT last_used_at FROM sessions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(after.0 - before.0, 9, "every update landed");
    if b == Backend::Sqlite {
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }
}

/// On SQLite every write goes through the writer connection: the shared pool refuses writes
/// (`query_only`), so a write path handed the pool fails in the tests instead of bypassing
/// the queue. On PostgreSQL the writer is the pool itself.
async fn no_write_skips_the_writer_queue(b: Backend) {
    let app = TestApp::spawn(b).await;
    app.signed_in("reader@example.com").await;
    let store = &app.state.store;
    let bump = "UPDATE sessions SET last_used_at = last_used_at + 1";
    let on_pool = sqlx::query(bump).execute(store.pool()).await;
    match b {
        Backend::Sqlite => {
            let err = on_pool.expect_err("the shared pool refuses writes on SQLite");
            assert!(err.to_string().contains("readonly"), "{err}");
        }
        Backend::Postgres => assert!(on_pool.is_ok(), "{on_pool:?}"),
    }
    let on_writer = sqlx::query(bump).execute(store.writer()).await.unwrap();
    assert_eq!(on_writer.rows_affected(), 1);
    // Reads on the pool still work, and see the write.
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}
