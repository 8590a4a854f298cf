//! API keys: the configured set, lookup by SHA-256 in constant time, and
//! reload of `auth.api_keys_file` (on SIGHUP).
//!
//! Invariants:
//! - The gateway holds only hashes. A presented token is hashed once, and
//!   the digest is compared with every configured hash in constant time, all
//!   of them every time: how long a lookup takes does not depend on which
//!   key (if any) matched.
//! - The set is swapped whole ([`ArcSwap`]): a request sees the old set or
//!   the new one, never a mix, and a reload never blocks a lookup. A reload
//!   that fails (missing file, bad TOML, invalid key) keeps the set in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::AuthError;
use super::principal::to_grants;
use super::principal::{Principal, PrincipalKind};
use crate::settings::AccountSettings;
use crate::settings::{
    ApiKeySettings, AuthSettings, KeyUniqueness, KnownAccounts, parse_sha256_hex, validate_api_keys,
};

/// One accepted hash and what it stands for. A name with two hashes (a
/// rotation) has two entries sharing its grants.
#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    expires: Option<DateTime<Utc>>,
    /// Built once, its identity key computed: a request clones it.
    principal: Arc<Principal>,
}

/// The shape of `auth.api_keys_file`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    api_keys: Vec<ApiKeySettings>,
}

/// The API keys in use: those of the settings plus those of the keys file.
pub struct ApiKeys {
    current: ArcSwap<Vec<Entry>>,
    /// `[[auth.api_keys]]`, validated at start-up; kept for reloads.
    inline: Vec<ApiKeySettings>,
    file: Option<PathBuf>,
    known: KnownAccounts,
}

impl ApiKeys {
    /// The keys of `auth`, reading `auth.api_keys_file` if set (an error if
    /// it cannot be read or is invalid: at start-up there is no previous set
    /// to fall back on). `accounts` are those grants may name.
    pub fn load(auth: &AuthSettings, accounts: &[AccountSettings]) -> anyhow::Result<Self> {
        let keys = Self {
            current: ArcSwap::from_pointee(Vec::new()),
            inline: auth.api_keys.clone(),
            file: auth.api_keys_file.clone(),
            known: KnownAccounts::new(accounts),
        };
        keys.current.store(Arc::new(keys.build()?));
        Ok(keys)
    }

    /// Reads the keys file again and swaps in the new set. On any error the
    /// set in use stays, and the error (naming file and key, never a hash)
    /// is logged and returned. Without a keys file this is a no-op.
    pub fn reload(&self) -> anyhow::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        match self.build() {
            Ok(entries) => {
                let names = distinct_names(&entries);
                self.current.store(Arc::new(entries));
                tracing::info!(file = %file.display(), keys = names, "API keys reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    file = %file.display(),
                    error = format!("{e:#}"),
                    "API keys not reloaded; the previous keys stay in use"
                );
                Err(e)
            }
        }
    }

    /// How many distinct key names are in use.
    pub fn len(&self) -> usize {
        distinct_names(&self.current.load())
    }

    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    /// The principal whose key is `token`, as of `now`.
    pub fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let entries = self.current.load();
        // Every entry is compared, and the match is selected without a
        // branch: no early exit tells an observer which key matched.
        let mut found = u64::MAX;
        for (i, entry) in entries.iter().enumerate() {
            let is_match = entry.hash.as_slice().ct_eq(digest.as_slice());
            found = u64::conditional_select(&found, &(i as u64), is_match);
        }
        let entry = usize::try_from(found)
            .ok()
            .and_then(|i| entries.get(i))
            .ok_or(AuthError::UnknownKey)?;
        if entry.expires.is_some_and(|at| at <= now) {
            return Err(AuthError::Expired);
        }
        Ok((*entry.principal).clone())
    }

    /// The entries of the settings' keys and the file's, all validated.
    fn build(&self) -> anyhow::Result<Vec<Entry>> {
        let mut seen = KeyUniqueness::default();
        // Validated at start-up already; again, to fill `seen`.
        validate_api_keys("auth.api_keys", &self.inline, &self.known, &mut seen)?;
        let mut keys = self.inline.clone();
        if let Some(path) = &self.file {
            let from_file = read_keys_file(path)?;
            validate_api_keys("api_keys", &from_file, &self.known, &mut seen)
                .map_err(|e| e.in_file(Some(path)))
                .context("API keys file (names must also differ from auth.api_keys)")?;
            keys.extend(from_file);
        }
        let mut entries = Vec::new();
        for key in keys {
            let principal = Principal::new(
                PrincipalKind::ApiKey,
                key.name.as_str(),
                to_grants(&key.grants),
            );
            principal.identity_key();
            let principal = Arc::new(principal);
            for hex in &key.sha256 {
                let hash = parse_sha256_hex(hex).context("validated above")?;
                entries.push(Entry {
                    hash,
                    expires: key.expires,
                    principal: principal.clone(),
                });
            }
        }
        Ok(entries)
    }
}

