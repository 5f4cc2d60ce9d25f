//! Access key pairs that sign requests to the store.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

/// An AWS secret access key. `Debug` prints `[redacted]` so that the key never
/// reaches a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretAccessKey(String);

impl SecretAccessKey {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Returns the key itself, for signing or for printing once to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An access key id and its secret access key, as aws-cli and rclone take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretAccessKey,
}

impl Credentials {
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretAccessKey::new(secret_access_key),
        }
    }

    /// Generates a random pair in the shape AWS uses: a 20-character upper-case
    /// access key id and a 40-character secret.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let access_key_id: String = std::iter::repeat_with(|| rng.sample(Alphanumeric))
            .map(|byte| char::from(byte).to_ascii_uppercase())
            .take(15)
            .collect();
        let secret: String = std::iter::repeat_with(|| rng.sample(Alphanumeric))
            .map(char::from)
            .take(40)
            .collect();
        Self::new(format!("FERRY{access_key_id}"), secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secret() {
        let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI");

        let printed = format!("{credentials:?}");

        assert!(printed.contains("AKIDEXAMPLE"));
        assert!(!printed.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn generated_keys_have_aws_lengths() {
        let credentials = Credentials::generate();

        assert_eq!(credentials.access_key_id.len(), 20);
        assert_eq!(credentials.secret_access_key.expose().len(), 40);
    }
}
