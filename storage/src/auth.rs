//! Who may use the API: people (argon2 password hashes, browser sessions)
//! and central servers (API tokens), each with a scope.
//!
//! Everything lives in the main database (its own tables, written through
//! this store's own connection: auth writes are rare and must not wait for
//! the detection writer's batches). Lookups, which come with every request,
//! are answered from memory; the cache is reloaded when another process (the
//! `vigil token` CLI) changed the tables, checked at most once a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::StorageError;

/// Prefix of every API token, so a leaked one is easy to recognise (and to
/// scan for in logs or repositories).
pub const TOKEN_PREFIX: &str = "vigil_";
pub const MIN_PASSWORD_LEN: usize = 8;
const MAX_PASSWORD_LEN: usize = 1024;
const MAX_NAME_LEN: usize = 64;
/// How stale the in-memory copy may be after a change by another process.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// A token's `last_used_ms` is written at most this often.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// What a caller may do: read everything, or also change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(AuthError::Invalid(format!(
                "scope {other:?}: use \"read\" or \"admin\""
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("that is the last admin; make another user admin first")]
    LastAdmin,
}

/// The schema's triggers refuse a change that would leave no admin
/// (migration 5); this tells that refusal from other database errors.
fn refused_last_admin(e: StorageError) -> AuthError {
    match &e {
        StorageError::Sqlite {
            source: rusqlite::Error::SqliteFailure(_, Some(message)),
            ..
        } if message.contains("vigil: the last admin") => AuthError::LastAdmin,
        _ => AuthError::Storage(e),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub scope: Scope,
    pub created_ms: i64,
}

/// An API token as listed; the secret itself is shown only once, at creation.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub scope: Scope,
    /// Must come back in `X-CSRF-Token` with every change the browser asks for.
    pub csrf: String,
    pub expires_ms: i64,
}

/// What the browser gets at login: the cookie value (never stored) and its session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub cookie: String,
    pub session: Session,
}

#[derive(Default)]
struct Cache {
    generation: i64,
    tokens: HashMap<String, (TokenInfo, [u8; 32])>,
    sessions: HashMap<[u8; 32], Session>,
}

pub struct AuthStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    cache: RwLock<Cache>,
    checked: Mutex<Instant>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal without an early exit, so timing says nothing about the secret.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether two secrets (a CSRF token, say) are equal, comparing their
/// hashes so timing says nothing about either.
pub fn same_secret(a: &str, b: &str) -> bool {
    same_hash(&sha256(a), &sha256(b))
}

pub fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{what} {name:?}: use 1-{MAX_NAME_LEN} letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

