//! Access tokens and keys: claims, JWKS, validation of forged and broken tokens, rotation,
//! algorithms.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::keys::jwt::{AccessClaims, sign};
use tessera::keys::{Alg, Keys};

use crate::helpers::{Backend, PASSWORD, TestApp, assert_error};
use crate::on_both_backends;

on_both_backends!(
    access_token_has_the_documented_claims_and_verifies_with_the_jwks,
    jwks_publishes_public_keys_only_and_is_cacheable,
    validation_rejects_forged_and_broken_tokens,
    rotation_keeps_earlier_tokens_valid_until_they_expire,
    es256_and_eddsa_keys_work_end_to_end,
    hs256_is_used_only_when_configured_and_never_published,
    a_token_verified_before_its_key_is_revoked_is_refused_after,
);

fn part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

async fn access_token_has_the_documented_claims_and_verifies_with_the_jwks(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("a@example.com").await;
    let header = part(&t.access, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    let claims = part(&t.access, 1);
    for key in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "sid",
        "roles",
        "email_verified",
        "client_id",
    ] {
        assert!(claims.get(key).is_some(), "{key} missing from {claims}");
    }
    assert_eq!(claims["iss"], app.config.issuer.as_str());
    assert_eq!(claims["aud"], app.config.issuer.as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    // An off-the-shelf JOSE library validates it with nothing but the published JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(
        &app.request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
            .await
            .text,
    )
    .unwrap();
    let jwk = jwks
        .find(header["kid"].as_str().unwrap())
        .expect("kid in JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[&app.config.issuer]);
    v.set_audience(&[&app.config.issuer]);
    v.validate_exp = false; // the service runs on a fixed clock in the future
    let data = jsonwebtoken::decode::<Value>(&t.access, &key, &v).unwrap();
    assert_eq!(data.claims["sid"], claims["sid"]);
}

async fn jwks_publishes_public_keys_only_and_is_cacheable(b: Backend) {
    let app = TestApp::spawn(b).await;
    let res = app
        .request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["content-type"], "application/json");
    assert!(
        res.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let keys = res.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (k["kty"].as_str(), k["alg"].as_str(), k["use"].as_str()),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    assert!(k["kid"].is_string() && k["n"].is_string() && k["e"] == "AQAB");
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(
            k.get(private).is_none(),
            "private member {private} published"
        );
    }
    // The private key is stored sealed, not as plain DER.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT private_key FROM signing_keys")
        .fetch_one(app.state.store.pool())
        .await
        .unwrap();
    let master = tessera::app::load_master_key(&app.config).unwrap();
    let der = master.open(k["kid"].as_str().unwrap(), &sealed).unwrap();
    assert!(
        !sealed
            .windows(16)
            .any(|w| der.windows(16).next() == Some(w)),
        "private key readable in the database"
    );
}

/// Signs arbitrary header and claims with `secret` as HS256.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!(
        "{input}.{}",
        B64.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()))
    )
}

async fn validation_rejects_forged_and_broken_tokens(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("b@example.com").await;
    let now = app.clock.now();
    let good: AccessClaims = serde_json::from_value(part(&t.access, 1)).unwrap();
    let header = part(&t.access, 0);
    let kid = header["kid"].as_str().unwrap().to_string();
    let set = app.state.keys.current();
    let resign = |edit: &dyn Fn(&mut AccessClaims)| {
        let mut c = good.clone();
        edit(&mut c);
        app.state.keys.sign_access_token(&c).unwrap()
    };
    let jwks = app
        .request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await
        .text;
    let [h, p, s]: [&str; 3] = t.access.split('.').collect::<Vec<_>>().try_into().unwrap();
    let tampered_claims = {
        let mut c = part(&t.access, 1);
        c["roles"] = json!(["admin"]);
        B64.encode(c.to_string())
    };
    let mut bad_sig = s.to_string();
    bad_sig.replace_range(10..11, if &s[10..11] == "A" { "B" } else { "A" });
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{p}.",
                B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string())
            ),
        ),
        (
            "alg none, original signature",
            format!(
                "{}.{p}.{s}",
                B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": kid}).to_string())
            ),
        ),
        (
            "HS256 signed with the public key",
            hs256(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
                &part(&t.access, 1),
                jwks.as_bytes(),
            ),
        ),
        (
            "unknown kid",
            format!(
                "{}.{p}.{s}",
                B64.encode(
                    json!({"alg": "RS256", "typ": "at+jwt", "kid": "not-a-key"}).to_string()
                )
            ),
        ),
        (
            "no kid",
            format!(
                "{}.{p}.{s}",
                B64.encode(json!({"alg": "RS256", "typ": "at+jwt"}).to_string())
            ),
        ),
        (
            "wrong typ (an ID token or plain JWT)",
            sign(set.signing_key(), "JWT", &good).unwrap(),
        ),
        (
            "wrong iss",
            resign(&|c| c.iss = "https://evil.example".into()),
        ),
        (
            "wrong aud",
            resign(&|c| c.aud = "https://other-api.example".into()),
        ),
        ("expired", resign(&|c| c.exp = now)),
        ("not yet valid", resign(&|c| c.nbf = now + 60)),
        ("tampered payload", format!("{h}.{tampered_claims}.{s}")),
        ("tampered signature", format!("{h}.{p}.{bad_sig}")),
        ("garbage", "not.a.jwt".into()),
        ("two parts", format!("{h}.{p}")),
        ("huge", format!("{h}.{}.{s}", "A".repeat(20_000))),
    ];
    for (name, token) in cases {
        let res = app.get("/identity/me", &token).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{name}: {}", res.text);
        assert_eq!(res.body["error"], "invalid_token", "{name}");
        assert!(
            res.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{name}"
        );
    }
    // The control: re-signing the unchanged claims is accepted, so the cases above fail for
    // the reason they name.
    assert_eq!(
        app.get("/identity/me", &resign(&|_| {})).await.status,
        StatusCode::OK
    );
}

