//! Who a caller is ([`Principal`]) and what it may do ([`Grants`]).
//!
//! A grant pairs a set of accounts (ids, aliases, or every account) with a
//! set of scopes. Grants are resolved against the configured accounts at
//! request time, so a grant naming an alias follows the account it names.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::accounts::Account;
pub use crate::model::Scope;
use crate::settings::GrantSettings;

/// Settings' grants (`[{ accounts = [..], scopes = [..] }]`) as [`Grants`].
pub(crate) fn to_grants(grants: &[GrantSettings]) -> Grants {
    Grants::new(grants.iter().map(|g| Grant {
        accounts: AccountSet::from_refs(&g.accounts),
        scopes: g.scopes.iter().copied().collect(),
    }))
}

/// The accounts one grant covers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountSet {
    /// `"*"`: every configured account, now and later.
    All,
    /// These ids or aliases.
    Named(BTreeSet<String>),
}

impl AccountSet {
    /// The set for settings' `accounts = [...]`: `All` when any entry is `"*"`.
    pub fn from_refs<I: IntoIterator<Item = S>, S: AsRef<str>>(refs: I) -> Self {
        let mut named = BTreeSet::new();
        for r in refs {
            let r = r.as_ref();
            if r == "*" {
                return Self::All;
            }
            named.insert(r.to_owned());
        }
        Self::Named(named)
    }

    fn contains(&self, account_id: &str, alias: &str) -> bool {
        match self {
            Self::All => true,
            Self::Named(names) => names.contains(account_id) || names.contains(alias),
        }
    }
}

/// One grant: these scopes in these accounts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub accounts: AccountSet,
    pub scopes: BTreeSet<Scope>,
}

/// Everything a principal may do: the union of its grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Grants(Vec<Grant>);

impl Grants {
    /// Grants in canonical order, duplicates dropped, so equal grants compare
    /// (and hash, see [`Principal::identity_key`]) equal however written.
    pub fn new(grants: impl IntoIterator<Item = Grant>) -> Self {
        let set: BTreeSet<Grant> = grants
            .into_iter()
            .filter(|g| !g.scopes.is_empty())
            .collect();
        Self(set.into_iter().collect())
    }

    /// No grants: sees nothing, may do nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// The union of two sets of grants.
    pub fn union(&self, other: &Grants) -> Grants {
        Self::new(self.0.iter().chain(other.0.iter()).cloned())
    }

    /// Whether `scope` is granted in the account with this id and alias.
    pub fn can(&self, scope: Scope, account_id: &str, alias: &str) -> bool {
        self.0
            .iter()
            .any(|g| g.scopes.contains(&scope) && g.accounts.contains(account_id, alias))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Grant> {
        self.0.iter()
    }
}

/// How a principal authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// An API key; the name is the key's configured `name`.
    ApiKey,
    /// A JWT; the name is its `sub` claim.
    Jwt,
    /// No credentials, with `auth.allow_anonymous = true`.
    Anonymous,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
            Self::Anonymous => "anonymous",
        }
    }
}

/// An authenticated caller. Holds no credential: safe to log (its `Display`
/// is `kind:name`).
#[derive(Clone, Debug)]
pub struct Principal {
    kind: PrincipalKind,
    name: String,
    grants: Grants,
    /// When the credentials stop being valid (a JWT's `exp`), for what
    /// outlives one request (a WebSocket).
    expires_at: Option<std::time::SystemTime>,
    /// [`Principal::identity_key`], computed the first time (kept by
    /// clones: an API key's principal is cloned from one built at load).
    identity: std::sync::OnceLock<IdentityKey>,
}

/// Equal in kind, name, grants and expiry (the identity key follows from
/// the first three).
impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.name == other.name
            && self.grants == other.grants
            && self.expires_at == other.expires_at
    }
}

impl Eq for Principal {}

/// A stable hash of a principal's identity and grants, for cache keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(pub [u8; 32]);

