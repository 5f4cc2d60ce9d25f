//! SMART App Launch 2 scopes: parsing, the scope string, and the checks the
//! FHIR server makes against a token's scopes.
//!
//! Supported: the clinical scopes `patient/` and `user/` with v2 permissions
//! (`c`, `r`, `u`, `d`, `s` in that order) on the resource types this gateway
//! serves or `*`, plus `openid`, `fhirUser`, `launch/patient` and
//! `offline_access`. Deliberately left out: SMART v1 `.read`/`.write`
//! suffixes, `system/` scopes (no confidential clients), granular scopes with
//! `?param=value` and EHR launch (`launch`). Any of those is rejected with
//! `invalid_scope` rather than silently ignored.

use std::fmt;

/// Resource types that clinical scopes can name.
pub const RESOURCE_TYPES: &[&str] = &["Patient", "Practitioner", "DocumentReference"];

/// Whose data a clinical scope covers (SMART App Launch 2, "Scopes for
/// requesting clinical data").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// `patient/`: only the patient in the token's launch context.
    Patient,
    /// `user/`: whatever the signed-in user may access.
    User,
}

/// A v2 permission on a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    /// All permissions in the order a scope string lists them.
    pub const ALL: [Permission; 5] = [
        Permission::Create,
        Permission::Read,
        Permission::Update,
        Permission::Delete,
        Permission::Search,
    ];

    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// A set of permissions, stored as bits in `c r u d s` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << permission as u8) != 0
    }

    pub fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | (1 << permission as u8))
    }

    pub fn intersect(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `cruds`-style permissions: each letter at most once, in order.
    fn parse(text: &str) -> Option<Permissions> {
        let mut permissions = Permissions::default();
        let mut next = Permission::ALL.iter();
        for letter in text.chars() {
            let permission = next.find(|permission| permission.letter() == letter)?;
            permissions = permissions.with(*permission);
        }
        (!permissions.is_empty()).then_some(permissions)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for permission in Permission::ALL {
            if self.contains(permission) {
                write!(f, "{}", permission.letter())?;
            }
        }
        Ok(())
    }
}

/// One SMART scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    OpenId,
    FhirUser,
    LaunchPatient,
    OfflineAccess,
    Clinical {
        context: Context,
        /// A name from [`RESOURCE_TYPES`] or `*`.
        resource_type: String,
        permissions: Permissions,
    },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::Clinical {
                context,
                resource_type,
                permissions,
            } => {
                let context = match context {
                    Context::Patient => "patient",
                    Context::User => "user",
                };
                write!(f, "{context}/{resource_type}.{permissions}")
            }
        }
    }
}

/// A scope string that could not be parsed; the message names the scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(String);

impl Scope {
    /// Parses one scope token.
    pub fn parse(token: &str) -> Result<Scope, ScopeError> {
        match token {
            "openid" => return Ok(Scope::OpenId),
            "fhirUser" => return Ok(Scope::FhirUser),
            "launch/patient" => return Ok(Scope::LaunchPatient),
            "offline_access" => return Ok(Scope::OfflineAccess),
            _ => {}
        }

        let unknown = || ScopeError(format!("scope '{token}' is not supported by this server"));
        let (context, rest) = match token.split_once('/') {
            Some(("patient", rest)) => (Context::Patient, rest),
            Some(("user", rest)) => (Context::User, rest),
            Some(("system", _)) => {
                return Err(ScopeError(format!(
                    "scope '{token}': system/ scopes need a confidential client, and this server has none"
                )));
            }
            _ => return Err(unknown()),
        };
        if rest.contains('?') {
            return Err(ScopeError(format!(
                "scope '{token}': granular scopes with search parameters are not supported"
            )));
        }
        let (resource_type, permissions) = rest.split_once('.').ok_or_else(unknown)?;
        if resource_type != "*" && !RESOURCE_TYPES.contains(&resource_type) {
            return Err(ScopeError(format!(
                "scope '{token}': resource type '{resource_type}' is not served here; use one of {} or *",
                RESOURCE_TYPES.join(", ")
            )));
        }
        if permissions == "read" || permissions == "write" || permissions == "*" {
            return Err(ScopeError(format!(
                "scope '{token}' uses SMART v1 syntax; use v2 permissions such as .rs or .cruds"
            )));
        }
        let permissions = Permissions::parse(permissions).ok_or_else(|| {
            ScopeError(format!(
                "scope '{token}': permissions must be letters from 'cruds' in that order, each at most once"
            ))
        })?;

        Ok(Scope::Clinical {
            context,
            resource_type: resource_type.to_owned(),
            permissions,
        })
    }
}

/// An ordered set of scopes, as in a request's or token's `scope` string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Parses a space-separated scope string (RFC 6749 §3.3). Duplicates are
    /// dropped; an empty string gives an empty set.
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        let mut scopes = Vec::new();
        for token in text.split(' ').filter(|token| !token.is_empty()) {
            let scope = Scope::parse(token)?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Scopes(scopes))
    }

    pub fn from_vec(scopes: Vec<Scope>) -> Scopes {
        Scopes(scopes)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns true when any clinical scope has the `patient/` context.
    pub fn has_patient_context_scope(&self) -> bool {
        self.0.iter().any(|scope| {
            matches!(
                scope,
                Scope::Clinical {
                    context: Context::Patient,
                    ..
                }
            )
        })
    }

    /// Returns true when a clinical scope of `context` grants `permission` on
    /// `resource_type`.
    pub fn allows(&self, context: Context, resource_type: &str, permission: Permission) -> bool {
        self.0.iter().any(|scope| match scope {
            Scope::Clinical {
                context: granted_context,
                resource_type: granted_type,
                permissions,
            } => {
                *granted_context == context
                    && (granted_type == "*" || granted_type == resource_type)
                    && permissions.contains(permission)
            }
            _ => false,
        })
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, scope) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinical_scope_round_trips() {
        let scopes = Scopes::parse("openid fhirUser patient/DocumentReference.crs user/*.rs").unwrap();

        assert_eq!(scopes.to_string(), "openid fhirUser patient/DocumentReference.crs user/*.rs");
        assert!(scopes.allows(Context::Patient, "DocumentReference", Permission::Create));
        assert!(scopes.allows(Context::User, "Patient", Permission::Search));
        assert!(!scopes.allows(Context::Patient, "Patient", Permission::Read));
    }

    #[test]
    fn permissions_out_of_order_are_rejected() {
        let error = Scopes::parse("patient/Patient.sr").unwrap_err();

        assert!(error.to_string().contains("'patient/Patient.sr'"), "{error}");
    }

    #[test]
    fn v1_and_system_and_unknown_scopes_are_rejected() {
        for scope in ["patient/Patient.read", "system/Patient.rs", "launch", "profile", "patient/Observation.rs", "user/Patient.rs?category=x"] {
            assert!(Scopes::parse(scope).is_err(), "{scope} was accepted");
        }
    }
}
