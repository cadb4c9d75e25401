//! Passwords imported from other systems, as Appwrite's `Users.create*User` routes take them:
//! bcrypt, md5, the sha family, scrypt, Firebase's modified scrypt, phpass, and argon2 hashes
//! made elsewhere. Each is only ever verified (and, after a successful sign-in, replaced by
//! an argon2id hash of ours); comparisons of digests take time independent of where they
//! differ.

use base64::Engine as _;
use serde_json::Value as Json;

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_digest(version: &str, password: &[u8]) -> Option<String> {
    fn h<D: sha2::Digest>(p: &[u8]) -> String {
        hex::encode(D::digest(p))
    }
    Some(match version {
        "md5" => h::<md5::Md5>(password),
        "sha1" => h::<sha1::Sha1>(password),
        "sha224" => h::<sha2::Sha224>(password),
        "sha256" => h::<sha2::Sha256>(password),
        "sha384" => h::<sha2::Sha384>(password),
        "sha512" => h::<sha2::Sha512>(password),
        "sha512/224" => h::<sha2::Sha512_224>(password),
        "sha512/256" => h::<sha2::Sha512_256>(password),
        "sha3-224" => h::<sha3::Sha3_224>(password),
        "sha3-256" => h::<sha3::Sha3_256>(password),
        "sha3-384" => h::<sha3::Sha3_384>(password),
        "sha3-512" => h::<sha3::Sha3_512>(password),
        _ => return None,
    })
}

/// The sha versions `Users.createSHAUser` takes.
pub const SHA_VERSIONS: &[&str] = &[
    "sha1",
    "sha224",
    "sha256",
    "sha384",
    "sha512/224",
    "sha512/256",
    "sha512",
    "sha3-224",
    "sha3-256",
    "sha3-384",
    "sha3-512",
];

fn opt<'a>(options: &'a Json, key: &str) -> Option<&'a Json> {
    options.get(key)
}

fn opt_u64(options: &Json, key: &str) -> Option<u64> {
    opt(options, key).and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
}

fn opt_str<'a>(options: &'a Json, key: &str) -> Option<&'a str> {
    opt(options, key).and_then(Json::as_str)
}

/// What one verification may cost, at most: an imported hash beyond these is refused (at
/// import and at sign-in), so that no stored hash can stall a node or exhaust its memory.
pub const MAX_SCRYPT_N: u64 = 1 << 17;
pub const MAX_SCRYPT_R: u32 = 32;
pub const MAX_SCRYPT_P: u32 = 16;
pub const MAX_SCRYPT_BYTES: u64 = 256 << 20;
pub const MAX_BCRYPT_COST: u32 = 15;
pub const MAX_PHPASS_LOG2: usize = 18;
pub const MAX_ARGON2_M_KIB: u32 = 131_072;
pub const MAX_ARGON2_T: u32 = 16;
pub const MAX_ARGON2_P: u32 = 16;

/// Are scrypt's parameters within what one verification may cost?
pub fn scrypt_bounded(n: u64, r: u32, p: u32, len: usize) -> bool {
    n.is_power_of_two()
        && (2..=MAX_SCRYPT_N).contains(&n)
        && (1..=MAX_SCRYPT_R).contains(&r)
        && (1..=MAX_SCRYPT_P).contains(&p)
        && (1..=1024).contains(&len)
        && 128 * n * r as u64 <= MAX_SCRYPT_BYTES
}

/// The cost a bcrypt hash names (`$2a$10$...`), if it is within bounds.
pub fn bcrypt_bounded(hash: &str) -> bool {
    hash.get(4..6)
        .and_then(|c| c.parse::<u32>().ok())
        .is_some_and(|c| (4..=MAX_BCRYPT_COST).contains(&c))
}

/// Are a PHC argon2 hash's parameters within bounds?
pub fn argon2_bounded(hash: &str) -> bool {
    let Ok(parsed) = argon2::password_hash::PasswordHash::new(hash) else {
        return false;
    };
    let get = |k: &str| parsed.params.get_decimal(k).unwrap_or(u32::MAX);
    get("m") <= MAX_ARGON2_M_KIB && get("t") <= MAX_ARGON2_T && get("p") <= MAX_ARGON2_P
}

fn scrypt_raw(password: &[u8], salt: &[u8], n: u64, r: u32, p: u32, len: usize) -> Option<Vec<u8>> {
    if !scrypt_bounded(n, r, p, len) {
        return None;
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, len).ok()?;
    let mut out = vec![0u8; len];
    scrypt::scrypt(password, salt, &params, &mut out).ok()?;
    Some(out)
}

/// Firebase's modified scrypt: the key derived from the password and salt + separator
/// (N = 2^14, r = 8, p = 1) encrypts the project's signer key with AES-256-CTR (zero IV);
/// the result is the stored hash.
fn scrypt_modified(password: &[u8], hash: &str, options: &Json) -> Option<bool> {
    use aes::cipher::{KeyIvInit, StreamCipher};
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(opt_str(options, "salt")?).ok()?;
    let separator = b64.decode(opt_str(options, "saltSeparator")?).ok()?;
    let mut signer = b64.decode(opt_str(options, "signerKey")?).ok()?;
    let want = b64.decode(hash).ok()?;
    let derived = scrypt_raw(password, &[salt, separator].concat(), 1 << 14, 8, 1, 32)?;
    let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new_from_slices(&derived, &[0u8; 16]).ok()?;
    cipher.apply_keystream(&mut signer);
    Some(same(&signer, &want))
}

