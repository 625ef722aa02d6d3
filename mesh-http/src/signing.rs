//! Node-to-node authentication without sending the secret: every hop is signed with a key
//! derived from the secret, and refused if its signature is wrong, stale or seen before.
//!
//! - **Keys.** The secret goes through PBKDF2-HMAC-SHA256 (100,000 rounds, a fixed salt) once
//!   per process: [`ClusterKey`]. The hop key, the gossip sealing key and the gossip cluster id
//!   are HMACs of that key under distinct labels, so what a node sends reveals neither the
//!   secret nor a fast hash of it, no subkey reveals another, and an offline guess of a weak
//!   secret costs 100,000 HMAC rounds per guess.
//! - **Signature.** `x-mesh-signature: t=<unix ms>,n=<nonce>,s=<hmac>` where the HMAC-SHA256
//!   (hop key) covers the method, the path, `t`, `n` and the SHA-256 of the body. A tampered
//!   method, path or body fails it.
//! - **Freshness.** A signature older or newer than [`MAX_SKEW`] on the receiver's wall clock is
//!   stale (node clocks must agree within it, as NTP keeps them); a nonce seen within the window
//!   is a replay. The receiver remembers at most [`MAX_NONCES`] nonces: beyond that it refuses
//!   hops until old ones age out, rather than forget one it must refuse.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header that carries a hop's signature.
pub const SIGNATURE_HEADER: &str = "x-mesh-signature";

/// How far a signature's time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(10);

/// How many recent nonces a node remembers (about 48 MB at most).
pub const MAX_NONCES: usize = 1 << 20;

const PBKDF2_ROUNDS: u32 = 100_000;
const SALT: &[u8] = b"mesh cluster key v1";

type HmacSha256 = Hmac<Sha256>;

/// What a cluster's secret becomes: the only form in which nodes use it.
///
/// ```
/// use std::sync::Arc;
/// use mesh_http::ClusterKey;
///
/// let key = ClusterKey::of("s3cret");
/// // Derived once per process: PBKDF2 is slow on purpose.
/// assert!(Arc::ptr_eq(&key, &ClusterKey::of("s3cret")));
///
/// // The `x-mesh-signature` of a hop; the secret itself never leaves the node.
/// let body = br#"{"module":"Counter","id":"c1","capability":"counter"}"#;
/// let signature = key.sign("POST", "/internal/call", body);
/// assert!(signature.starts_with("t=") && signature.contains(",n=") && signature.contains(",s="));
/// assert!(!signature.contains("s3cret") && !format!("{key:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ClusterKey {
    hop: [u8; 32],
    gossip: [u8; 32],
    tag: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// The key of `secret`, derived once per process and secret (PBKDF2 is slow on purpose).
    pub fn of(secret: &str) -> Arc<ClusterKey> {
        static KEYS: OnceLock<Mutex<HashMap<String, Arc<ClusterKey>>>> = OnceLock::new();
        let keys = KEYS.get_or_init(Mutex::default);
        let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.entry(secret.to_owned())
            .or_insert_with(|| Arc::new(ClusterKey::derive(secret)))
            .clone()
    }

    fn derive(secret: &str) -> ClusterKey {
        let mut root = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), SALT, PBKDF2_ROUNDS, &mut root);
        let sub = |label: &[u8]| -> [u8; 32] {
            let mut mac = HmacSha256::new_from_slice(&root).expect("any key length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let tag = hex(&sub(b"gossip cluster id")[..8]);
        ClusterKey {
            hop: sub(b"hop signing"),
            gossip: sub(b"gossip sealing"),
            tag,
        }
    }

    /// A public tag of the key for the gossip cluster id: nodes with different secrets never
    /// merge, and the tag says nothing about the secret that a guess could check cheaply.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The key that seals gossip datagrams ([`crate::sealing`]).
    pub(crate) fn gossip_key(&self) -> &[u8; 32] {
        &self.gossip
    }

    /// The signature header value of a hop: `method` and `path` as sent, `body` as sent.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        self.sign_at(method, path, body, SystemTime::now())
    }

    /// [`ClusterKey::sign`] as if the clock said `at`: how tests make a stale signature.
    pub(crate) fn sign_at(&self, method: &str, path: &str, body: &[u8], at: SystemTime) -> String {
        static NONCE_SEED: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Unique per process (a random seed) and per request (a counter).
        let seed = *NONCE_SEED.get_or_init(|| {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        let nonce = format!("{seed:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed));
        let t = unix_ms(at);
        let s = self.mac(method, path, t, &nonce, body);
        format!("t={t},n={nonce},s={s}")
    }

    fn mac(&self, method: &str, path: &str, t: u64, nonce: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.hop).expect("any key length");
        let digest = Sha256::digest(body);
        mac.update(format!("{method}\n{path}\n{t}\n{nonce}\n{}", hex(&digest)).as_bytes());
        hex(&mac.finalize().into_bytes())
    }
}

/// Why a hop's signature was refused: the message of the `unauthorized` error the hop gets.
///
/// ```
/// use actix_web::{test, App};
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::{ClusterKey, HttpOptions, SignatureError, SIGNATURE_HEADER};
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000").start().unwrap();
/// let options = HttpOptions { secret: Some("s3cret".into()), ..HttpOptions::default() };
/// let routes = mesh_http::configure_with(mesh, options);
/// let app = test::init_service(App::new().configure(routes)).await;
/// let hop = |signature: Option<String>| {
///     let mut request = test::TestRequest::post().uri("/internal/call").set_payload("{}");
///     if let Some(signature) = signature {
///         request = request.insert_header((SIGNATURE_HEADER, signature));
///     }
///     request.to_request()
/// };
/// let refusal = |reply: serde_json::Value| reply["error"]["message"].as_str().unwrap().to_owned();
///
/// let unsigned: serde_json::Value = test::call_and_read_body_json(&app, hop(None)).await;
/// assert_eq!(refusal(unsigned), SignatureError::Missing.to_string());
/// // A body changed on the way.
/// let signed_for_another_body = ClusterKey::of("s3cret").sign("POST", "/internal/call", b"[]");
/// let tampered = hop(Some(signed_for_another_body));
/// let tampered: serde_json::Value = test::call_and_read_body_json(&app, tampered).await;
/// assert_eq!(refusal(tampered), SignatureError::Wrong.to_string());
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header, or not of the form `t=..,n=..,s=..`.
    #[error("the hop is not signed (or its signature is malformed)")]
    Missing,
    /// The HMAC does not match: another secret, or a tampered request.
    #[error("the hop's signature does not match (another secret, or a tampered request)")]
    Wrong,
    /// The signature's time is further than [`MAX_SKEW`] from this node's clock.
    #[error("the hop's signature is stale: signed {0} ms away from this node's clock")]
    Stale(u64),
    /// This nonce was seen before: a replay.
    #[error("the hop's signature was used before: a replay")]
    Replayed,
    /// [`MAX_NONCES`] recent nonces are remembered already.
    #[error("too many signed hops in the last {} s; retry later", MAX_SKEW.as_secs() * 2)]
    Busy,
}

