//! One schema, two backends: after all migrations, SQLite and PostgreSQL have the same tables
//! with the same columns and the same triggers on them, and the two migration folders have the
//! same versions.

use std::collections::BTreeSet;

use crate::helpers::{Backend, TestApp};

async fn columns(app: &TestApp, backend: Backend) -> BTreeSet<(String, String)> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'"
        }
        Backend::Postgres => {
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name NOT LIKE '_sqlx%'"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .fetch_all(app.state.store.pool())
        .await
        .unwrap();
    rows.into_iter().collect()
}

/// (trigger, table) pairs: the guards of the audit log live in triggers, so a trigger missing
/// on one backend is a rule that holds on the other only.
async fn triggers(app: &TestApp, backend: Backend) -> BTreeSet<(String, String)> {
    let sql = match backend {
        Backend::Sqlite => "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'",
        Backend::Postgres => {
            "SELECT DISTINCT trigger_name::text, event_object_table::text \
             FROM information_schema.triggers WHERE trigger_schema = current_schema()"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .fetch_all(app.state.store.pool())
        .await
        .unwrap();
    rows.into_iter().collect()
}

fn versions(folder: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_have_the_same_tables_columns_and_triggers() {
    assert_eq!(
        versions("migrations/sqlite"),
        versions("migrations/postgres"),
        "every migration exists in both folders under the same name"
    );
    let sqlite = TestApp::spawn(Backend::Sqlite).await;
    let postgres = TestApp::spawn(Backend::Postgres).await;
    let (s, p) = (
        columns(&sqlite, Backend::Sqlite).await,
        columns(&postgres, Backend::Postgres).await,
    );
    assert!(s.len() > 50, "{s:?}");
    let only_sqlite: Vec<_> = s.difference(&p).collect();
    let only_postgres: Vec<_> = p.difference(&s).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "only in SQLite: {only_sqlite:?}\nonly in PostgreSQL: {only_postgres:?}"
    );
    let (s, p) = (
        triggers(&sqlite, Backend::Sqlite).await,
        triggers(&postgres, Backend::Postgres).await,
    );
    assert!(!s.is_empty(), "the audit log's triggers exist");
    assert_eq!(s, p, "the same triggers on the same tables");
}
