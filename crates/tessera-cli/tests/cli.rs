//! The `tessera` binary, run as a user would: zero-config serve, user and key commands,
//! configuration errors.
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected result"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn tessera(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TESSERA_LOG", "warn")
        .env("TESSERA_PASSWORD__ARGON2_MEMORY_KIB", "64")
        .env("TESSERA_PASSWORD__ARGON2_ITERATIONS", "1");
    cmd
}

/// Longest a CLI command may run in a test before it is killed and the test fails.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A child process that is killed when the test ends, passing or panicking.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = Running(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    if let Some(input) = stdin {
        child
            .0
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.0.stdin.take());
    // Read the pipes on their own threads so a chatty command cannot block on a full pipe.
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).map(|_| v)
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut v).map(|_| v)
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < COMMAND_TIMEOUT,
            "{cmd:?} did not finish within {COMMAND_TIMEOUT:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn user_create_prints_stable_json_and_user_list_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "Admin@Example.com",
            "--password-stdin",
            "--verified",
            "--role",
            "admin",
            "--json",
        ]),
        Some("a long operator passphrase\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "email",
            "email_verified",
            "id",
            "roles",
            "status"
        ]
    );
    assert_eq!(user["email"], "Admin@Example.com");
    assert_eq!(user["email_verified"], true);
    assert_eq!(user["roles"], serde_json::json!(["admin"]));
    assert!(!text(&out.stdout).contains("passphrase"));

    let out = run(tessera(dir.path()).args(["user", "list", "--json"]), None);
    assert!(out.status.success());
    let listed: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(listed, user);

    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "admin@example.com",
            "--password-stdin",
        ]),
        Some("another passphrase\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "b@example.com",
            "--password-stdin",
        ]),
        Some("short\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("at least 8 characters"),
        "{}",
        text(&out.stderr)
    );

    // The whole policy applies: breached passwords and the email's name are refused.
    for (password, message) in [
        (
            "Password123\n",
            "password: is too common (found in a list of breached passwords)",
        ),
        (
            "bertha likes tea\n",
            "password: must not contain your email address",
        ),
    ] {
        let out = run(
            tessera(dir.path()).args([
                "user",
                "create",
                "--email",
                "bertha@example.com",
                "--password-stdin",
            ]),
            Some(password),
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
    }

    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "c@example.com",
            "--password-hash",
            "plaintext",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "c@example.com",
            "--role",
            "god",
        ]),
        None,
    );
    assert!(
        text(&out.stderr).contains("unknown role"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn keys_rotate_schedules_or_switches_now_and_revoke_withdraws() {
    let dir = tempfile::tempdir().unwrap();
    let rotate = |args: &[&str]| -> Value {
        let out = run(tessera(dir.path()).args(args), None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let list = || -> Vec<Value> {
        let out = run(tessera(dir.path()).args(["keys", "list", "--json"]), None);
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first = rotate(&["keys", "rotate", "--now", "--json"]);
    let scheduled = rotate(&["keys", "rotate", "--alg", "ES256", "--json"]);
    assert_eq!(scheduled["alg"], "ES256");
    let state_of = |keys: &[Value], kid: &Value| {
        keys.iter().find(|k| &k["kid"] == kid).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let keys = list();
    assert_eq!(state_of(&keys, &first["kid"]), "current");
    assert!(
        state_of(&keys, &scheduled["kid"]).starts_with("published, current from"),
        "{keys:?}"
    );
    // A second schedule while one is pending is refused; --now switches to the scheduled key.
    let out = run(tessera(dir.path()).args(["keys", "rotate"]), None);
    assert_eq!(out.status.code(), Some(1));
    let now = rotate(&["keys", "rotate", "--now", "--json"]);
    assert_eq!(now["kid"], scheduled["kid"]);
    let keys = list();
    assert_eq!(state_of(&keys, &scheduled["kid"]), "current");
    assert!(state_of(&keys, &first["kid"]).starts_with("retired, published until"));
    // Emergency revocation of the current key: withdrawn and replaced.
    let revoked = rotate(&[
        "keys",
        "revoke",
        scheduled["kid"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(revoked["was"], "active");
    let keys = list();
    assert_eq!(state_of(&keys, &scheduled["kid"]), "revoked");
    assert_eq!(keys.iter().filter(|k| k["state"] == "current").count(), 1);
    let out = run(
        tessera(dir.path()).args(["keys", "revoke", "no-such-kid"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    // Key ids are base64url: one may begin with `-` and is still a key id, not an option.
    let out = run(
        tessera(dir.path()).args(["keys", "revoke", "-Lno-such-kid"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !text(&out.stderr).contains("unexpected argument"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        tessera(dir.path()).args(["keys", "rotate", "--alg", "HS256"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn invalid_configuration_names_the_key_and_check_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        tessera(dir.path())
            .env("TESSERA_ACCESS_TOKEN_TTL", "soon")
            .arg("check-config"),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("TESSERA_ACCESS_TOKEN_TTL"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        tessera(dir.path())
            .env("TESSERA_SIGNING_ALG", "none")
            .arg("serve"),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("TESSERA_SIGNING_ALG"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        tessera(dir.path())
            .env(
                "TESSERA_DATABASE_URL",
                "postgres://tessera:hunter2@db.internal/tessera",
            )
            .env(
                "TESSERA_MASTER_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            )
            .arg("check-config"),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let cfg: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        cfg["database_url"],
        "postgres://tessera:<redacted>@db.internal/tessera"
    );
    assert_eq!(cfg["master_key"], "<redacted>");
    assert!(!stdout.contains("hunter2") && !stdout.contains("MDEyMzQ1"));
}

#[test]
fn serve_starts_with_zero_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        tessera(dir.path())
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_LOG", "info")
            .env("TESSERA_LOG_FORMAT", "json")
            .arg("serve")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut warned = false;
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        warned |= line.contains("TESSERA_MASTER_KEY");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(addr) = v["addr"].as_str() {
            break addr.to_string();
        }
    };
    assert!(warned, "no warning about the development master key");
    let data = dir.path().join("tessera-data");
    assert!(data.join("tessera.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("master.key")), 0o600);
        assert_eq!(mode(&data.join("tessera.db")), 0o600, "database");
        assert_eq!(mode(&data), 0o700, "data directory");
    }
    let body = std::thread::spawn(move || {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .write_all(
                b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .join()
    .unwrap();
    drop(child);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains(r#""alg":"RS256""#), "{body}");
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn events_webhooks_and_deactivation_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        tessera(dir.path()).args([
            "user",
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
            "--json",
        ]),
        Some("a long user passphrase\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();

    let out = run(tessera(dir.path()).args(["events", "list", "--json"]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = json_lines(&out);
    // The user, then their personal tenant.
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1]["envelope"]["event_type"],
        "identity.tenant.created.v1"
    );
    assert_eq!(events[1]["envelope"]["data"]["created_by"], user["id"]);
    assert_eq!(events[0]["status"], "pending");
    assert_eq!(
        events[0]["envelope"]["event_type"],
        "identity.user.registered.v1"
    );
    assert_eq!(events[0]["envelope"]["subject"], user["id"]);
    assert_eq!(events[0]["envelope"]["data"]["source"], "operator");
    let out = run(
        tessera(dir.path()).args(["events", "list", "--failed", "--json"]),
        None,
    );
    assert!(out.status.success());
    assert!(json_lines(&out).is_empty());

    let out = run(
        tessera(dir.path()).args([
            "webhooks",
            "add",
            "https://hooks.example.com/tessera",
            "--events",
            "identity.user.registered.v1,identity.user.deactivated.v1",
            "--json",
        ]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hook: Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let out = run(
        tessera(dir.path()).args(["webhooks", "list", "--json"]),
        None,
    );
    let listed = json_lines(&out);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], hook["id"]);
    assert!(
        !text(&out.stdout).contains(secret),
        "the secret is shown once"
    );
    let out = run(
        tessera(dir.path()).args(["webhooks", "add", "https://x.test", "--events", "nope"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown event type"));

    let out = run(
        tessera(dir.path()).args(["user", "deactivate", "--email", "ops@example.com"]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        tessera(dir.path()).args(["user", "deactivate", "--email", "ops@example.com"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let out = run(tessera(dir.path()).args(["events", "list", "--json"]), None);
    let types: Vec<String> = json_lines(&out)
        .iter()
        .map(|e| e["envelope"]["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "identity.user.registered.v1",
            "identity.tenant.created.v1",
            "identity.user.deactivated.v1"
        ]
    );

    let id = hook["id"].as_str().unwrap();
    let out = run(tessera(dir.path()).args(["webhooks", "remove", id]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        tessera(dir.path()).args(["webhooks", "list", "--json"]),
        None,
    );
    assert!(json_lines(&out).is_empty());

    // Every one of these operator actions is in the audit log, done by `system`.
    let out = run(tessera(dir.path()).args(["audit", "list", "--json"]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries = json_lines(&out);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "webhook.create",
            "user.deactivate",
            "webhook.delete"
        ]
    );
    assert!(entries.iter().all(|e| e["actor_type"] == "system"));
    let user_id = entries[0]["target_id"].as_str().unwrap();
    let out = run(
        tessera(dir.path()).args([
            "audit", "list", "--json", "--target", user_id, "--result", "success",
        ]),
        None,
    );
    assert_eq!(json_lines(&out).len(), 2);
    let out = run(
        tessera(dir.path()).args(["audit", "list", "--result", "maybe"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("result: must be success or failure"));
    // Within retention, a purge deletes nothing.
    let out = run(tessera(dir.path()).args(["audit", "purge"]), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 audit entries older than 365 days deleted"));
}

#[test]
fn client_commands_register_rotate_and_deactivate() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        tessera(dir.path()).args([
            "client",
            "create",
            "--name",
            "Billing",
            "--redirect-uri",
            "https://billing.example.com/cb",
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--scope",
            "openid",
            "--scope",
            "email",
            "--json",
        ]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["client_id"].as_str().unwrap().to_string();
    let secret = created["client_secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("tc_") && secret.starts_with("tcs_"));
    assert_eq!(
        created["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    let out = run(
        tessera(dir.path()).args(["client", "get", &id, "--json"]),
        None,
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        got.get("client_secret").is_none(),
        "the secret is shown once"
    );
    let out = run(
        tessera(dir.path()).args(["client", "rotate-secret", &id, "--json"]),
        None,
    );
    let rotated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    let out = run(
        tessera(dir.path()).args([
            "client",
            "update",
            &id,
            "--redirect-uri",
            "http://evil.example/cb",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("loopback"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        tessera(dir.path()).args(["client", "deactivate", &id, "--json"]),
        None,
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"],
        "deactivated"
    );
    let out = run(
        tessera(dir.path()).args([
            "client",
            "create",
            "--name",
            "SPA",
            "--public",
            "--grant",
            "client_credentials",
        ]),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a public client cannot use client_credentials"
    );
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    // Neither reads the configuration: a broken one does not stop them.
    let broken = |cmd: &mut Command| {
        cmd.env("TESSERA_ACCESS_TOKEN_TTL", "not a number");
    };
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = tessera(dir.path());
        broken(&mut cmd);
        let out = run(cmd.args(["completions", shell]), None);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["tessera", "check-config", "rotate", "purge"] {
            assert!(script.contains(word), "{shell} completion without {word}");
        }
    }
    let mut cmd = tessera(dir.path());
    broken(&mut cmd);
    let out = run(cmd.arg("man"), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tessera"),
        "{page}"
    );
    assert!(page.contains("identity and access management"));
    let out = run(tessera(dir.path()).args(["completions", "tcsh"]), None);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn backup_and_restore_round_trip_the_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let create = |email: &str| {
        let out = run(
            tessera(dir.path()).args(["user", "create", "--email", email, "--json"]),
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let emails = || -> Vec<String> {
        let out = run(tessera(dir.path()).args(["user", "list", "--json"]), None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        json_lines(&out)
            .iter()
            .map(|u| u["email"].as_str().unwrap().to_string())
            .collect()
    };
    create("kept@example.com");
    let backup = dir.path().join("tessera-backup.db");
    let out = run(
        tessera(dir.path()).args(["backup", backup.to_str().unwrap()]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A second backup to the same file is refused, not overwritten.
    let out = run(
        tessera(dir.path()).args(["backup", backup.to_str().unwrap()]),
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
    create("after@example.com");
    assert_eq!(emails(), ["kept@example.com", "after@example.com"]);

    // Without --force an existing database is kept.
    let out = run(
        tessera(dir.path()).args(["restore", backup.to_str().unwrap()]),
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    // Not a database: refused before anything is touched.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database").unwrap();
    let out = run(
        tessera(dir.path()).args(["restore", junk.to_str().unwrap(), "--force"]),
        None,
    );
    assert!(!out.status.success());
    assert_eq!(emails(), ["kept@example.com", "after@example.com"]);

    let out = run(
        tessera(dir.path()).args(["restore", backup.to_str().unwrap(), "--force"]),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(emails(), ["kept@example.com"], "the state of the backup");

    // PostgreSQL: advice, not a half-made file.
    let out = run(
        tessera(dir.path())
            .env(
                "TESSERA_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )
            .args(["backup", dir.path().join("pg.db").to_str().unwrap()]),
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("pg_dump"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("pg.db").exists());
}