fn distinct_names(entries: &[Entry]) -> usize {
    let mut names: Vec<&str> = entries.iter().map(|e| e.principal.name()).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

fn read_keys_file(path: &Path) -> anyhow::Result<Vec<ApiKeySettings>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the API keys file", path.display()))?;
    let value: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // toml's Display quotes the offending line, which may hold a key.
        anyhow::anyhow!(
            "{}: invalid TOML: {}",
            path.display(),
            e.message().trim_end()
        )
    })?;
    let file: KeysFile =
        serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
            anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner().message())
        })?;
    Ok(file.api_keys)
}

/// Reloads `keys` on every SIGHUP, for as long as the returned task runs
/// (abort it to stop). Errors are logged by [`ApiKeys::reload`].
#[cfg(unix)]
pub fn reload_on_sighup(keys: Arc<ApiKeys>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered before returning, so a SIGHUP sent right after is not lost.
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading API keys");
            // Blocking file I/O, off the async workers.
            let keys = keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload()).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Scope;
    use crate::settings::GrantSettings;

    fn sha256_hex(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn accounts() -> Vec<AccountSettings> {
        ["111111111111:prod", "222222222222:sandbox"]
            .iter()
            .map(|s| {
                let (id, alias) = s.split_once(':').expect("id:alias");
                AccountSettings {
                    id: id.to_owned(),
                    alias: alias.to_owned(),
                    role_arn: None,
                    external_id: None,
                    session_name: None,
                    session_duration_secs: None,
                    profile: None,
                    terminate_role_arn: None,
                    regions: vec!["eu-west-1".to_owned()],
                }
            })
            .collect()
    }

    fn key(name: &str, secrets: &[&str], accounts: &[&str]) -> ApiKeySettings {
        ApiKeySettings {
            name: name.to_owned(),
            sha256: secrets.iter().map(|s| sha256_hex(s)).collect(),
            grants: vec![GrantSettings {
                accounts: accounts.iter().map(|s| (*s).to_owned()).collect(),
                scopes: vec![Scope::SessionsRead],
            }],
            expires: None,
        }
    }

    fn keys(inline: Vec<ApiKeySettings>, file: Option<PathBuf>) -> anyhow::Result<ApiKeys> {
        let auth = AuthSettings {
            api_keys: inline,
            api_keys_file: file,
            ..AuthSettings::default()
        };
        ApiKeys::load(&auth, &accounts())
    }

    #[test]
    fn both_hashes_of_a_rotating_key_work() {
        let keys = keys(vec![key("dash", &["old-key", "new-key"], &["*"])], None).expect("valid");
        for token in ["old-key", "new-key"] {
            let p = keys.authenticate(token, Utc::now()).expect("known");
            assert_eq!(p.name(), "dash");
            assert_eq!(p.kind(), PrincipalKind::ApiKey);
            assert!(p.can(Scope::SessionsRead, "111111111111", "prod"));
        }
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys.authenticate("other-key", Utc::now()),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            keys.authenticate("", Utc::now()),
            Err(AuthError::UnknownKey)
        );
    }

    #[test]
    fn each_key_gets_its_own_grants() {
        let keys = keys(
            vec![
                key("admin", &["a"], &["*"]),
                key("prod-only", &["p"], &["prod"]),
                key("sandbox-only", &["s"], &["222222222222"]),
            ],
            None,
        )
        .expect("valid");
        let p = keys.authenticate("p", Utc::now()).expect("known");
        assert_eq!(p.name(), "prod-only");
        assert!(p.can(Scope::SessionsRead, "111111111111", "prod"));
        assert!(!p.can(Scope::SessionsRead, "222222222222", "sandbox"));
        let s = keys.authenticate("s", Utc::now()).expect("known");
        assert!(s.can(Scope::SessionsRead, "222222222222", "sandbox"));
        assert!(!s.can(Scope::SessionsTerminate, "222222222222", "sandbox"));
    }

    #[test]
    fn an_expired_key_is_refused_as_expired() {
        let mut k = key("old", &["k"], &["*"]);
        let at: DateTime<Utc> = "2027-06-30T00:00:00Z".parse().expect("date");
        k.expires = Some(at);
        let keys = keys(vec![k], None).expect("valid");
        let before = at - chrono::Duration::seconds(1);
        assert!(keys.authenticate("k", before).is_ok());
        assert_eq!(keys.authenticate("k", at), Err(AuthError::Expired));
        assert_eq!(AuthError::Expired.reason(), "expired");
    }

    #[test]
    fn the_keys_file_adds_keys_and_reload_swaps_them() {
        let dir = tempdir();
        let path = dir.join("keys.toml");
        let write = |keys: &[(&str, &str)]| {
            let mut text = String::new();
            for (name, secret) in keys {
                text.push_str(&format!(
                    "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{}\"\ngrants = [{{ accounts = [\"prod\"], scopes = [\"sessions:read\"] }}]\n",
                    sha256_hex(secret)
                ));
            }
            std::fs::write(&path, text).expect("write keys file");
        };
        write(&[("from-file", "f1")]);
        let keys = keys(vec![key("inline", &["i"], &["*"])], Some(path.clone())).expect("valid");
        assert_eq!(
            keys.authenticate("f1", Utc::now())
                .expect("file key")
                .name(),
            "from-file"
        );
        assert!(keys.authenticate("i", Utc::now()).is_ok());

        // Rotate in the file: the new key works, the removed one stops.
        write(&[("from-file", "f2")]);
        keys.reload().expect("reloads");
        assert!(keys.authenticate("f2", Utc::now()).is_ok());
        assert_eq!(
            keys.authenticate("f1", Utc::now()),
            Err(AuthError::UnknownKey)
        );
        assert!(
            keys.authenticate("i", Utc::now()).is_ok(),
            "inline keys stay"
        );

        // A broken file keeps the last good set.
        std::fs::write(&path, "[[api_keys]]\nname = \"x\"\nsha256 = \"f2\"\n").expect("write");
        let e = keys.reload().expect_err("invalid file");
        assert!(format!("{e:#}").contains("keys.toml"), "{e:#}");
        assert!(keys.authenticate("f2", Utc::now()).is_ok());
        std::fs::write(&path, "not toml [").expect("write");
        keys.reload().expect_err("bad toml");
        std::fs::remove_file(&path).expect("remove");
        keys.reload().expect_err("missing file");
        assert!(keys.authenticate("f2", Utc::now()).is_ok());

        // A name or hash that repeats one of the settings is refused.
        write(&[("inline", "z")]);
        let e = keys.reload().expect_err("duplicate name");
        assert!(format!("{e:#}").contains("duplicate key name"), "{e:#}");
        write(&[("other", "i")]);
        let e = keys.reload().expect_err("duplicate hash");
        assert!(format!("{e:#}").contains("duplicate hash"), "{e:#}");
        assert!(keys.authenticate("f2", Utc::now()).is_ok());
    }

    #[test]
    fn key_file_errors_name_the_key_and_never_the_value() {
        let dir = tempdir();
        let path = dir.join("keys.toml");
        std::fs::write(
            &path,
            format!(
                "[[api_keys]]\nname = \"k\"\nsha256 = [\"{}\", \"my-plain-secret\"]\ngrants = [{{ accounts = [\"*\"], scopes = [\"sessions:read\"] }}]\n",
                sha256_hex("x")
            ),
        )
        .expect("write");
        let e = keys(Vec::new(), Some(path.clone())).err().expect("invalid");
        let message = format!("{e:#} {e:?}");
        assert!(message.contains("api_keys[0].sha256[1]"), "{message}");
        assert!(!message.contains("my-plain-secret"), "{message}");

        std::fs::write(
            &path,
            "[[api_keys]]\nname = \"k\"\nsha256 = \"my-plain-secret\n",
        )
        .expect("write");
        let e = keys(Vec::new(), Some(path.clone())).err().expect("invalid");
        assert!(!format!("{e:#} {e:?}").contains("my-plain-secret"), "{e:#}");

        std::fs::write(&path, "[[api_keys]]\nname = \"k\"\nsha = \"x\"\n").expect("write");
        let e = keys(Vec::new(), Some(path)).err().expect("unknown field");
        assert!(format!("{e:#}").contains("api_keys[0]"), "{e:#}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_reloads_the_keys_file() {
        let dir = tempdir();
        let path = dir.join("keys.toml");
        let file = |secret: &str| {
            format!(
                "[[api_keys]]\nname = \"f\"\nsha256 = \"{}\"\ngrants = [{{ accounts = [\"*\"], scopes = [\"sessions:read\"] }}]\n",
                sha256_hex(secret)
            )
        };
        std::fs::write(&path, file("before")).expect("write");
        let keys = Arc::new(keys(Vec::new(), Some(path.clone())).expect("valid"));
        let task = reload_on_sighup(keys.clone()).expect("listens");
        std::fs::write(&path, file("after")).expect("write");
        // The listener is registered, so SIGHUP no longer ends the process.
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while keys.authenticate("after", Utc::now()).is_err() {
            assert!(std::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            keys.authenticate("before", Utc::now()),
            Err(AuthError::UnknownKey)
        );
        task.abort();
    }

    /// A fresh directory under the system temp dir, per test.
    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ssm-gateway-auth-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
