//! X25519 for `snow`, with IK's static-static secret computed once per remote key.
//!
//! In Noise IK both sides compute `ss` = DH(local static, remote static). It is the same
//! in every handshake between two nodes, so [`StaticKeys`] keeps it per remote key once a
//! handshake computed it (WireGuard keeps the same value per peer, for the same reason).
//! Each handshake gets a resolver whose X25519 returns the kept value for that one
//! exchange, when the local static key meets that remote key, and computes it (as snow
//! would, when the handshake reaches it) otherwise; every other exchange, and every
//! ephemeral key, is computed as usual. It also knows the local static public key, so
//! the handshake does not derive it from the secret again.
//!
//! Who may add to the kept secrets is the caller's choice: a dialer for the key it
//! dials, a listener under mutual authentication for the trusted key the dialer claims
//! (the value is the true one for that key whoever claims it), never a listener open to
//! any key. When full, a new key replaces an arbitrary kept one.
//!
//! The kept secrets are as sensitive as the static secret they come from, which this
//! process already holds: they are zeroized when dropped.

use std::collections::HashMap;
use std::sync::Arc;

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use parking_lot::Mutex;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{BoxedCryptoResolver, CryptoResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::identity::Identity;

/// The length of X25519 keys and shared secrets.
const KEY_LEN: usize = 32;

/// Remote keys whose static-static secret is kept. Under mutual authentication only
/// trusted peers reach the handshake, so a validator set fits with room to spare; past
/// this many (an open node dialled by many keys), the secret is computed each time.
pub(crate) const MAX_KEPT_STATIC_SECRETS: usize = 4096;

type Secret = Zeroizing<[u8; KEY_LEN]>;

type Kept = Arc<Mutex<HashMap<[u8; KEY_LEN], Arc<Secret>>>>;

/// The local static key pair and the static-static secrets computed with it.
pub(crate) struct StaticKeys {
    secret: Secret,
    public: [u8; KEY_LEN],
    kept: Kept,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys")
            .field("kept", &self.kept.lock().len())
            .finish_non_exhaustive()
    }
}

impl StaticKeys {
    /// The static keys of `identity`.
    pub(crate) fn new(identity: &Identity) -> Self {
        Self {
            secret: identity.x25519_secret_bytes(),
            public: identity.x25519_public().to_bytes(),
            kept: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What one handshake with the node whose static key is `remote` needs; with
    /// `keep`, the static-static secret it computes is kept for the next ones.
    pub(crate) fn for_handshake(&self, remote: &[u8; KEY_LEN], keep: bool) -> HandshakeKeys {
        HandshakeKeys(Arc::new(Known {
            secret: self.secret.clone(),
            public: self.public,
            remote: *remote,
            kept: self.kept.lock().get(remote).cloned(),
            store: keep.then(|| Arc::clone(&self.kept)),
            met: Mutex::new(Vec::with_capacity(REMOTE_KEYS_PER_HANDSHAKE)),
        }))
    }

    /// How many static-static secrets are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.lock().len()
    }
}

/// The keys of one handshake: see [`StaticKeys::for_handshake`].
pub(crate) struct HandshakeKeys(Arc<Known>);

impl HandshakeKeys {
    /// The local static secret, as handed to `snow`.
    pub(crate) fn secret(&self) -> &[u8] {
        &*self.0.secret
    }

