//! The node's identity key: one ed25519 key from which its `PeerId`, its signatures and
//! its Noise static X25519 key all derive, and the key file that stores it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use netcore::PeerId;
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// The mode of a key file written by [`Identity::generate_and_save`]: owner read and write.
const KEY_FILE_MODE: u32 = 0o600;
/// Permission bits a key file must not have: any access by group or others.
const GROUP_OR_OTHER_ACCESS: u32 = 0o077;
/// A key file is 64 hex digits and a newline.
const KEY_FILE_LEN: usize = 65;

/// A node's identity: its ed25519 signing key and the keys derived from it.
///
/// - the [`PeerId`] is the 32-byte ed25519 public key;
/// - the Noise static secret is the ed25519 secret scalar (the first half of SHA-512 of
///   the secret key, clamped by X25519 on use), and the Noise static public key is the
///   ed25519 public point in Montgomery form, so [`x25519_public_key`] computes it from
///   a `PeerId` alone.
///
/// `Debug` prints only the peer id; the secret is zeroed on drop.
///
/// ```
/// use noise::{Identity, x25519_public_key};
///
/// let identity = Identity::generate();
/// assert_eq!(x25519_public_key(&identity.peer_id()).unwrap(), identity.x25519_public());
/// let signature = identity.sign(b"note");
/// noise::verify(&identity.peer_id(), b"note", &signature).unwrap();
/// ```
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    peer_id: PeerId,
    x25519_secret: StaticSecret,
    x25519_public: X25519PublicKey,
}

impl Identity {
    /// A fresh random identity (from the operating system's RNG).
    pub fn generate() -> Self {
        Self::from_signing_key(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The identity with this 32-byte ed25519 secret key.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self::from_signing_key(SigningKey::from_bytes(secret))
    }

    fn from_signing_key(signing: SigningKey) -> Self {
        let verifying = signing.verifying_key();
        let peer_id = PeerId::new(verifying.to_bytes());
        let scalar = Zeroizing::new(signing.to_scalar_bytes());
        let x25519_secret = StaticSecret::from(*scalar);
        let x25519_public = X25519PublicKey::from(verifying.to_montgomery().to_bytes());
        Self {
            signing,
            peer_id,
            x25519_secret,
            x25519_public,
        }
    }

    /// The node's peer id: its ed25519 public key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The Noise static public key (X25519).
    pub fn x25519_public(&self) -> X25519PublicKey {
        self.x25519_public
    }

    /// The Noise static secret key (X25519), as handed to `snow`.
    pub(crate) fn x25519_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.x25519_secret.to_bytes())
    }

    /// The X25519 public key computed from the derived secret (for the derivation test).
    #[cfg(test)]
    fn x25519_public_from_secret(&self) -> X25519PublicKey {
        X25519PublicKey::from(&self.x25519_secret)
    }

    /// Signs `message` with the identity key (for discovery notes and the like).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// Loads the identity from a key file: 64 hex digits of the secret key and a newline.
    /// Refuses a file that its group or others may access, and a malformed one.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let malformed = |reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let mut file = fs::File::open(path).map_err(io_err)?;
        let mode = file.metadata().map_err(io_err)?.permissions().mode();
        if mode & GROUP_OR_OTHER_ACCESS != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        // One byte more than a valid file, so a longer file is seen without reading it all.
        let mut text = Zeroizing::new([0u8; KEY_FILE_LEN + 1]);
        let mut len = 0;
        loop {
            let n = file.read(&mut text[len..]).map_err(io_err)?;
            if n == 0 {
                break;
            }
            len += n;
            if len == text.len() {
                return Err(malformed("longer than 64 hex digits and a newline"));
            }
        }
        let Some((digits, b"\n")) = text[..len].split_last_chunk::<1>() else {
            return Err(malformed("does not end with a newline"));
        };
        if digits.len() != 64 {
            return Err(malformed("does not hold exactly 64 hex digits"));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(digits, &mut secret[..]).map_err(|_| malformed("not hex"))?;
        Ok(Self::from_secret_bytes(&secret))
    }

    /// Generates an identity and writes it to a new key file with mode 0600. Refuses to
    /// overwrite an existing file.
    pub fn generate_and_save(path: &Path) -> Result<Self, KeyError> {
        let identity = Self::generate();
        identity.save(path)?;
        Ok(identity)
    }

    /// Loads the key file if it exists, otherwise generates an identity and saves it.
    pub fn load_or_generate(path: &Path) -> Result<Self, KeyError> {
        match Self::load(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Self::generate_and_save(path)
            }
            other => other,
        }
    }

    /// Writes the secret key to a new file with mode 0600; never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists(path.to_owned())
                } else {
                    KeyError::Io {
                        path: path.to_owned(),
                        source,
                    }
                }
            })?;
        let mut text = Zeroizing::new([b'\n'; KEY_FILE_LEN]);
        hex::encode_to_slice(self.signing.to_bytes(), &mut text[..64]).map_err(|_| {
            KeyError::Malformed {
                path: path.to_owned(),
                reason: "secret key could not be encoded",
            }
        })?;
        file.write_all(&text[..])
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