fn check_password(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        return Err(AuthError::Invalid(format!(
            "a password needs {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

impl AuthStore {
    /// Opens the auth tables of the database `prepare` made.
    pub fn open(db: &Path) -> Result<Self, StorageError> {
        let conn = crate::writer::open_read_write(db)?;
        let store = Self {
            path: db.to_path_buf(),
            conn: Mutex::new(conn),
            cache: RwLock::new(Cache {
                generation: -1,
                ..Default::default()
            }),
            checked: Mutex::new(Instant::now()),
        };
        store.reload()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
        crate::sqlite_err(&self.path)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one write and bumps the generation in the same transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let out = {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(self.err())?;
            let out = f(&tx).map_err(self.err())?;
            tx.execute("UPDATE auth_generation SET n = n + 1", [])
                .map_err(self.err())?;
            tx.commit().map_err(self.err())?;
            out
        };
        self.reload()?;
        Ok(out)
    }

    /// Re-reads tokens and sessions if anyone changed them.
    fn reload(&self) -> Result<(), StorageError> {
        let conn = self.conn();
        let generation: i64 = conn
            .query_row("SELECT n FROM auth_generation", [], |r| r.get(0))
            .map_err(self.err())?;
        if generation
            == self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .generation
        {
            return Ok(());
        }
        let mut tokens = HashMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT id, name, secret_hash, scope, created_ms, last_used_ms FROM api_tokens",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(2)?;
                let scope: String = r.get(3)?;
                Ok((
                    TokenInfo {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        scope: scope.parse().unwrap_or(Scope::Read),
                        created_ms: r.get(4)?,
                        last_used_ms: r.get(5)?,
                    },
                    hash,
                ))
            })
            .map_err(self.err())?;
        for row in rows {
            let (info, hash) = row.map_err(self.err())?;
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                tokens.insert(info.id.clone(), (info, hash));
            }
        }
        let mut sessions = HashMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT s.id_hash, s.user, u.scope, s.csrf, s.expires_ms
                 FROM sessions s JOIN users u ON u.name = s.user",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(0)?;
                let scope: String = r.get(2)?;
                Ok((
                    hash,
                    Session {
                        user: r.get(1)?,
                        scope: scope.parse().unwrap_or(Scope::Read),
                        csrf: r.get(3)?,
                        expires_ms: r.get(4)?,
                    },
                ))
            })
            .map_err(self.err())?;
        for row in rows {
            let (hash, session) = row.map_err(self.err())?;
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                sessions.insert(hash, session);
            }
        }
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = Cache {
            generation,
            tokens,
            sessions,
        };
        Ok(())
    }

    /// Picks up changes made by other processes, at most once a second.
    fn refresh(&self) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < RELOAD_CHECK {
                return;
            }
            *checked = Instant::now();
        }
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "cannot re-read tokens and sessions; using the last copy");
        }
    }

    pub fn has_users(&self) -> Result<bool, StorageError> {
        self.conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))
            .map_err(self.err())
    }

    pub fn users(&self) -> Result<Vec<User>, StorageError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, scope, created_ms FROM users ORDER BY name")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let scope: String = r.get(1)?;
                Ok(User {
                    name: r.get(0)?,
                    scope: scope.parse().unwrap_or(Scope::Read),
                    created_ms: r.get(2)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Creates the user, or sets a new password for an existing one (ending
    /// their sessions). `scope: None` keeps an existing user's scope and
    /// makes a new one `read`. Demoting the last admin is refused.
    pub fn set_user(
        &self,
        name: &str,
        password: &str,
        scope: Option<Scope>,
    ) -> Result<(), AuthError> {
        check_name("user name", name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let scope = scope.map(Scope::as_str);
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
            tx.execute(
                "INSERT INTO users (name, password_hash, scope, created_ms)
                 VALUES (?1, ?2, COALESCE(?3, 'read'), ?4)
                 ON CONFLICT (name) DO UPDATE SET password_hash = ?2, scope = COALESCE(?3, scope)",
                params![name, hash, scope, now_ms()],
            )
        })
        .map_err(refused_last_admin)?;
        Ok(())
    }

    /// Deletes the user and their sessions; the last admin is refused.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        let n = self
            .write(|tx| {
                tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
                tx.execute("DELETE FROM users WHERE name = ?1", [name])
            })
            .map_err(refused_last_admin)?;
        if n == 0 {
            return Err(AuthError::NotFound(format!("user {name:?}")));
        }
        Ok(())
    }

    /// On a first start no one can log in: makes user `admin` with a random
    /// password and returns it, to be shown once. `None` if users exist.
    pub fn ensure_admin(&self) -> Result<Option<String>, AuthError> {
        if self.has_users()? {
            return Ok(None);
        }
        let password = random_hex(12);
        self.set_user("admin", &password, Some(Scope::Admin))?;
        Ok(Some(password))
    }

    /// The user if the password is right. Slow on purpose (argon2), and as
    /// slow for an unknown user, so timing does not reveal who exists.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<Option<User>, AuthError> {
        let row: Option<(String, String, i64)> = self
            .conn()
            .query_row(
                "SELECT password_hash, scope, created_ms FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err())?;
        let (hash, user) = match row {
            Some((hash, scope, created_ms)) => (
                hash,
                Some(User {
                    name: name.to_string(),
                    scope: scope.parse()?,
                    created_ms,
                }),
            ),
            None => (dummy_hash().to_string(), None),
        };
        let parsed = PasswordHash::new(&hash).map_err(|e| AuthError::Hash(e.to_string()))?;
        let right = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(user.filter(|_| right))
    }

    pub fn create_session(&self, user: &User, ttl: Duration) -> Result<NewSession, AuthError> {
        let cookie = random_hex(32);
        let session = Session {
            user: user.name.clone(),
            scope: user.scope,
            csrf: random_hex(16),
            expires_ms: now_ms() + ttl.as_millis() as i64,
        };
        let now = now_ms();
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now])?;
            tx.execute(
                "INSERT INTO sessions (id_hash, user, csrf, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![
                    sha256(&cookie).as_slice(),
                    session.user,
                    session.csrf,
                    session.expires_ms
                ],
            )
        })?;
        Ok(NewSession { cookie, session })
    }

    /// The live session a cookie stands for.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        self.refresh();
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .sessions
            .get(&sha256(cookie))
            .filter(|s| s.expires_ms > now_ms())
            .cloned()
    }

    pub fn end_session(&self, cookie: &str) -> Result<(), StorageError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM sessions WHERE id_hash = ?1",
                [sha256(cookie).as_slice()],
            )
        })?;
        Ok(())
    }

    /// Makes a token; returns it listed and, once only, its full secret.
    pub fn create_token(&self, name: &str, scope: Scope) -> Result<(TokenInfo, String), AuthError> {
        check_name("token name", name)?;
        let id = random_hex(6);
        let secret = random_hex(24);
        let info = TokenInfo {
            id: id.clone(),
            name: name.to_string(),
            scope,
            created_ms: now_ms(),
            last_used_ms: None,
        };
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, scope, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    info.id,
                    info.name,
                    sha256(&secret).as_slice(),
                    scope.as_str(),
                    info.created_ms
                ],
            )
        })?;
        Ok((info, format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.refresh();
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<TokenInfo> = cache.tokens.values().map(|(t, _)| t.clone()).collect();
        list.sort_by_key(|t| t.created_ms);
        list
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), AuthError> {
        let n = self.write(|tx| tx.execute("DELETE FROM api_tokens WHERE id = ?1", [id]))?;
        if n == 0 {
            return Err(AuthError::NotFound(format!("token {id:?}")));
        }
        Ok(())
    }

    /// The token a `vigil_<id>_<secret>` string stands for, if it is valid.
    pub fn verify_token(&self, token: &str) -> Option<TokenInfo> {
        let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
        self.refresh();
        let (info, stale) = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let (info, hash) = cache.tokens.get(id)?;
            if !same_hash(hash, &sha256(secret)) {
                return None;
            }
            let now = now_ms();
            let stale = info
                .last_used_ms
                .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS);
            (info.clone(), stale.then_some(now))
        };
        if let Some(now) = stale {
            self.touch_token(id, now);
        }
        Some(info)
    }

    /// Records when a token was last used (for people deciding what to revoke).
    fn touch_token(&self, id: &str, now: i64) {
        if let Some((info, _)) = self
            .cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .tokens
            .get_mut(id)
        {
            info.last_used_ms = Some(now);
        }
        // Not a generation change: nobody's access changed.
        let result = self.conn().execute(
            "UPDATE api_tokens SET last_used_ms = ?1 WHERE id = ?2",
            params![now, id],
        );
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record a token's last use");
        }
    }
}