impl Principal {
    pub fn new(kind: PrincipalKind, name: impl Into<String>, grants: Grants) -> Self {
        Self {
            kind,
            name: name.into(),
            grants,
            expires_at: None,
            identity: std::sync::OnceLock::new(),
        }
    }

    /// This principal, valid until `at`.
    pub fn expiring_at(mut self, at: std::time::SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the credentials stop being valid; `None`: they do not expire.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        self.expires_at
    }

    /// The anonymous caller, with `auth.anonymous_grants`.
    pub fn anonymous(grants: Grants) -> Self {
        Self::new(PrincipalKind::Anonymous, "anonymous", grants)
    }

    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The API key's name, the JWT's subject, or `anonymous`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Whether this principal has `scope` in the account with this id and alias.
    pub fn can(&self, scope: Scope, account_id: &str, alias: &str) -> bool {
        self.grants.can(scope, account_id, alias)
    }

    /// Whether this principal has `scope` in `account`.
    pub fn can_in(&self, scope: Scope, account: &Account) -> bool {
        self.can(scope, account.id.as_str(), &account.alias)
    }

    /// The accounts this principal may read (`sessions:read`), in the
    /// order given. Works on `&[Account]` and `&[Arc<Account>]` alike.
    pub fn readable_accounts<'a, A: Borrow<Account>>(&self, accounts: &'a [A]) -> Vec<&'a A> {
        accounts
            .iter()
            .filter(|a| self.can_in(Scope::SessionsRead, <A as Borrow<Account>>::borrow(a)))
            .collect()
    }

    /// A stable SHA-256 of who this is (kind and name) and what it may do
    /// (its canonical grants). Two principals share a key exactly when both
    /// are equal; the same principal gets the same key in every process, so
    /// it suits the response cache, never the raw `Authorization` header.
    pub fn identity_key(&self) -> IdentityKey {
        *self.identity.get_or_init(|| self.compute_identity_key())
    }

    fn compute_identity_key(&self) -> IdentityKey {
        let mut hash = Sha256::new();
        let mut part = |bytes: &[u8]| {
            // Length-prefixed, so no two different splits hash alike.
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        part(self.kind.as_str().as_bytes());
        part(self.name.as_bytes());
        for grant in self.grants.iter() {
            match &grant.accounts {
                AccountSet::All => part(b"*all"),
                AccountSet::Named(names) => {
                    part(b"named");
                    part(&(names.len() as u64).to_le_bytes());
                    for name in names {
                        part(name.as_bytes());
                    }
                }
            }
            part(&(grant.scopes.len() as u64).to_le_bytes());
            for scope in &grant.scopes {
                part(scope.as_str().as_bytes());
            }
        }
        IdentityKey(hash.finalize().into())
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;
    use std::sync::Arc;

    fn grant(accounts: &[&str], scopes: &[Scope]) -> Grant {
        Grant {
            accounts: AccountSet::from_refs(accounts),
            scopes: scopes.iter().copied().collect(),
        }
    }

    fn account(id: &str, alias: &str) -> Account {
        Account {
            id: AccountId::parse(id).expect("valid id"),
            alias: alias.to_owned(),
            regions: Vec::new(),
        }
    }

    #[test]
    fn read_everything_terminate_only_in_sandbox() {
        let p = Principal::new(
            PrincipalKind::ApiKey,
            "ops",
            Grants::new([
                grant(&["*"], &[Scope::SessionsRead]),
                grant(&["sandbox"], &[Scope::SessionsTerminate]),
            ]),
        );
        assert!(p.can(Scope::SessionsRead, "111111111111", "prod"));
        assert!(!p.can(Scope::SessionsTerminate, "111111111111", "prod"));
        assert!(p.can(Scope::SessionsTerminate, "777777777777", "sandbox"));
    }

    #[test]
    fn grants_match_ids_and_aliases() {
        let by_id = Grants::new([grant(&["111111111111"], &[Scope::SessionsRead])]);
        let by_alias = Grants::new([grant(&["prod"], &[Scope::SessionsRead])]);
        for g in [&by_id, &by_alias] {
            assert!(g.can(Scope::SessionsRead, "111111111111", "prod"));
            assert!(!g.can(Scope::SessionsRead, "222222222222", "staging"));
        }
        assert!(!Grants::none().can(Scope::SessionsRead, "111111111111", "prod"));
    }

    #[test]
    fn readable_accounts_keeps_order_and_takes_arcs() {
        let accounts = vec![
            Arc::new(account("111111111111", "prod")),
            Arc::new(account("222222222222", "staging")),
            Arc::new(account("333333333333", "sandbox")),
        ];
        let p = Principal::new(
            PrincipalKind::Jwt,
            "alice",
            Grants::new([
                grant(&["sandbox", "111111111111"], &[Scope::SessionsRead]),
                grant(&["staging"], &[Scope::SessionsTerminate]),
            ]),
        );
        let readable: Vec<&str> = p
            .readable_accounts(&accounts)
            .iter()
            .map(|a| a.alias.as_str())
            .collect();
        assert_eq!(readable, ["prod", "sandbox"]);
        let plain: Vec<Account> = accounts.iter().map(|a| (**a).clone()).collect();
        assert_eq!(p.readable_accounts(&plain).len(), 2);
    }

    #[test]
    fn an_identity_key_is_kept_by_clones_and_ignored_by_equality() {
        let grants = Grants::new([grant(&["prod"], &[Scope::SessionsRead])]);
        let built = Principal::new(PrincipalKind::ApiKey, "k", grants.clone());
        let key = built.identity_key();
        let clone = built.clone();
        assert_eq!(clone.identity.get(), Some(&key));
        let fresh = Principal::new(PrincipalKind::ApiKey, "k", grants);
        assert!(fresh.identity.get().is_none());
        assert_eq!(fresh, clone);
        assert_eq!(fresh.identity_key(), key);
    }

    #[test]
    fn identity_keys_are_canonical_and_distinguish() {
        let a = Grants::new([
            grant(&["prod", "staging"], &[Scope::SessionsRead]),
            grant(&["*"], &[Scope::SessionsTerminate, Scope::SessionsRead]),
        ]);
        let b = Grants::new([
            grant(
                &["*", "x"],
                &[Scope::SessionsRead, Scope::SessionsTerminate],
            ),
            grant(&["staging", "prod"], &[Scope::SessionsRead]),
            grant(&["staging", "prod"], &[Scope::SessionsRead]),
        ]);
        assert_eq!(a, b);
        let key =
            |kind, name: &str, g: &Grants| Principal::new(kind, name, g.clone()).identity_key();
        assert_eq!(
            key(PrincipalKind::ApiKey, "k", &a),
            key(PrincipalKind::ApiKey, "k", &b)
        );
        assert_ne!(
            key(PrincipalKind::ApiKey, "k", &a),
            key(PrincipalKind::Jwt, "k", &a)
        );
        assert_ne!(
            key(PrincipalKind::ApiKey, "k", &a),
            key(PrincipalKind::ApiKey, "k2", &a)
        );
        let fewer = Grants::new([grant(&["prod"], &[Scope::SessionsRead])]);
        assert_ne!(
            key(PrincipalKind::ApiKey, "k", &a),
            key(PrincipalKind::ApiKey, "k", &fewer)
        );
        // Splits of the same bytes do not collide.
        let ab = Grants::new([grant(&["ab"], &[Scope::SessionsRead])]);
        let a_b = Grants::new([grant(&["a", "b"], &[Scope::SessionsRead])]);
        assert_ne!(
            key(PrincipalKind::ApiKey, "k", &ab),
            key(PrincipalKind::ApiKey, "k", &a_b)
        );
    }

    #[test]
    fn display_shows_no_secret_only_kind_and_name() {
        let p = Principal::anonymous(Grants::none());
        assert_eq!(p.to_string(), "anonymous:anonymous");
    }
}
