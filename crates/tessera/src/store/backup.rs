//! `tessera backup` and `tessera restore` for the embedded SQLite database. PostgreSQL has its
//! own tools ([`POSTGRES_ADVICE`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Backend, Store};

/// What to do instead on PostgreSQL.
pub const POSTGRES_ADVICE: &str = "the database is PostgreSQL: back it up with its own tools, \
for example `pg_dump --format=custom --file=tessera.dump \"$TESSERA_DATABASE_URL\"`, and \
restore with `pg_restore --clean --if-exists --dbname=\"$TESSERA_DATABASE_URL\" tessera.dump` \
while Tessera is stopped";

/// The file of a `sqlite://PATH?…` URL.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// A consistent copy of the live database in `to` (SQLite `VACUUM INTO`: online, while the
/// service runs, in one read transaction). `to` must not exist.
pub async fn backup(store: &Store, to: &Path) -> anyhow::Result<()> {
    if store.backend() != Backend::Sqlite {
        bail!("{POSTGRES_ADVICE}");
    }
    if to.exists() {
        bail!("{} exists already; name a new file", to.display());
    }
    let target = to.to_str().context("the backup path must be UTF-8")?;
    // A reader connection, not the writer: the copy is one long read transaction, and writers
    // go on meanwhile. `VACUUM INTO` counts as a write for `query_only` (it writes the copy),
    // so the connection allows it for this statement only, and is dropped from the pool if it
    // cannot be made read-only again.
    let mut conn = store.pool().acquire().await?;
    sqlx::query("PRAGMA query_only = OFF")
        .execute(&mut *conn)
        .await?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&mut *conn)
        .await;
    if sqlx::query("PRAGMA query_only = ON")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        drop(conn.detach());
    }
    copied.with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

/// Checks that `file` is an intact Tessera database: SQLite's integrity check passes and it
/// has Tessera's migrations and tables. Returns the newest migration it has.
pub async fn check(file: &Path) -> anyhow::Result<i64> {
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let (ok,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .context("not an SQLite database")?;
    if ok != "ok" {
        bail!("{} fails SQLite's integrity check: {ok}", file.display());
    }
    let (version,): (Option<i64>,) =
        sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .context("not a Tessera database (no migrations)")?;
    sqlx::query("SELECT COUNT(*) FROM users")
        .execute(&mut conn)
        .await
        .context("not a Tessera database (no users table)")?;
    conn.close().await?;
    let version = version.context("not a Tessera database (no migration applied)")?;
    let known = newest_migration();
    if version > known {
        bail!(
            "{} was made by a newer Tessera (schema {version}; this one knows up to {known}): \
             restore it with that version",
            file.display()
        );
    }
    Ok(version)
}

/// The newest SQLite migration this build carries.
fn newest_migration() -> i64 {
    super::SQLITE_MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default()
}

/// Replaces the database at `database` with the backup `from`, after [`check`]ing it: copied
/// beside the target, then renamed over it (a crash leaves the old or the new file, never half
/// of one), with the old write-ahead log removed. Tessera must be stopped. An existing database
/// is only replaced with `force`.
pub async fn restore(from: &Path, database: &Path, force: bool) -> anyhow::Result<i64> {
    let version = check(from).await?;
    if database.exists() && !force {
        bail!(
            "{} exists: stop Tessera, then pass --force to replace it",
            database.display()
        );
    }
    if let Some(dir) = database.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial = database.with_extension("db.restoring");
    std::fs::copy(from, &partial).with_context(|| format!("copying to {}", partial.display()))?;
    // On disk before it replaces anything: a crash after the rename must not find a file whose
    // blocks were never written.
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", partial.display()))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", database.display()));
        if side.exists() {
            std::fs::remove_file(&side).with_context(|| format!("removing {}", side.display()))?;
        }
    }
    std::fs::rename(&partial, database)
        .with_context(|| format!("moving the restored file to {}", database.display()))?;
    // The rename itself is durable once its directory is synced.
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with Tessera's tables and a migration newer than this build's.
    async fn database_of_schema(path: &Path, version: i64) {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        for sql in [
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL)",
            "CREATE TABLE users (id TEXT PRIMARY KEY)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        sqlx::query("INSERT INTO _sqlx_migrations (version, success) VALUES ($1, TRUE)")
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    #[tokio::test]
    async fn restore_refuses_a_backup_of_a_newer_schema_and_takes_a_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("tessera.db");
        let newer = dir.path().join("newer.db");
        database_of_schema(&newer, newest_migration() + 1).await;
        let err = restore(&newer, &target, false).await.unwrap_err();
        assert!(format!("{err:#}").contains("newer Tessera"), "{err:#}");
        assert!(!target.exists(), "nothing was restored");

        let known = dir.path().join("known.db");
        database_of_schema(&known, newest_migration()).await;
        assert_eq!(
            restore(&known, &target, false).await.unwrap(),
            newest_migration()
        );
        assert!(target.exists());
    }
}
