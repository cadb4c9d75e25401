//! Appwrite permission strings: `read("any")`, `update("user:ID")`, `delete("team:ID/role")`.

use crate::error::{Error, Result};
use crate::msg;

pub const ACTIONS: [&str; 5] = ["read", "create", "update", "delete", "write"];

/// Where permissions are set: documents cannot carry `create`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Collection,
    Document,
}

/// A parsed permission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub action: String,
    pub role: String,
}

impl Permission {
    pub fn parse(s: &str) -> Result<Permission> {
        let bad = || {
            Error::invalid(msg!("Invalid `permissions` param: Permission \"{}\" is not allowed. Must be one of: read, create, update, delete, write.", s))
        };
        let open = s.find('(').ok_or_else(bad)?;
        let action = &s[..open];
        if !ACTIONS.contains(&action) {
            return Err(bad());
        }
        let rest = s[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let role = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .ok_or_else(bad)?;
        check_role(role).map_err(|m| Error::invalid(msg!("Invalid `permissions` param: {}", m)))?;
        Ok(Permission {
            action: action.to_string(),
            role: role.to_string(),
        })
    }
}

/// Validates a role such as `any`, `users/verified`, `user:ID`, `team:ID/owner`, `label:x`.
pub fn check_role(role: &str) -> std::result::Result<(), String> {
    let (name, rest) = match role.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (role, None),
    };
    let (name, dim) = match (name, rest) {
        (n, None) => match n.split_once('/') {
            Some((n, d)) => (n, Some(d)),
            None => (n, None),
        },
        (n, Some(_)) => (n, None),
    };
    let ok_dim = |d: &str| matches!(d, "verified" | "unverified");
    match (name, rest, dim) {
        ("any" | "guests", None, None) => Ok(()),
        ("users", None, None) => Ok(()),
        ("users", None, Some(d)) if ok_dim(d) => Ok(()),
        ("user" | "team" | "member" | "label", Some(r), _) => {
            let (id, d) = match r.split_once('/') {
                Some((i, d)) => (i, Some(d)),
                None => (r, None),
            };
            if !crate::id::is_valid(id) {
                return Err(format!("Role \"{role}\" has an invalid identifier."));
            }
            match (name, d) {
                (_, None) => Ok(()),
                ("user", Some(d)) if ok_dim(d) => Ok(()),
                ("team", Some(d)) if !d.is_empty() => Ok(()),
                _ => Err(format!("Role \"{role}\" has an invalid dimension.")),
            }
        }
        _ => Err(format!("Role \"{role}\" is not allowed.")),
    }
}

/// Validates and normalises a permission list: `write` expands to the actions it stands for,
/// duplicates go, order of first appearance is kept.
pub fn normalize(perms: &[String], scope: Scope) -> Result<Vec<String>> {
    if perms.len() > 100 {
        return Err(Error::invalid(
            "Invalid `permissions` param: Value must a valid array no longer than 100 items",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |action: &str, role: &str| {
        let s = format!("{action}(\"{role}\")");
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for p in perms {
        let p = Permission::parse(p)?;
        match (p.action.as_str(), scope) {
            ("write", Scope::Collection) => {
                for a in ["create", "update", "delete"] {
                    push(a, &p.role)
                }
            }
            ("write", Scope::Document) => {
                for a in ["update", "delete"] {
                    push(a, &p.role)
                }
            }
            ("create", Scope::Document) => return Err(Error::invalid(
                "Invalid `permissions` param: Permission \"create\" is not allowed on documents.",
            )),
            (a, _) => push(a, &p.role),
        }
    }
    Ok(out)
}

/// The roles a stored permission list grants `action` to (stored lists are normalised: no
/// `write`).
pub fn granted<'a>(perms: &'a [String], action: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    perms.iter().filter_map(move |p| {
        p.strip_prefix(action)?
            .strip_prefix("(\"")?
            .strip_suffix("\")")
    })
}

/// Does any of `roles` hold `action` under `perms`?
pub fn allows(perms: &[String], action: &str, roles: &[String]) -> bool {
    granted(perms, action).any(|g| roles.iter().any(|r| r == g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[&str], scope: Scope, expect: std::result::Result<&[&str], ()>) {
        let input: Vec<String> = input.iter().map(|s| s.to_string()).collect();
        let got = normalize(&input, scope);
        match expect {
            Ok(want) => assert_eq!(got.unwrap(), want, "{input:?}"),
            Err(()) => assert!(got.is_err(), "{input:?} should fail"),
        }
    }

    #[test]
    fn permissions() {
        use Scope::*;
        check(&[r#"read("any")"#], Document, Ok(&[r#"read("any")"#]));
        check(
            &[r#"write("user:u1")"#, r#"update("user:u1")"#],
            Document,
            Ok(&[r#"update("user:u1")"#, r#"delete("user:u1")"#]),
        );
        check(
            &[r#"write("team:t1/owner")"#],
            Collection,
            Ok(&[
                r#"create("team:t1/owner")"#,
                r#"update("team:t1/owner")"#,
                r#"delete("team:t1/owner")"#,
            ]),
        );
        check(
            &[r#"read("users/verified")"#, r#"read("label:vip")"#],
            Document,
            Ok(&[r#"read("users/verified")"#, r#"read("label:vip")"#]),
        );
        check(&[r#"create("any")"#], Document, Err(()));
        check(&[r#"read(any)"#], Document, Err(()));
        check(&[r#"fly("any")"#], Document, Err(()));
        check(&[r#"read("nobody")"#], Document, Err(()));
        check(&[r#"read("user:-x")"#], Document, Err(()));
        check(&[r#"read("users/sometimes")"#], Document, Err(()));
    }

    #[test]
    fn grants() {
        let perms: Vec<String> = [
            r#"read("any")"#,
            r#"update("user:u1")"#,
            r#"readx("users")"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(allows(&perms, "read", &roles(&["any", "guests"])));
        assert!(!allows(&perms, "update", &roles(&["any", "guests"])));
        assert!(allows(&perms, "update", &roles(&["any", "user:u1"])));
        assert!(!allows(&perms, "read", &roles(&["users"])));
        assert!(!allows(&perms, "delete", &roles(&["any", "user:u1"])));
    }
}
