//! The shape the code keeps, checked on its source: dependencies point one way
//! (`http` -> `app` -> domain -> `core`), and `sessions` is the only opener and revoker of
//! sessions. A new file that breaks either rule fails here.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(path relative to src/, code lines without comments)` of every source file.
fn code() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found the sources");
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            (rel, code.join("\n"))
        })
        .collect()
}

#[test]
fn only_http_and_app_know_of_http() {
    // `config` validates trusted proxies with the HTTP layer's parser: the one known exception.
    let allowed = |f: &str| f.starts_with("http/") || f == "app.rs" || f == "lib.rs";
    for (file, code) in code() {
        if allowed(&file) {
            continue;
        }
        assert!(!code.contains("axum"), "{file} uses axum");
        assert!(!code.contains("crate::app::"), "{file} imports app");
        if file != "config.rs" {
            assert!(!code.contains("crate::http::"), "{file} imports http");
        }
    }
}

#[test]
fn only_sessions_opens_or_revokes_a_session() {
    // The store's session writes, called through their module (`store_sessions::…`).
    let writes = [
        "::insert_session(",
        "::insert_refresh_token(",
        "::revoke_session(",
        "::revoke_user_sessions(",
    ];
    let mut seen_in_sessions = 0;
    for (file, code) in code() {
        let hits: Vec<&&str> = writes.iter().filter(|w| code.contains(**w)).collect();
        if file.starts_with("sessions/") {
            seen_in_sessions += hits.len();
            continue;
        }
        if file == "store/sessions.rs" {
            continue;
        }
        assert!(hits.is_empty(), "{file} writes sessions directly: {hits:?}");
    }
    assert!(seen_in_sessions >= 3, "the check looks at the right names");
}