    /// A resolver with the primitives of `inner` and this module's X25519.
    pub(crate) fn resolver(&self, inner: BoxedCryptoResolver) -> BoxedCryptoResolver {
        Box::new(Resolver {
            inner,
            known: Arc::clone(&self.0),
        })
    }
}

/// Keeps `secret` for `remote`, replacing an arbitrary kept one when full.
fn keep(store: &Kept, remote: &[u8; KEY_LEN], secret: Secret) {
    let mut kept = store.lock();
    if kept.len() >= MAX_KEPT_STATIC_SECRETS
        && !kept.contains_key(remote)
        && let Some(old) = kept.keys().next().copied()
    {
        kept.remove(&old);
    }
    kept.insert(*remote, Arc::new(secret));
}

/// The remote keys one handshake meets: the remote's static key and its ephemeral one.
const REMOTE_KEYS_PER_HANDSHAKE: usize = 2;

/// A remote X25519 public key made ready for [`x25519_shared`]'s Edwards path once,
/// for a key that takes part in several exchanges (IK uses each remote key twice on
/// each side). The conversion costs two field exponentiations, about a third of an
/// exchange's work outside the vector backend.
#[derive(Clone, Copy, Debug)]
pub struct RemoteKey {
    bytes: [u8; KEY_LEN],
    /// The Edwards point, or `None` for a key on the twist (the ladder's path).
    edwards: Option<EdwardsPoint>,
}

impl RemoteKey {
    /// Converts `public` (any 32 bytes).
    pub fn new(public: &[u8; KEY_LEN]) -> Self {
        Self {
            bytes: *public,
            edwards: MontgomeryPoint(*public).to_edwards(0),
        }
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// X25519 of the local `secret` and this key: the same as
    /// [`x25519_shared`]`(secret, self.bytes())`.
    pub fn shared(&self, secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
        match self.edwards {
            Some(point) => point.mul_clamped(*secret).to_montgomery().to_bytes(),
            None => MontgomeryPoint(self.bytes).mul_clamped(*secret).to_bytes(),
        }
    }
}

/// X25519 (RFC 7748): the shared secret of the local `secret` and a remote `public` key.
///
/// For a `public` key on the curve (every honest key is), the scalar multiplication runs
/// on the birationally equivalent Edwards curve, where curve25519-dalek uses its vector
/// backend when the CPU has one (AVX2), faster than the Montgomery ladder's serial field
/// arithmetic (figures in benches/README.md). The result is the same u-coordinate: the
/// sign chosen for the Edwards point does not change it, and a low-order point gives
/// zero either way. A `public` key on the twist has no Edwards point; it takes the
/// ladder, which RFC 7748 defines for any 32 bytes. Whether the key is on the curve is
/// public, so the branch reveals nothing secret.
pub fn x25519_shared(secret: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    RemoteKey::new(public).shared(secret)
}

/// What one handshake knows before it starts.
struct Known {
    secret: Secret,
    public: [u8; KEY_LEN],
    remote: [u8; KEY_LEN],
    /// DH(`secret`, `remote`), if a handshake before this one kept it.
    kept: Option<Arc<Secret>>,
    /// Where to keep it once computed, if this handshake may.
    store: Option<Kept>,
    /// The remote keys this handshake met, converted. Each takes part in two of IK's
    /// four exchanges on each side (the static one in `es` and `ss`, or `ss` and `se`;
    /// the ephemeral one in the other two), so each is converted once. Public values:
    /// nothing to zeroize.
    met: Mutex<Vec<RemoteKey>>,
}

impl Known {
    /// X25519 of `secret` and `public`, converting `public` once per handshake.
    fn x25519(&self, secret: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Secret {
        let mut met = self.met.lock();
        let key = match met.iter().find(|key| key.bytes() == public) {
            Some(key) => *key,
            None => {
                let key = RemoteKey::new(public);
                if met.len() < REMOTE_KEYS_PER_HANDSHAKE {
                    met.push(key);
                }
                key
            }
        };
        drop(met);
        Zeroizing::new(key.shared(secret))
    }
}

struct Resolver {
    inner: BoxedCryptoResolver,
    known: Arc<Known>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.inner.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                known: Arc::clone(&self.known),
                secret: Zeroizing::new([0; KEY_LEN]),
                public: [0; KEY_LEN],
                local_static: false,
            })),
            _ => self.inner.resolve_dh(choice),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.inner.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.inner.resolve_cipher(choice)
    }
}

