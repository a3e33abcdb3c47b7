//! Property-based tests: parsers and token validation never panic on arbitrary input, and no
//! arbitrary or mutated token ever validates.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use crate::clock::Clock;
use crate::keys::jwt::AccessClaims;
use crate::keys::{KeyConfig, Keys};

struct Fixture {
    rt: tokio::runtime::Runtime,
    keys: Keys,
    token: String,
    _dir: tempfile::TempDir,
}

const NOW: i64 = 1_800_000_000;

/// One key set (on a temporary SQLite store) shared by every case.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = crate::Config::load_from(None, &[]).expect("config");
        config.data_dir = dir.path().to_path_buf();
        config.signing_alg = "ES256".into();
        let keys = rt.block_on(async {
            let store = crate::core::open_store(&config).await.expect("store");
            let master = Arc::new(crate::crypto::MasterKey::generate());
            Keys::load(
                store,
                master,
                KeyConfig::from_config(&config),
                Clock::fixed(NOW).now(),
            )
            .await
            .expect("keys")
        });
        let claims = AccessClaims {
            iss: config.issuer.clone(),
            sub: "user".into(),
            aud: config.audience().to_string(),
            exp: NOW + 60,
            iat: NOW,
            nbf: NOW,
            jti: "j".into(),
            sid: Some("s".into()),
            client_id: "tessera".into(),
            scope: None,
            roles: vec![],
            email_verified: Some(true),
            tid: None,
            tenant_roles: Vec::new(),
            api_key: false,
            permissions: Vec::new(),
            amr: vec!["pwd".into()],
            acr: None,
        };
        let token = keys.sign_access_token(&claims).expect("sign");
        Fixture {
            rt,
            keys,
            token,
            _dir: dir,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn form_parsing_never_panics_and_never_returns_duplicates(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(params) = crate::oauth::parse_params(&bytes) {
            let mut names: Vec<&str> = params.0.iter().map(|(k, _)| k.as_str()).collect();
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), n);
        }
    }

    #[test]
    fn token_shape_checks_never_panic(s in ".{0,200}") {
        let _ = crate::sessions::well_formed(&s);
        let _ = crate::oauth::pkce::verify_s256(&s, &s);
        let _ = crate::oauth::scope::parse(&s);
        let _ = crate::oauth::clients::validate_redirect_uri(&s);
        let _ = crate::accounts::validate_email("email", &s);
    }

    #[test]
    fn arbitrary_strings_never_validate_as_tokens(s in "[A-Za-z0-9_.=-]{0,400}") {
        let f = fixture();
        prop_assert!(f.rt.block_on(f.keys.verify_access_token(&s, NOW)).is_err());
    }

    #[test]
    fn any_mutation_of_a_valid_token_is_rejected(pos in 0usize..10_000, byte in any::<u8>()) {
        let f = fixture();
        prop_assert!(f.rt.block_on(f.keys.verify_access_token(&f.token, NOW)).is_ok());
        let mut bytes = f.token.clone().into_bytes();
        let i = pos % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(f.rt.block_on(f.keys.verify_access_token(&mutated, NOW)).is_err(), "mutated at {}", i);
    }
}
