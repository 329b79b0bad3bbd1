//! Key-pair authentication: the JWT a Snowflake login with `AUTHENTICATOR = SNOWFLAKE_JWT`
//! carries (Snowflake's "Key-pair authentication" docs). RS256 over
//! `{"iss": "ACCOUNT.USER.SHA256:<fingerprint>", "sub": "ACCOUNT.USER", "iat", "exp"}`,
//! where the fingerprint is the base64 SHA-256 of the public key's DER
//! `SubjectPublicKeyInfo` — the value `DESC USER` shows as `RSA_PUBLIC_KEY_FP`.
//!
//! The key is a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), read with `ring`. Errors say
//! what is wrong with the key, never its content.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use sha2::{Digest, Sha256};

/// How long a login JWT is valid (Snowflake accepts at most one hour).
pub const LIFETIME_SECS: i64 = 3600;

/// An RSA key for key-pair login.
pub struct KeyPairAuth {
    key: RsaKeyPair,
    /// `SHA256:<base64 of the SubjectPublicKeyInfo's SHA-256>`.
    fingerprint: String,
}

impl std::fmt::Debug for KeyPairAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairAuth")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl KeyPairAuth {
    /// Reads a PKCS#8 PEM RSA private key.
    pub fn from_pem(pem: &str) -> Result<KeyPairAuth, String> {
        if pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err("the private key is encrypted; give an unencrypted PKCS#8 key (openssl pkcs8 -topk8 -nocrypt)".into());
        }
        if pem.contains("BEGIN RSA PRIVATE KEY") {
            return Err("the private key is PKCS#1 (BEGIN RSA PRIVATE KEY); convert it to PKCS#8 with openssl pkcs8 -topk8 -nocrypt".into());
        }
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PRIVATE KEY-----")
            .collect();
        if body.is_empty() {
            return Err("the private key is not a PEM `BEGIN PRIVATE KEY` block".into());
        }
        let der = STANDARD
            .decode(body)
            .map_err(|_| "the private key's PEM body is not valid base64".to_string())?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("the private key is not a usable PKCS#8 RSA key ({e})"))?;
        let spki = subject_public_key_info(key.public_key().as_ref());
        let fingerprint = format!("SHA256:{}", STANDARD.encode(Sha256::digest(&spki)));
        Ok(KeyPairAuth { key, fingerprint })
    }

    /// The public key fingerprint, as Snowflake shows it (`SHA256:…`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A login JWT for `account` and `user`, issued at `now` (Unix seconds).
    pub fn token(&self, account: &str, user: &str, now: i64) -> Result<String, String> {
        let qualified = format!("{}.{}", account_for_jwt(account), user.to_uppercase());
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": format!("{qualified}.{}", self.fingerprint),
            "sub": qualified,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing the login token failed".to_string())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// The account part of the JWT claims: upper case, without a region or cloud suffix
/// (`xy12345.us-east-1` → `XY12345`).
pub fn account_for_jwt(account: &str) -> String {
    account.split('.').next().unwrap_or(account).to_uppercase()
}

/// The DER `SubjectPublicKeyInfo` of an RSA public key given as PKCS#1 `RSAPublicKey`
/// DER (what `ring` exposes): `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING }`.
pub fn subject_public_key_info(pkcs1: &[u8]) -> Vec<u8> {
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_length(&mut bit_string, pkcs1.len() + 1);
    bit_string.push(0);
    bit_string.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(&mut out, ALGORITHM.len() + bit_string.len());
    out.extend_from_slice(&ALGORITHM);
    out.extend_from_slice(&bit_string);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A fresh 2048-bit key from the `openssl` command line (ring cannot generate RSA
    /// keys), and its public key's DER as openssl writes it; None without openssl.
    fn generated_key() -> Option<(String, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.p8");
        let ok = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .output()
            .ok()?
            .status
            .success();
        if !ok {
            return None;
        }
        let public = Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .output()
            .unwrap()
            .stdout;
        Some((std::fs::read_to_string(&key).unwrap(), public))
    }

    #[test]
    fn the_jwt_carries_snowflakes_claims_and_verifies_with_the_public_key() {
        let Some((pem, openssl_spki)) = generated_key() else {
            eprintln!("skipped: no openssl command to generate a test key");
            return;
        };
        let auth = KeyPairAuth::from_pem(&pem).unwrap();
        // The fingerprint is over the SubjectPublicKeyInfo exactly as openssl encodes it.
        assert_eq!(
            auth.fingerprint(),
            format!("SHA256:{}", STANDARD.encode(Sha256::digest(&openssl_spki)))
        );
        let token = auth
            .token("myorg-acct.us-east-1", "loader", 1_700_000_000)
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims["iss"],
            format!("MYORG-ACCT.LOADER.{}", auth.fingerprint())
        );
        assert_eq!(claims["sub"], "MYORG-ACCT.LOADER");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_000 + LIFETIME_SECS);
        // The signature verifies with the public key openssl derived (RSA PKCS#1 v1.5,
        // SHA-256), and not over altered claims.
        let pkcs1 = &openssl_spki[openssl_spki.len() - auth.key.public_key().as_ref().len()..];
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pkcs1,
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(signed.as_bytes(), &signature).unwrap();
        assert!(
            public
                .verify(format!("{}.e30", parts[0]).as_bytes(), &signature)
                .is_err()
        );
    }

    #[test]
    fn keys_in_other_forms_are_refused_without_showing_them() {
        for (pem, want) in [
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "PKCS#1",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
                "not a usable PKCS#8 RSA key",
            ),
            ("secret", "not a PEM"),
        ] {
            let e = KeyPairAuth::from_pem(pem).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("c2VjcmV0") && !e.contains("AAAA"), "{e}");
        }
        assert_eq!(account_for_jwt("xy12345.us-east-1.aws"), "XY12345");
    }
}