/// A valid argon2 hash of nothing anyone knows, verified against when the
/// user does not exist.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_hex(16)).expect("hashing a random password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, AuthStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::prepare(dir.path()).unwrap();
        let store = AuthStore::open(&db).unwrap();
        (dir, store)
    }

    #[test]
    fn first_start_makes_one_admin_whose_password_works() {
        let (_dir, store) = store();
        let password = store.ensure_admin().unwrap().expect("a new password");
        assert!(store.ensure_admin().unwrap().is_none(), "only once");
        let user = store.verify_password("admin", &password).unwrap().unwrap();
        assert_eq!(user.scope, Scope::Admin);
        assert!(store
            .verify_password("admin", "wrong-password")
            .unwrap()
            .is_none());
        assert!(store
            .verify_password("nobody", &password)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_last_admin_can_be_neither_demoted_nor_deleted() {
        let (dir, store) = store();
        store.ensure_admin().unwrap();
        store.set_user("ana", "correct horse", None).unwrap();
        let scope = |name: &str| {
            let users = store.users().unwrap();
            users.iter().find(|u| u.name == name).map(|u| u.scope)
        };
        assert_eq!(scope("ana"), Some(Scope::Read), "new users read by default");
        // A new password alone keeps the scope.
        store.set_user("admin", "new password", None).unwrap();
        assert_eq!(scope("admin"), Some(Scope::Admin));
        let demote = store.set_user("admin", "new password", Some(Scope::Read));
        assert!(matches!(demote, Err(AuthError::LastAdmin)), "{demote:?}");
        assert!(matches!(
            store.delete_user("admin"),
            Err(AuthError::LastAdmin)
        ));
        assert_eq!(scope("admin"), Some(Scope::Admin), "nothing changed");
        // Another process (the CLI) is held to the same rule.
        let cli = AuthStore::open(&dir.path().join(crate::DATABASE_FILE)).unwrap();
        assert!(matches!(
            cli.delete_user("admin"),
            Err(AuthError::LastAdmin)
        ));
        // With a second admin, either may go.
        store
            .set_user("ana", "correct horse", Some(Scope::Admin))
            .unwrap();
        store.delete_user("admin").unwrap();
        store.set_user("bo", "correct horse", None).unwrap();
        assert!(matches!(
            store.delete_user("ana"),
            Err(AuthError::LastAdmin)
        ));
    }

    #[test]
    fn passwords_are_stored_as_argon2_hashes_only() {
        let (dir, store) = store();
        store
            .set_user("ana", "correct horse", Some(Scope::Read))
            .unwrap();
        let conn = Connection::open(dir.path().join(crate::DATABASE_FILE)).unwrap();
        let hash: String = conn
            .query_row("SELECT password_hash FROM users", [], |r| r.get(0))
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(store.set_user("ana", "short", Some(Scope::Read)).is_err());
        assert!(store
            .set_user("../x", "long enough", Some(Scope::Read))
            .is_err());
    }

    #[test]
    fn tokens_verify_until_revoked_and_only_with_their_secret() {
        let (_dir, store) = store();
        let (info, secret) = store.create_token("central", Scope::Read).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(store.verify_token(&secret).unwrap().id, info.id);
        let mut forged = secret.clone();
        forged.pop();
        forged.push(if secret.ends_with('0') { '1' } else { '0' });
        assert!(store.verify_token(&forged).is_none());
        assert!(store.verify_token("vigil_").is_none());
        assert!(store.verify_token("garbage").is_none());
        assert!(store.tokens()[0].last_used_ms.is_some());
        store.revoke_token(&info.id).unwrap();
        assert!(store.verify_token(&secret).is_none());
        assert!(matches!(
            store.revoke_token(&info.id),
            Err(AuthError::NotFound(_))
        ));
    }

    #[test]
    fn a_token_revoked_by_another_process_stops_working_within_a_second() {
        let (dir, server) = store();
        let (info, secret) = server.create_token("central", Scope::Admin).unwrap();
        assert!(server.verify_token(&secret).is_some());
        let cli = AuthStore::open(&dir.path().join(crate::DATABASE_FILE)).unwrap();
        cli.revoke_token(&info.id).unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(50));
        assert!(server.verify_token(&secret).is_none());
    }

    #[test]
    fn sessions_end_at_logout_expiry_or_password_change() {
        let (_dir, store) = store();
        store
            .set_user("ana", "correct horse", Some(Scope::Read))
            .unwrap();
        let user = store
            .verify_password("ana", "correct horse")
            .unwrap()
            .unwrap();
        let s = store
            .create_session(&user, Duration::from_secs(60))
            .unwrap();
        assert_eq!(store.session(&s.cookie).unwrap().user, "ana");
        assert!(store.session("not-a-session").is_none());
        store.end_session(&s.cookie).unwrap();
        assert!(store.session(&s.cookie).is_none());

        let s = store.create_session(&user, Duration::ZERO).unwrap();
        assert!(store.session(&s.cookie).is_none(), "expired");

        let s = store
            .create_session(&user, Duration::from_secs(60))
            .unwrap();
        store
            .set_user("ana", "battery staple", Some(Scope::Read))
            .unwrap();
        assert!(store.session(&s.cookie).is_none(), "password changed");
    }
}
