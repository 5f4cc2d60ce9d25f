//! The gateway's embedded database: one SQLite file in the data folder,
//! opened in WAL mode, with its schema built by an ordered migration list.
//!
//! Other modules append their tables to [`MIGRATIONS`]; a migration is never
//! edited once it has shipped, because `PRAGMA user_version` records how many
//! of them a database has already applied.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

/// File name of the database inside the data folder.
pub const DATABASE_FILE: &str = "ferry-gateway.sqlite3";

/// Schema migrations, applied in order. Entry `n` moves the database from
/// `user_version = n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: sandbox directory, SMART authorization state, FHIR documents.
    r#"
    CREATE TABLE practitioners (
        id          TEXT PRIMARY KEY,
        role        TEXT NOT NULL CHECK (role IN ('clinician', 'imaging-staff')),
        family      TEXT NOT NULL,
        given       TEXT NOT NULL,
        npi         TEXT NOT NULL
    );
    CREATE TABLE patients (
        id          TEXT PRIMARY KEY,
        family      TEXT NOT NULL,
        given       TEXT NOT NULL,
        gender      TEXT NOT NULL,
        birth_date  TEXT NOT NULL,
        mrn         TEXT NOT NULL UNIQUE
    );
    CREATE TABLE token_families (
        id          TEXT PRIMARY KEY,
        client_id   TEXT NOT NULL,
        subject     TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        revoked_at  INTEGER
    );
    CREATE TABLE authorization_codes (
        code_sha256     TEXT PRIMARY KEY,
        client_id       TEXT NOT NULL,
        redirect_uri    TEXT NOT NULL,
        code_challenge  TEXT NOT NULL,
        subject         TEXT NOT NULL,
        scope           TEXT NOT NULL,
        patient         TEXT,
        nonce           TEXT,
        expires_at      INTEGER NOT NULL,
        redeemed_at     INTEGER,
        family_id       TEXT REFERENCES token_families(id)
    );
    CREATE TABLE refresh_tokens (
        token_sha256    TEXT PRIMARY KEY,
        family_id       TEXT NOT NULL REFERENCES token_families(id),
        scope           TEXT NOT NULL,
        patient         TEXT,
        issued_at       INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL,
        rotated_at      INTEGER
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
    CREATE TABLE access_tokens (
        jti         TEXT PRIMARY KEY,
        family_id   TEXT NOT NULL REFERENCES token_families(id),
        expires_at  INTEGER NOT NULL,
        revoked_at  INTEGER
    );
    CREATE INDEX access_tokens_family ON access_tokens(family_id);
    CREATE TABLE document_references (
        id          TEXT PRIMARY KEY,
        patient_id  TEXT NOT NULL REFERENCES patients(id),
        created_at  INTEGER NOT NULL,
        resource    TEXT NOT NULL
    );
    CREATE INDEX document_references_patient ON document_references(patient_id);
    "#,
    // 2: grant API uploads, deny list, checkpoints.
    crate::repository::MIGRATION,
    // 3: audit index.
    crate::audit::MIGRATION,
    // 4: checkpoints keyed by log.
    crate::repository::CHECKPOINTS_BY_LOG_MIGRATION,
    // 5: ImagingStudy resources registered by uploads.
    crate::fhir::imaging::MIGRATION,
    // 6: completion requests kept for completions cut short.
    crate::repository::COMPLETION_REQUEST_MIGRATION,
    // 7: refresh token successors, for the grace period after a rotation.
    r#"
    ALTER TABLE refresh_tokens ADD COLUMN successor_sha256 TEXT;
    ALTER TABLE refresh_tokens ADD COLUMN grace_used_at INTEGER;
    "#,
    // 8: checkpoints keyed by subject.
    crate::repository::CHECKPOINTS_BY_SUBJECT_MIGRATION,
];

/// Errors opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("failed to open the database {path}: {source}; check that the data folder is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this gateway's {known}; \
         use a newer ferry-gateway or another data folder"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("failed to apply database migration {index}: {source}")]
    Migrate {
        index: usize,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database query failed: {0}")]
    Query(#[from] rusqlite::Error),
}

/// Shared handle to the database connection.
///
/// One connection behind a mutex: every statement the gateway runs is short,
/// so requests wait on each other only briefly.
#[derive(Clone)]
pub struct Db {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database in `data_dir` and applies the
    /// pending migrations.
    pub fn open(data_dir: &Path) -> Result<Db, DbError> {
        let path = data_dir.join(DATABASE_FILE);
        let open_error = |source| DbError::Open {
            path: path.clone(),
            source,
        };

        let mut connection = Connection::open(&path).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_error)?;

        migrate(&mut connection, &path)?;
        Ok(Db {
            connection: Arc::new(Mutex::new(connection)),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the connection for a short synchronous use.
    ///
    /// A panic while the lock was held leaves the connection usable (SQLite
    /// rolls back an unfinished transaction), so a poisoned lock is recovered.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` on the connection on the blocking thread pool.
    pub async fn call<T, F>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || work(&mut db.lock()))
            .await
            .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    }
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), DbError> {
    let applied: usize = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| DbError::Open {
            path: path.to_owned(),
            source,
        })?;
    if applied > MIGRATIONS.len() {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found: applied,
            known: MIGRATIONS.len(),
        });
    }

    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let migrate_error = |source| DbError::Migrate {
            index: index + 1,
            source,
        };
        let transaction = connection.transaction().map_err(migrate_error)?;
        transaction.execute_batch(sql).map_err(migrate_error)?;
        transaction
            .pragma_update(None, "user_version", index + 1)
            .map_err(migrate_error)?;
        transaction.commit().map_err(migrate_error)?;
        tracing::info!(migration = index + 1, "applied database migration");
    }
    Ok(())
}