/// Checks signatures and remembers recent nonces.
pub(crate) struct Verifier {
    key: Arc<ClusterKey>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    expiry: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Verifier {
    pub(crate) fn new(key: Arc<ClusterKey>) -> Verifier {
        Verifier {
            key,
            seen: Mutex::default(),
        }
    }

    /// Checks `header` for a request of `method` on `path` with `body`, at wall time `now`.
    pub(crate) fn verify(
        &self,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let (t, nonce, s) = parse(header.ok_or(SignatureError::Missing)?)?;
        let expected = self.key.mac(method, path, t, nonce, body);
        if !constant_time_eq(expected.as_bytes(), s.as_bytes()) {
            return Err(SignatureError::Wrong);
        }
        let now = unix_ms(now);
        let skew = now.abs_diff(t);
        if skew > MAX_SKEW.as_millis() as u64 {
            return Err(SignatureError::Stale(skew));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((expiry, _)) = seen.order.front() {
            if *expiry > now {
                break;
            }
            let (_, old) = seen.order.pop_front().expect("checked above");
            seen.expiry.remove(&old);
        }
        if seen.expiry.contains_key(nonce) {
            return Err(SignatureError::Replayed);
        }
        if seen.expiry.len() >= MAX_NONCES {
            return Err(SignatureError::Busy);
        }
        // A nonce must be remembered for as long as its signature could pass as fresh.
        let expiry = t + 2 * MAX_SKEW.as_millis() as u64;
        seen.expiry.insert(nonce.to_owned(), expiry);
        seen.order.push_back((expiry.max(now), nonce.to_owned()));
        Ok(())
    }
}

fn parse(header: &str) -> Result<(u64, &str, &str), SignatureError> {
    let mut parts = header.split(',');
    let mut field = |name: &str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(name))
            .ok_or(SignatureError::Missing)
    };
    let t = field("t=")?.parse().map_err(|_| SignatureError::Missing)?;
    let nonce = field("n=")?;
    let s = field("s=")?;
    if nonce.is_empty() || nonce.len() > 64 || s.len() != 64 {
        return Err(SignatureError::Missing);
    }
    Ok((t, nonce, s))
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without an early exit, so timing does not reveal a prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(ClusterKey::of(secret))
    }

    #[test]
    fn a_signed_hop_passes_once() {
        let key = ClusterKey::of("s3cret");
        let v = verifier("s3cret");
        let header = key.sign("POST", "/internal/call", b"{}");
        let now = SystemTime::now();
        assert_eq!(
            v.verify(Some(&header), "POST", "/internal/call", b"{}", now),
            Ok(())
        );
        assert_eq!(
            v.verify(Some(&header), "POST", "/internal/call", b"{}", now),
            Err(SignatureError::Replayed)
        );
        // A fresh signature of the same request passes.
        let again = key.sign("POST", "/internal/call", b"{}");
        assert_eq!(
            v.verify(Some(&again), "POST", "/internal/call", b"{}", now),
            Ok(())
        );
    }

    #[test]
    fn a_full_nonce_cache_refuses_rather_than_forgets() {
        let key = ClusterKey::of("s3cret");
        let v = Verifier::new(key.clone());
        let now = SystemTime::now();
        let t = unix_ms(now);
        let expiry = t + 2 * MAX_SKEW.as_millis() as u64;
        {
            let mut seen = v.seen.lock().unwrap();
            for i in 0..MAX_NONCES {
                let nonce = format!("{i:032x}");
                seen.expiry.insert(nonce.clone(), expiry);
                seen.order.push_back((expiry, nonce));
            }
        }
        let header = key.sign("POST", "/internal/call", b"{}");
        assert_eq!(
            v.verify(Some(&header), "POST", "/internal/call", b"{}", now),
            Err(SignatureError::Busy)
        );
        // Once the remembered ones age out, a hop signed then passes.
        let later = UNIX_EPOCH + Duration::from_millis(expiry + 1);
        let header = key.sign_at("POST", "/internal/call", b"{}", later);
        assert_eq!(
            v.verify(Some(&header), "POST", "/internal/call", b"{}", later),
            Ok(())
        );
    }

    #[test]
    fn tampered_forged_and_stale_hops_are_refused() {
        let key = ClusterKey::of("s3cret");
        let v = verifier("s3cret");
        let now = SystemTime::now();
        let header = key.sign("POST", "/internal/call", b"{\"id\":\"a\"}");
        for (method, path, body) in [
            ("POST", "/internal/call", &b"{\"id\":\"b\"}"[..]),
            ("POST", "/internal/cast", &b"{\"id\":\"a\"}"[..]),
            ("PUT", "/internal/call", &b"{\"id\":\"a\"}"[..]),
        ] {
            assert_eq!(
                v.verify(Some(&header), method, path, body, now),
                Err(SignatureError::Wrong),
                "{method} {path}"
            );
        }
        let other = ClusterKey::of("another").sign("POST", "/internal/call", b"{}");
        assert_eq!(
            v.verify(Some(&other), "POST", "/internal/call", b"{}", now),
            Err(SignatureError::Wrong)
        );
        assert_eq!(
            v.verify(None, "POST", "/internal/call", b"{}", now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            v.verify(Some("t=1,n=2"), "POST", "/internal/call", b"{}", now),
            Err(SignatureError::Missing)
        );
        let header = key.sign("POST", "/internal/call", b"{}");
        // Measured after signing: deriving the other key above may have taken a while.
        let later = SystemTime::now() + MAX_SKEW + Duration::from_secs(1);
        assert!(matches!(
            v.verify(Some(&header), "POST", "/internal/call", b"{}", later),
            Err(SignatureError::Stale(_))
        ));
    }

    #[test]
    fn neither_the_secret_nor_a_fast_hash_of_it_is_in_what_a_node_sends() {
        let secret = "correct horse battery staple";
        let key = ClusterKey::of(secret);
        let header = key.sign("POST", "/internal/call", b"{}");
        let fast = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(secret.as_bytes()));
        let sha = hex(&Sha256::digest(secret.as_bytes()));
        for sent in [header.as_str(), key.tag()] {
            assert!(!sent.contains(secret));
            assert!(!sent.contains(&fast));
            assert!(!sent.contains(&sha[..16]));
        }
        assert_ne!(ClusterKey::of("other").tag(), key.tag());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_header_is_refused_without_a_panic(
                header in prop_oneof![
                    ".{0,200}",
                    "t=[0-9]{0,21},n=[0-9a-f]{0,70},s=[0-9a-f]{60,68}",
                ],
                body in prop::collection::vec(any::<u8>(), 0..64),
            ) {
                let v = verifier("s3cret");
                let now = SystemTime::now();
                let verdict = v.verify(Some(&header), "POST", "/internal/call", &body, now);
                prop_assert!(verdict.is_err());
            }

            #[test]
            fn a_signature_holds_for_its_request_only(
                method in "[A-Z]{1,8}",
                path in "/[ -~]{0,64}",
                body in prop::collection::vec(any::<u8>(), 0..512),
                flip in any::<prop::sample::Index>(),
            ) {
                let key = ClusterKey::of("s3cret");
                let header = key.sign(&method, &path, &body);
                let now = SystemTime::now();
                if !body.is_empty() {
                    let mut other = body.clone();
                    other[flip.index(body.len())] ^= 1;
                    let verdict = verifier("s3cret").verify(Some(&header), &method, &path, &other, now);
                    prop_assert_eq!(verdict, Err(SignatureError::Wrong));
                }
                let v = verifier("s3cret");
                prop_assert_eq!(v.verify(Some(&header), &method, &path, &body, now), Ok(()));
                prop_assert_eq!(
                    v.verify(Some(&header), &method, &path, &body, now),
                    Err(SignatureError::Replayed)
                );
            }
        }
    }
}