/// One X25519 key of a handshake: the local static key or an ephemeral one.
struct X25519 {
    known: Arc<Known>,
    secret: Secret,
    public: [u8; KEY_LEN],
    /// This is the local static key, whose secret with `known.remote` is kept.
    local_static: bool,
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let len = privkey.len().min(KEY_LEN);
        self.secret.fill(0);
        self.secret[..len].copy_from_slice(&privkey[..len]);
        self.local_static = bool::from(self.secret.ct_eq(&*self.known.secret));
        self.public = if self.local_static {
            self.known.public
        } else {
            MontgomeryPoint::mul_base_clamped(*self.secret).to_bytes()
        };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut *self.secret)?;
        self.local_static = false;
        self.public = MontgomeryPoint::mul_base_clamped(*self.secret).to_bytes();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &*self.secret
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let (Some(remote), Some(out)) = (
            pubkey.first_chunk::<KEY_LEN>(),
            out.first_chunk_mut::<KEY_LEN>(),
        ) else {
            return Err(snow::Error::Dh);
        };
        if !(self.local_static && *remote == self.known.remote) {
            out.copy_from_slice(&*self.known.x25519(&self.secret, remote));
            return Ok(());
        }
        if let Some(kept) = &self.known.kept {
            out.copy_from_slice(&***kept);
            return Ok(());
        }
        let secret = self.known.x25519(&self.secret, remote);
        out.copy_from_slice(&*secret);
        if let Some(store) = &self.known.store {
            keep(store, remote, secret);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use snow::resolvers::DefaultResolver;

    use super::*;

    struct Rng;

    impl Random for Rng {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            use rand::RngCore;
            rand::rngs::OsRng.fill_bytes(dest);
            Ok(())
        }
    }

    /// snow's own X25519, the reference.
    fn reference() -> Box<dyn Dh> {
        DefaultResolver.resolve_dh(&DHChoice::Curve25519).unwrap()
    }

    fn dh(key: &dyn Dh, public: &[u8]) -> [u8; KEY_LEN] {
        let mut out = [0u8; KEY_LEN];
        key.dh(public, &mut out).unwrap();
        out
    }

    fn hex32(s: &str) -> [u8; KEY_LEN] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748's vectors: section 5.2's first and section 6.1's exchange (both on the
    /// curve: the Edwards path), and a key on the twist (the ladder's path).
    #[test]
    fn the_shared_secret_is_rfc_7748s() {
        let scalar = hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(x25519_shared(&scalar, &u), out);

        let twist = (2u8..)
            .map(|k| {
                let mut u = [0u8; KEY_LEN];
                u[0] = k;
                u
            })
            .find(|u| MontgomeryPoint(*u).to_edwards(0).is_none())
            .unwrap();
        let ladder = MontgomeryPoint(twist).mul_clamped(scalar).to_bytes();
        assert_eq!(x25519_shared(&scalar, &twist), ladder);

        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert!(MontgomeryPoint(bob_public).to_edwards(0).is_some());
        assert_eq!(x25519_shared(&alice, &bob_public), shared);
    }

    proptest::proptest! {
        /// Any 32 bytes as the remote key (on the curve, on the twist, low order,
        /// non-canonical): the same secret as the Montgomery ladder's.
        #[test]
        fn the_shared_secret_is_the_ladders(
            secret in proptest::array::uniform32(proptest::num::u8::ANY),
            public in proptest::array::uniform32(proptest::num::u8::ANY),
        ) {
            let ladder = MontgomeryPoint(public).mul_clamped(secret).to_bytes();
            proptest::prop_assert_eq!(x25519_shared(&secret, &public), ladder);
        }

        /// The keys honest peers send, all on the curve.
        #[test]
        fn the_shared_secret_of_honest_keys_is_the_ladders(
            secret in proptest::array::uniform32(proptest::num::u8::ANY),
            other in proptest::array::uniform32(proptest::num::u8::ANY),
        ) {
            let public = MontgomeryPoint::mul_base_clamped(other).to_bytes();
            let ladder = MontgomeryPoint(public).mul_clamped(secret).to_bytes();
            proptest::prop_assert_eq!(x25519_shared(&secret, &public), ladder);
        }
    }

    #[test]
    fn every_exchange_matches_snows_x25519_and_the_static_one_is_kept() {
        let local = Identity::generate();
        let remote = Identity::generate();
        let remote_public = remote.x25519_public().to_bytes();
        let keys = StaticKeys::new(&local);
        let expected = {
            let mut theirs = reference();
            theirs.set(&*local.x25519_secret_bytes());
            dh(&*theirs, &remote_public)
        };

        // Two handshakes: the first computes and keeps the secret, the second uses it.
        for round in 0..2 {
            let resolver = keys
                .for_handshake(&remote_public, true)
                .resolver(Box::new(DefaultResolver));
            let mut ours = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
            let mut theirs = reference();
            ours.set(&*local.x25519_secret_bytes());
            theirs.set(&*local.x25519_secret_bytes());
            assert_eq!(ours.pubkey(), theirs.pubkey(), "round {round}");
            assert_eq!(keys.kept(), round, "kept once computed");
            assert_eq!(dh(&*ours, &remote_public), expected, "round {round}");
            assert_eq!(keys.kept(), 1);

            // The same static key against another key (an ephemeral one) is computed.
            let mut other = reference();
            other.generate(&mut Rng).unwrap();
            assert_eq!(dh(&*ours, other.pubkey()), dh(&*theirs, other.pubkey()));
        }

        let resolver = keys
            .for_handshake(&remote_public, true)
            .resolver(Box::new(DefaultResolver));
        // An ephemeral key against the remote's static key is computed.
        let mut ephemeral = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        ephemeral.generate(&mut Rng).unwrap();
        let mut check = reference();
        check.set(ephemeral.privkey());
        assert_eq!(ephemeral.pubkey(), check.pubkey());
        assert_eq!(dh(&*ephemeral, &remote_public), dh(&*check, &remote_public));

        // Another key set on an object of this resolver is not the static key.
        let mut stranger = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        let other_secret = Identity::generate().x25519_secret_bytes();
        stranger.set(&*other_secret);
        let mut check = reference();
        check.set(&*other_secret);
        assert_eq!(dh(&*stranger, &remote_public), dh(&*check, &remote_public));
    }

    #[test]
    fn a_handshake_that_may_not_keep_computes_and_keeps_nothing() {
        let local = Identity::generate();
        let remote = Identity::generate().x25519_public().to_bytes();
        let keys = StaticKeys::new(&local);
        let resolver = keys
            .for_handshake(&remote, false)
            .resolver(Box::new(DefaultResolver));
        let mut ours = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        ours.set(&*local.x25519_secret_bytes());
        let mut theirs = reference();
        theirs.set(&*local.x25519_secret_bytes());
        assert_eq!(dh(&*ours, &remote), dh(&*theirs, &remote));
        assert_eq!(keys.kept(), 0);
    }

    /// A handshake's keys convert each remote key once and keep at most two: every
    /// exchange still matches snow's, for keys met again, for a key on the twist, and
    /// for keys past the two kept.
    #[test]
    fn exchanges_match_the_reference_for_keys_met_again_and_past_the_two_kept() {
        let local = Identity::generate();
        let keys = StaticKeys::new(&local);
        let resolver = keys
            .for_handshake(&[9; KEY_LEN], false)
            .resolver(Box::new(DefaultResolver));
        let mut s = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        s.set(&*local.x25519_secret_bytes());
        let mut e = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        e.generate(&mut Rng).unwrap();
        let (mut s_ref, mut e_ref) = (reference(), reference());
        s_ref.set(s.privkey());
        e_ref.set(e.privkey());
        let mut twist = [0u8; KEY_LEN];
        twist[0] = 2; // u = 2 is on the twist
        assert!(MontgomeryPoint(twist).to_edwards(0).is_none());
        let remotes = [
            Identity::generate().x25519_public().to_bytes(),
            twist,
            Identity::generate().x25519_public().to_bytes(),
        ];
        for remote in remotes.iter().chain(remotes.iter()) {
            for (key, reference) in [(&s, &s_ref), (&e, &e_ref)] {
                assert_eq!(dh(key.as_ref(), remote), dh(reference.as_ref(), remote));
            }
        }
    }

    #[test]
    fn short_keys_are_refused_and_the_kept_secrets_are_bounded() {
        let local = Identity::generate();
        let keys = StaticKeys::new(&local);
        let resolver = keys
            .for_handshake(&[9; KEY_LEN], true)
            .resolver(Box::new(DefaultResolver));
        let mut key = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        key.generate(&mut Rng).unwrap();
        assert!(key.dh(&[1; 31], &mut [0; KEY_LEN]).is_err());
        assert!(key.dh(&[1; KEY_LEN], &mut [0; 31]).is_err());
        let secret = local.x25519_secret_bytes();
        for i in 0..MAX_KEPT_STATIC_SECRETS + 10 {
            let mut remote = [0u8; KEY_LEN];
            remote[..8].copy_from_slice(&(i as u64).to_le_bytes());
            keep(
                &keys.kept,
                &remote,
                Zeroizing::new(x25519_shared(&secret, &remote)),
            );
        }
        // Full: each new key replaced an old one.
        assert_eq!(keys.kept(), MAX_KEPT_STATIC_SECRETS);
        let mut last = [0u8; KEY_LEN];
        last[..8].copy_from_slice(&((MAX_KEPT_STATIC_SECRETS + 9) as u64).to_le_bytes());
        assert!(keys.kept.lock().contains_key(&last), "the newest is kept");
    }
}
