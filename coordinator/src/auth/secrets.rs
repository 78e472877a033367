//! Secrets: access tokens (`shk_<id>_<secret>`: a public id to find the row, a 256-bit secret
//! of which only the SHA-256 is stored) and worker keys. Random bytes come from the thread's
//! CSPRNG (ChaCha, seeded by the OS). Comparisons of hashes take the same time whatever the
//! input. Must not: log or store a secret.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const TOKEN_PREFIX: &str = "shk_";

/// A fresh token: its public id and the whole bearer string to hand to its owner.
pub fn new_token() -> (String, String) {
    let id = random_hex(6);
    let secret = random_hex(32);
    (id.clone(), format!("{TOKEN_PREFIX}{id}_{secret}"))
}

/// The id and secret of a bearer string, `None` when it is not shaped like a token.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 12) && hex(secret, 64)).then_some((id, secret))
}

/// A worker's key: 256 random bits in hex.
pub fn new_worker_key() -> String {
    random_hex(32)
}

/// SHA-256 in hex: what is stored for a token secret or a worker key.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equality that does not stop at the first differing byte.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_back_and_differ() {
        let (id, token) = new_token();
        let (got_id, secret) = split_token(&token).unwrap();
        assert_eq!(got_id, id);
        assert_eq!(secret.len(), 64);
        assert_ne!(new_token().1, token);
        for bad in [
            "",
            "shk_",
            "Bearer x",
            &token[..token.len() - 1],
            &token.replace("shk_", "sk_"),
        ] {
            assert!(split_token(bad).is_none(), "{bad:?}");
        }
        assert!(same(&sha256_hex("a"), &sha256_hex("a")));
        assert!(!same(&sha256_hex("a"), &sha256_hex("b")));
        assert!(!same("ab", "abc"));
    }
}
