//! The store: one schema on SQLite (embedded default) or PostgreSQL (production), chosen by the
//! URL. SQL is written once in the subset both share (`$1` placeholders work on both) and runs
//! through sqlx's `Any` driver; a query branches per backend only where the dialect differs.
//! Functions take any executor, so the same one runs on the pool or inside a transaction.

pub mod api_keys;
pub mod audit;
pub mod backup;
pub mod domains;
pub mod federation;
pub mod housekeeping;
pub mod invitations;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod mfa;
pub mod oauth;
pub mod outbox;
pub mod roles;
pub mod secrets;
pub mod sessions;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

/// A transaction on either backend.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a connection (or transaction) talks to.
    pub fn of(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How often a server checkpoints an SQLite database ([`Store::checkpoint`]).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: the one connection write transactions run on (see [`Store::begin`]).
    writer: Option<AnyPool>,
    /// SQLite only: the connection that copies the WAL back into the database (see
    /// [`Store::checkpoint`]), opened on first use.
    checkpointer: Option<AnyPool>,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let sqlite_dir = sqlite_path(url).and_then(|p| p.parent().map(|d| d.to_path_buf()));
        if let Some(dir) = sqlite_dir.filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            crate::files::private_dir(&dir)?;
        }
        let options = AnyConnectOptions::from_str(url).context("parsing the database URL")?;
        // `read_only`: the shared pool on SQLite. Its connections refuse every write
        // (`query_only`), so no write can bypass the writer's queue (see `Store::writer`).
        let connect = |max: u32, min: u32, read_only: bool| {
            let pool = AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(min)
                .acquire_timeout(Duration::from_secs(10));
            if backend == Backend::Sqlite {
                // No ping before handing out a connection: an embedded database has no far end
                // that could have hung up, and each ping is a round trip to the connection's
                // worker thread (sqlx still pings once when a connection comes back, which also
                // flushes the rollback of a dropped transaction).
                let pool = pool.test_before_acquire(false);
                // wal_autocheckpoint, the fallback of the server's own checkpoints beside the
                // writer (`Store::checkpoint`), and the only checkpoint of other processes (the
                // CLI): a checkpoint every 10 000 WAL pages (about 40 MB) instead
                // of SQLite's 1 000. Pages written again and again (index roots, the last leaf
                // of an append-only table) are copied back once per checkpoint, so fewer
                // checkpoints copy and fsync less: the hosted code flow uses about 8% less CPU
                // at concurrency 16. journal_size_limit: a WAL that grew past 64 MB (readers
                // holding a checkpoint back) is truncated to that once a checkpoint has reset
                // it.
                pool.after_connect(move |conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA wal_autocheckpoint = 10000; \
                             PRAGMA journal_size_limit = 67108864;",
                        )
                        .await?;
                        if read_only {
                            conn.execute("PRAGMA query_only = ON;").await?;
                        }
                        Ok(())
                    })
                })
            } else {
                pool
            }
        };
        let context = || {
            format!(
                "connecting to the database at {}",
                crate::config::redact_url(url)
            )
        };
        // SQLite keeps one shared connection open at all times; PostgreSQL opens them on demand.
        let readers_kept = u32::from(backend == Backend::Sqlite);
        let pool = connect(max_connections, readers_kept, backend == Backend::Sqlite)
            .connect_with(options.clone())
            .await
            .with_context(context)?;
        let writer = match backend {
            Backend::Sqlite => Some(
                connect(1, 1, false)
                    .connect_with(options)
                    .await
                    .with_context(context)?,
            ),
            Backend::Postgres => None,
        };
        let checkpointer = match backend {
            Backend::Sqlite => Some(connect(1, 0, false).connect_lazy_with(
                AnyConnectOptions::from_str(url).context("parsing the database URL")?,
            )),
            Backend::Postgres => None,
        };
        // The database (and its WAL files) hold password hashes and sealed keys: owner-only.
        if let Some(path) = sqlite_path(url) {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                crate::files::private_file(std::path::Path::new(&file))?;
            }
        }
        Ok(Self {
            pool,
            writer,
            checkpointer,
            backend,
        })
    }

    /// Applies pending versioned migrations for this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(self.writer())
            .await
            .context("applying database migrations")?;
        Ok(())
    }

    /// The shared pool, for reads. On SQLite its connections are read-only (`query_only`):
    /// write with [`Store::begin`] or [`Store::writer`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The executor of a single write outside a transaction (a lease, a touch, an audit entry):
    /// on SQLite the writer connection, so the write queues in arrival order with the write
    /// transactions ([`Store::begin`]) instead of meeting them at SQLite's lock; on PostgreSQL
    /// the shared pool.
    pub fn writer(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// Every pool: the shared one and, on SQLite, the writer's.
    pub fn pools(&self) -> impl Iterator<Item = &AnyPool> {
        std::iter::once(&self.pool).chain(self.writer.as_ref())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction.
    ///
    /// On SQLite, which admits one writer at a time, every write transaction runs on one
    /// dedicated connection: writers wait for it in the pool's first-come, first-served queue,
    /// inside the runtime, instead of in SQLite's busy handler, which sleeps and polls (1, 2, 5,
    /// … 100 ms) and lets a late writer overtake one that has waited long. A request then
    /// waits behind the transactions queued before it and no longer (a housekeeping batch
    /// among them), and the connection's statement cache stays warm for the write paths.
    /// Single writes go through the same connection ([`Store::writer`]); the lock is still
    /// taken up front (`BEGIN IMMEDIATE`), so that another process on the file (a CLI command,
    /// a backup) cannot make a transaction that reads before it writes fail half-way.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match &self.writer {
            Some(writer) => writer.begin_with("BEGIN IMMEDIATE").await,
            None => self.pool.begin().await,
        }
    }

    /// SQLite: copies what the WAL holds back into the database file, without waiting for
    /// readers or writers (`PRAGMA wal_checkpoint(PASSIVE)`); returns the WAL's frames and how
    /// many of them are now in the database. Nothing to do on PostgreSQL.
    ///
    /// The server calls it every [`CHECKPOINT_INTERVAL`] from a task of its own, so the copy and
    /// its fsync happen beside the writer and not inside a request's commit: SQLite's own
    /// checkpoint (`wal_autocheckpoint`, left as the fallback) runs in the commit that crosses
    /// the threshold, and every write queued behind it waits for the fsync.
    pub async fn checkpoint(&self) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let Some(checkpointer) = &self.checkpointer else {
            return Ok(None);
        };
        let (_busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(checkpointer)
                .await?;
        Ok(Some((frames, copied)))
    }

    /// Readiness: can the database answer a query?
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.close().await;
        }
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }
}

fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path.into())
    }
}

/// Whether a looked-up key can exist in the store at all. PostgreSQL refuses text containing
/// NUL (an error, not "no row"); nothing Tessera stores contains one, so a lookup for such a key
/// answers "not found" without asking the database.
pub fn storable(key: &str) -> bool {
    !key.contains('\0')
}

/// True when `err` is a unique-constraint violation (on either backend).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