const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// phpass's own base64 of a digest.
fn phpass_encode(input: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < input.len() {
        let mut value = input[i] as u32;
        i += 1;
        out.push(ITOA64[(value & 0x3f) as usize] as char);
        if i < input.len() {
            value |= (input[i] as u32) << 8;
        }
        out.push(ITOA64[((value >> 6) & 0x3f) as usize] as char);
        if i >= input.len() {
            break;
        }
        i += 1;
        if i < input.len() {
            value |= (input[i] as u32) << 16;
        }
        out.push(ITOA64[((value >> 12) & 0x3f) as usize] as char);
        if i >= input.len() {
            break;
        }
        i += 1;
        out.push(ITOA64[((value >> 18) & 0x3f) as usize] as char);
    }
    out
}

/// phpass's portable hashes (`$P$` / `$H$`), and bcrypt ones it may hold.
fn phpass(password: &[u8], hash: &str) -> Option<bool> {
    use md5::Digest;
    if hash.starts_with("$2") {
        return bcrypt_bounded(hash)
            .then(|| bcrypt::verify(password, hash).ok())
            .flatten();
    }
    let bytes = hash.as_bytes();
    if bytes.len() != 34 || !(hash.starts_with("$P$") || hash.starts_with("$H$")) {
        return None;
    }
    let log2 = ITOA64.iter().position(|&c| c == bytes[3])?;
    if !(7..=MAX_PHPASS_LOG2).contains(&log2) {
        return None;
    }
    let salt = &bytes[4..12];
    let mut digest = md5::Md5::digest([salt, password].concat()).to_vec();
    for _ in 0..(1u64 << log2) {
        digest = md5::Md5::digest([digest.as_slice(), password].concat()).to_vec();
    }
    let made = format!("{}{}", &hash[..12], phpass_encode(&digest));
    Some(same(made.as_bytes(), bytes))
}

/// Does `password` match an imported `hash` made by `algo` with `options` (the user's
/// `hashOptions`)? `None`: the hash or its options cannot be used.
pub fn verify(algo: &str, hash: &str, options: &str, password: &str) -> Option<bool> {
    let options: Json = serde_json::from_str(options).unwrap_or(Json::Null);
    let pw = password.as_bytes();
    match algo {
        "bcrypt" if bcrypt_bounded(hash) => bcrypt::verify(pw, hash).ok(),
        "md5" => Some(same(
            hex_digest("md5", pw)?.as_bytes(),
            hash.to_ascii_lowercase().as_bytes(),
        )),
        "sha" => {
            let version = opt_str(&options, "version").unwrap_or("sha256");
            Some(same(
                hex_digest(version, pw)?.as_bytes(),
                hash.to_ascii_lowercase().as_bytes(),
            ))
        }
        "scrypt" => {
            let salt = opt_str(&options, "salt")?;
            let n = opt_u64(&options, "costCpu")?;
            let r = u32::try_from(opt_u64(&options, "costMemory")?).ok()?;
            let p = u32::try_from(opt_u64(&options, "costParallel")?).ok()?;
            let len = usize::try_from(opt_u64(&options, "length")?).ok()?;
            let made = scrypt_raw(pw, salt.as_bytes(), n, r, p, len)?;
            Some(same(
                hex::encode(made).as_bytes(),
                hash.to_ascii_lowercase().as_bytes(),
            ))
        }
        "scryptMod" => scrypt_modified(pw, hash, &options),
        "phpass" => phpass(pw, hash),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appwrite's own test vectors (its e2e suite's imported users), all of the password
    /// `appwrite`.
    #[test]
    fn appwrites_imported_hashes_verify() {
        let cases: &[(&str, &str, &str)] = &[
            ("md5", "144fa7eaa4904e8ee120651997f70dcc", "{}"),
            ("sha", "4243da0a694e8a2f727c8060fe0507c8fa01ca68146c76d2c190805b638c20c6bf6ba04e21f11ae138785d0bff63c416e6f87badbffad37f6dee50094cc38c70", r#"{"version":"sha512"}"#),
            ("scrypt", "3fdef49701bc4cfaacd551fe017283513284b4731e6945c263246ef948d3cf63b5d269c31fd697246085111a428245e24a4ddc6b64c687bc60a8910dbafc1d5b", r#"{"salt":"appwrite","costCpu":16384,"costMemory":13,"costParallel":2,"length":64}"#),
            ("phpass", "$P$Br387rwferoKN7uwHZqNMu98q3U8RO.", "{}"),
            ("scryptMod", "UlM7JiXRcQhzAGlaonpSqNSLIz475WMddOgLjej5De9vxTy48K6WtqlEzrRFeK4t0COfMhWCb8wuMHgxOFCHFQ==", r#"{"salt":"UxLMreBr6tYyjQ==","saltSeparator":"Bw==","signerKey":"XyEKE9RcTDeLEsL/RjwPDBv/RqDl8fb3gpYEOQaPihbxf1ZAtSOHCjuAAa7Q3oHpCYhXSN9tizHgVOwn6krflQ=="}"#),
        ];
        for (algo, hash, options) in cases {
            assert_eq!(
                verify(algo, hash, options, "appwrite"),
                Some(true),
                "{algo}"
            );
            assert_eq!(
                verify(algo, hash, options, "appwritf"),
                Some(false),
                "{algo}"
            );
        }
        // bcrypt (Appwrite's vector costs 2^15 rounds: the integration test uses it).
        let made = bcrypt::hash("appwrite", 4).unwrap();
        assert_eq!(verify("bcrypt", &made, "{}", "appwrite"), Some(true));
        assert_eq!(verify("bcrypt", &made, "{}", "appwritf"), Some(false));
        assert_eq!(verify("sha", "x", r#"{"version":"md4"}"#, "appwrite"), None);
        assert_eq!(verify("scrypt", "x", "{}", "appwrite"), None);
    }
}
