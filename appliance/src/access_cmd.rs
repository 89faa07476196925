//! `vigil user …` and `vigil token …`: manage who may use the UI and API,
//! straight in the database named by the configuration (the service may be
//! running: it picks changes up within a second).

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use vigil_storage::{AuthStore, Scope};

use crate::cli::{ConfigArg, TokenCommand, UserCommand};
use crate::config::Config;

fn open(arg: &ConfigArg) -> anyhow::Result<AuthStore> {
    let dir = match &arg.data {
        Some(dir) => dir.clone(),
        None => Config::load(&arg.config)?.storage.path,
    };
    let db = vigil_storage::prepare(&dir)?;
    give_to_directory_owner(&dir, &db);
    Ok(AuthStore::open(&db)?)
}

/// Run as root against the service's data (`sudo vigil token create`), a
/// database this command created would be root's and the service could not
/// open it: hand it to whoever owns the directory.
fn give_to_directory_owner(dir: &Path, db: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(owner) = std::fs::metadata(dir) else {
        return;
    };
    let Ok(file) = std::fs::metadata(db) else {
        return;
    };
    if (file.uid(), file.gid()) != (owner.uid(), owner.gid()) {
        // Fails harmlessly when we may not: then it was already ours to give.
        let _ = std::os::unix::fs::chown(db, Some(owner.uid()), Some(owner.gid()));
    }
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("New password: ")
        .context("cannot ask for a password here; use --password-stdin")?;
    let again = rpassword::prompt_password("Again: ")?;
    anyhow::ensure!(first == again, "the passwords differ");
    Ok(first)
}

pub fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            scope,
            password_stdin,
            config,
        } => {
            let scope: Scope = scope.parse()?;
            let store = open(&config)?;
            let password = read_password(password_stdin)?;
            store.set_user(&name, &password, Some(scope))?;
            println!("user {name} saved ({})", scope.as_str());
        }
        UserCommand::List { config } => {
            for u in open(&config)?.users()? {
                println!(
                    "{:<24} {:<6} created {}",
                    u.name,
                    u.scope.as_str(),
                    time(u.created_ms)
                );
            }
        }
        UserCommand::Delete { name, config } => {
            open(&config)?.delete_user(&name)?;
            println!("user {name} deleted");
        }
    }
    Ok(())
}

pub fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            scope,
            config,
        } => {
            let scope: Scope = scope.parse()?;
            let (info, secret) = open(&config)?.create_token(&name, scope)?;
            eprintln!(
                "token {} ({}, {}) created; it is shown only now:",
                info.id,
                info.name,
                scope.as_str()
            );
            println!("{secret}");
        }
        TokenCommand::List { config } => {
            for t in open(&config)?.tokens() {
                let used = t.last_used_ms.map_or_else(|| "never".into(), time);
                println!(
                    "{}  {:<24} {:<6} created {}  last used {used}",
                    t.id,
                    t.name,
                    t.scope.as_str(),
                    time(t.created_ms)
                );
            }
        }
        TokenCommand::Revoke { id, config } => {
            open(&config)?.revoke_token(&id)?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