async fn rotation_keeps_earlier_tokens_valid_until_they_expire(b: Backend) {
    let app = TestApp::spawn(b).await;
    let before = app.signed_in("c@example.com").await;
    let old_kid = part(&before.access, 0)["kid"].as_str().unwrap().to_string();
    let master = tessera::app::load_master_key(&app.config).unwrap();
    let new_kid = Keys::rotate(
        &app.state.store,
        &master,
        Alg::Rs256,
        "operator",
        app.clock.now(),
    )
    .await
    .unwrap();
    // Until this replica reloads, it keeps signing with the old key; both validate.
    let during = crate::helpers::Tokens::from(&app.login("c@example.com", PASSWORD).await.body);
    assert_eq!(part(&during.access, 0)["kid"], old_kid.as_str());
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let after = crate::helpers::Tokens::from(&app.login("c@example.com", PASSWORD).await.body);
    assert_eq!(part(&after.access, 0)["kid"], new_kid.as_str());
    for t in [&before, &during, &after] {
        assert_eq!(
            app.get("/identity/me", &t.access).await.status,
            StatusCode::OK
        );
    }
    let kids = |body: &Value| {
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let published = kids(
        &app.request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
            .await
            .body,
    );
    assert!(
        published.contains(&old_kid) && published.contains(&new_kid),
        "{published:?}"
    );
    // Once every token the old key signed has expired, it leaves the JWKS.
    let retention = tessera::keys::KeyConfig::from_config(&app.config).retention;
    app.clock.advance(retention + 1);
    app.state.keys.reload(app.clock.now()).await.unwrap();
    let published = kids(
        &app.request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
            .await
            .body,
    );
    assert_eq!(published, vec![new_kid]);
}

async fn es256_and_eddsa_keys_work_end_to_end(b: Backend) {
    for (alg, kty, crv) in [("ES256", "EC", "P-256"), ("EdDSA", "OKP", "Ed25519")] {
        let app = TestApp::spawn_with(b, |c| c.signing_alg = alg.into()).await;
        let t = app.signed_in("d@example.com").await;
        assert_eq!(part(&t.access, 0)["alg"], alg);
        assert_eq!(
            app.get("/identity/me", &t.access).await.status,
            StatusCode::OK,
            "{alg}"
        );
        let t2 = crate::helpers::Tokens::from(&app.refresh(&t.refresh).await.body);
        assert_eq!(
            app.get("/identity/me", &t2.access).await.status,
            StatusCode::OK,
            "{alg}"
        );
        let jwks = app
            .request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
            .await
            .body;
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str()),
            (Some(kty), Some(crv), Some(alg))
        );
        assert!(k.get("d").is_none());
    }
}

async fn hs256_is_used_only_when_configured_and_never_published(b: Backend) {
    let secret = "an HS256 secret that is long enough for the check";
    let app = TestApp::spawn_with(b, |c| {
        c.signing_alg = "HS256".into();
        c.hs256_secret = Some(secret.to_string().into());
    })
    .await;
    let t = app.signed_in("e@example.com").await;
    assert_eq!(part(&t.access, 0)["alg"], "HS256");
    assert_eq!(
        app.get("/identity/me", &t.access).await.status,
        StatusCode::OK
    );
    let jwks = app
        .request(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks.body, json!({"keys": []}));
    assert!(!jwks.text.contains("hs256"));
    // A token signed with another secret is refused.
    let forged = hs256(
        &part(&t.access, 0),
        &part(&t.access, 1),
        b"some other secret of enough length!!",
    );
    assert_error(
        &app.get("/identity/me", &forged).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

/// Verified signatures are remembered (`Keys::verify_access_token_for`): that must not outlive
/// the key that verified them.
async fn a_token_verified_before_its_key_is_revoked_is_refused_after(b: Backend) {
    let app = TestApp::spawn(b).await;
    let t = app.signed_in("a@example.com").await;
    for _ in 0..2 {
        assert_eq!(
            app.get("/identity/me", &t.access).await.status,
            StatusCode::OK
        );
    }
    let kid = part(&t.access, 0)["kid"].as_str().unwrap().to_string();
    let now = app.clock.now();
    Keys::revoke(
        &app.state.store,
        &app.state.master,
        Alg::Rs256,
        &kid,
        tessera::audit::By::system(&tessera::context::RequestContext::system()),
        now,
    )
    .await
    .unwrap()
    .expect("the key exists");
    app.state.keys.reload(now).await.unwrap();
    let res = app.get("/identity/me", &t.access).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text);
    // The same holds for introspection, which shares the check.
    let fresh = app.signed_in("b@example.com").await;
    assert_eq!(
        app.get("/identity/me", &fresh.access).await.status,
        StatusCode::OK
    );
}
