//! Appwrite id rules: `[a-zA-Z0-9][a-zA-Z0-9._-]{0,35}`; `unique()` asks the server for one.

use crate::error::{Error, Result};
use crate::msg;

pub const UNIQUE: &str = "unique()";
pub const MAX_ID_LEN: usize = 36;

/// True when `id` is a valid custom id.
pub fn is_valid(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_ID_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates `id` as the parameter `param`, with Appwrite's message.
pub fn check(param: &str, id: &str) -> Result<()> {
    if is_valid(id) {
        Ok(())
    } else {
        Err(Error::invalid(msg!("Invalid `{}` param: Parameter must contain at most 36 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char", param)))
    }
}

/// Attribute/index keys: like ids, but up to 255 chars with an optional leading `$`-free name.
pub fn check_key(param: &str, key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.as_bytes()[0] != b'$'
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(msg!("Invalid `{}` param: Parameter must contain at most 255 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char", param)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "A1", "abc.def-ghi_9", &"x".repeat(36)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            &"x".repeat(37),
            "unique()",
            "é",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