fn verifying_key(peer_id: &PeerId) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(peer_id.as_bytes()).map_err(|_| KeyError::InvalidPeerId(*peer_id))
}

/// The Noise static public key (X25519) of the peer named `peer_id`: its ed25519 point
/// in Montgomery form. A dialer that knows only the remote's peer id learns its key so.
pub fn x25519_public_key(peer_id: &PeerId) -> Result<X25519PublicKey, KeyError> {
    Ok(X25519PublicKey::from(
        verifying_key(peer_id)?.to_montgomery().to_bytes(),
    ))
}

/// Checks that `signature` is `peer_id`'s signature of `message` (strict verification:
/// no malleable or small-order signatures).
pub fn verify(peer_id: &PeerId, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
    verifying_key(peer_id)?
        .verify_strict(message, signature)
        .map_err(|_| KeyError::BadSignature(*peer_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_x25519_public_key_matches_the_derived_secret() {
        for seed in 0..16u8 {
            let identity = Identity::from_secret_bytes(&[seed; 32]);
            assert_eq!(
                identity.x25519_public().as_bytes(),
                identity.x25519_public_from_secret().as_bytes()
            );
            assert_eq!(
                x25519_public_key(&identity.peer_id()).unwrap().as_bytes(),
                identity.x25519_public().as_bytes()
            );
        }
    }

    #[test]
    fn peer_id_is_the_ed25519_public_key() {
        let identity = Identity::generate();
        assert_eq!(
            identity.peer_id().as_bytes(),
            identity.verifying_key().as_bytes()
        );
    }

    #[test]
    fn debug_prints_only_the_public_part() {
        let secret = [7u8; 32];
        let identity = Identity::from_secret_bytes(&secret);
        let text = format!("{identity:?}");
        assert!(text.contains(&identity.peer_id().short_str()));
        assert!(!text.contains(&hex::encode(secret)));
        assert!(!text.contains(&hex::encode(&identity.x25519_secret_bytes()[..])));
    }

    #[test]
    fn a_peer_id_off_the_curve_is_a_typed_error() {
        // y = 2 is not the y-coordinate of any point on the ed25519 curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let bad = PeerId::new(bytes);
        assert!(matches!(x25519_public_key(&bad), Err(KeyError::InvalidPeerId(p)) if p == bad));
    }

    #[test]
    fn signatures_verify_for_the_signer_only() {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let signature = alice.sign(b"epoch 7");
        verify(&alice.peer_id(), b"epoch 7", &signature).unwrap();
        assert!(matches!(
            verify(&alice.peer_id(), b"epoch 8", &signature),
            Err(KeyError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&bob.peer_id(), b"epoch 7", &signature),
            Err(KeyError::BadSignature(_))
        ));
    }
}
