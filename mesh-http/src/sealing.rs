//! Sealed gossip: with a secret, every gossip datagram is encrypted and authenticated, so that
//! nobody without the key can read membership off the wire, announce a member or replay one.
//!
//! - **Cipher.** XChaCha20-Poly1305 under the gossip subkey of the [`ClusterKey`] (an HMAC of
//!   the PBKDF2-derived key with its own label, distinct from the hop key). Its 192-bit nonces
//!   are drawn at random for every datagram: every node of a cluster shares the key, and random
//!   96-bit nonces would make a collision likely after a few billion datagrams cluster-wide.
//! - **Wire format.** `[version 1][unix ms, u64 LE][nonce, 24 bytes][ciphertext][tag, 16]`;
//!   version and time are authenticated as associated data. The plaintext is
//!   `[message id, u64 LE][fragment index][fragment count][chitchat bytes]`.
//! - **Freshness.** A datagram whose time is further than [`MAX_SKEW`] from the receiver's clock
//!   is stale; a nonce seen within the window is a replay. At most [`MAX_SEEN_DATAGRAMS`] nonces
//!   are remembered: beyond that datagrams are refused (`busy`) until old ones age out, rather
//!   than forget a nonce that must still be refused.
//! - **Size.** Chitchat fills a datagram up to [`MAX_DATAGRAM`] bytes, the largest UDP payload
//!   over IPv4; sealing adds [`SEAL_OVERHEAD`] bytes, so a datagram that would not fit sealed is
//!   sent as two sealed fragments and reassembled by the receiver.
//!
//! Chitchat's `Transport` hands a socket whole envelopes, whose wire encoding is private to
//! chitchat. So the sealed socket keeps one of chitchat's own UDP sockets on loopback as its
//! codec: an envelope to send goes through it to a relay socket, which seals the bytes and sends
//! them to the peer; a datagram that opens goes from the relay to the codec, which decodes it.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use chitchat::ChitchatEnvelope;

use crate::signing::{unix_ms, ClusterKey, MAX_SKEW};

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers), which is also the
/// largest datagram chitchat sends.
pub const MAX_DATAGRAM: usize = 65_507;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + 8 + NONCE_LEN;
const TAG_LEN: usize = 16;
const FRAGMENT_HEADER_LEN: usize = 8 + 1 + 1;

/// What sealing adds to each datagram: header, authentication tag and fragment header.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN + FRAGMENT_HEADER_LEN;

/// The most chitchat bytes one sealed datagram carries.
const MAX_FRAGMENT: usize = MAX_DATAGRAM - SEAL_OVERHEAD;

/// Chitchat never sends more than [`MAX_DATAGRAM`] bytes: two fragments always suffice.
const MAX_FRAGMENTS: u8 = 2;

/// How many recent datagram nonces a node remembers (about 4 MB at most).
pub const MAX_SEEN_DATAGRAMS: usize = 1 << 16;

/// Incomplete fragmented messages kept at once, and for how long.
const MAX_PARTIAL: usize = 64;
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the loopback codec may take to hand back an envelope's bytes.
const CODEC_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a gossip datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It does not open under this cluster's key: another secret, none, garbage or tampered.
    Forged,
    /// It opened, but its time is further than [`MAX_SKEW`] from this node's clock.
    Stale,
    /// It opened, but its nonce was seen before.
    Replayed,
    /// [`MAX_SEEN_DATAGRAMS`] recent nonces are remembered already.
    Busy,
}

/// Counts of refused gossip datagrams, for `/metrics`
/// (`mesh_gossip_datagrams_refused_total{reason}`). Gossip keeps them only when it is sealed,
/// that is with a secret:
///
/// ```
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::{GossipOptions, Membership};
///
/// # actix_rt::System::new().block_on(async {
/// let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), listen.to_string()).start().unwrap();
/// let options = GossipOptions::new(listen, Vec::new(), mesh.config().shards, Some("s3cret"));
/// let Ok(membership) = Membership::join(mesh, options).await else { panic!("no gossip") };
/// let stats = membership.gossip_stats().expect("sealed gossip");
/// assert!(format!("{stats:?}").contains("forged: 0"), "nothing refused yet: {stats:?}");
/// membership.leave().await;
/// # });
/// ```
#[derive(Debug, Default)]
pub struct GossipStats {
    forged: AtomicU64,
    stale: AtomicU64,
    replayed: AtomicU64,
    busy: AtomicU64,
}

impl GossipStats {
    fn count(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::Forged => &self.forged,
            Refusal::Stale => &self.stale,
            Refusal::Replayed => &self.replayed,
            Refusal::Busy => &self.busy,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Refused datagrams by reason: `forged`, `stale`, `replayed`, `busy`.
    pub(crate) fn refused(&self) -> [(&'static str, u64); 4] {
        [
            ("forged", self.forged.load(Ordering::Relaxed)),
            ("stale", self.stale.load(Ordering::Relaxed)),
            ("replayed", self.replayed.load(Ordering::Relaxed)),
            ("busy", self.busy.load(Ordering::Relaxed)),
        ]
    }
}

fn cipher(key: &ClusterKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key.gossip_key()).into())
}

/// Seals outgoing datagrams.
struct Sealer {
    cipher: XChaCha20Poly1305,
    next_message: AtomicU64,
}

impl Sealer {
    fn new(key: &ClusterKey) -> Sealer {
        let mut start = [0u8; 8];
        // Message ids only tell one sender's fragmented messages apart; a clock start will do
        // if the OS has no randomness to give (sealing itself then fails below).
        if getrandom::fill(&mut start).is_err() {
            start = unix_ms(SystemTime::now()).to_le_bytes();
        }
        Sealer {
            cipher: cipher(key),
            next_message: AtomicU64::new(u64::from_le_bytes(start)),
        }
    }

    /// `datagram` as one sealed datagram, or two if it would not fit in one.
    fn seal(&self, datagram: &[u8], at: SystemTime) -> Result<Vec<Vec<u8>>, getrandom::Error> {
        let message = self.next_message.fetch_add(1, Ordering::Relaxed);
        let count = datagram.len().div_ceil(MAX_FRAGMENT).max(1);
        let count = u8::try_from(count).expect("chitchat datagrams fit in two fragments");
        let t = unix_ms(at);
        let mut sealed = Vec::with_capacity(usize::from(count));
        for index in 0..count {
            let start = usize::from(index) * MAX_FRAGMENT;
            let chunk = &datagram[start..datagram.len().min(start + MAX_FRAGMENT)];
            let mut plain = Vec::with_capacity(FRAGMENT_HEADER_LEN + chunk.len());
            plain.extend_from_slice(&message.to_le_bytes());
            plain.extend_from_slice(&[index, count]);
            plain.extend_from_slice(chunk);
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::fill(&mut nonce)?;
            let mut out = Vec::with_capacity(plain.len() + HEADER_LEN + TAG_LEN);
            out.push(VERSION);
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&nonce);
            let aad = out.clone();
            let ciphertext = self
                .cipher
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &plain,
                        aad: &aad,
                    },
                )
                .expect("XChaCha20-Poly1305 seals any datagram of UDP size");
            out.extend_from_slice(&ciphertext);
            sealed.push(out);
        }
        Ok(sealed)
    }
}

impl ClusterKey {
    /// `datagram` sealed as the gossip of a node with this key sends it at time `at`: one
    /// sealed datagram, or two when it would not fit in [`MAX_DATAGRAM`] bytes. For tests and
    /// tools that speak the wire format; nodes seal their gossip themselves.
    pub fn seal_gossip(&self, datagram: &[u8], at: SystemTime) -> Vec<Vec<u8>> {
        Sealer::new(self)
            .seal(datagram, at)
            .expect("the OS provides randomness")
    }
}

/// Opens incoming datagrams: checks them, remembers their nonces and reassembles fragments.
struct Opener {
    cipher: XChaCha20Poly1305,
    seen: HashMap<[u8; NONCE_LEN], u64>,
    expiries: VecDeque<(u64, [u8; NONCE_LEN])>,
    partial: HashMap<(SocketAddr, u64), Partial>,
}

struct Partial {
    since: Instant,
    parts: Vec<Option<Vec<u8>>>,
}

impl Opener {
    fn new(key: &ClusterKey) -> Opener {
        Opener {
            cipher: cipher(key),
            seen: HashMap::new(),
            expiries: VecDeque::new(),
            partial: HashMap::new(),
        }
    }

    /// The chitchat bytes of `sealed` from `from` at wall time `now`: `Ok(None)` while a
    /// fragmented message is incomplete.
    fn open(
        &mut self,
        from: SocketAddr,
        sealed: &[u8],
        now: SystemTime,
    ) -> Result<Option<Vec<u8>>, Refusal> {
        if sealed.len() < HEADER_LEN + TAG_LEN + FRAGMENT_HEADER_LEN || sealed[0] != VERSION {
            return Err(Refusal::Forged);
        }
        let (header, ciphertext) = sealed.split_at(HEADER_LEN);
        let nonce: [u8; NONCE_LEN] = header[9..].try_into().expect("header length checked");
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: header,
                },
            )
            .map_err(|_| Refusal::Forged)?;
        let t = u64::from_le_bytes(header[1..9].try_into().expect("header length checked"));
        let now = unix_ms(now);
        let window = MAX_SKEW.as_millis() as u64;
        if now.abs_diff(t) > window {
            return Err(Refusal::Stale);
        }
        self.remember(nonce, t, now)?;
        let message = u64::from_le_bytes(plain[..8].try_into().expect("length checked"));
        let (index, count) = (plain[8], plain[9]);
        if count == 0 || count > MAX_FRAGMENTS || index >= count {
            // Only a holder of the key could send this: not chitchat's output.
            return Err(Refusal::Forged);
        }
        let chunk = plain[FRAGMENT_HEADER_LEN..].to_vec();
        if count == 1 {
            return Ok(Some(chunk));
        }
        Ok(self.reassemble(from, message, index, count, chunk))
    }

    /// Remembers `nonce` for as long as a datagram of time `t` could pass as fresh.
    fn remember(&mut self, nonce: [u8; NONCE_LEN], t: u64, now: u64) -> Result<(), Refusal> {
        while let Some((expiry, old)) = self.expiries.front() {
            if *expiry > now {
                break;
            }
            self.seen.remove(old);
            self.expiries.pop_front();
        }
        if self.seen.contains_key(&nonce) {
            return Err(Refusal::Replayed);
        }
        if self.seen.len() >= MAX_SEEN_DATAGRAMS {
            return Err(Refusal::Busy);
        }
        let expiry = t + 2 * MAX_SKEW.as_millis() as u64;
        self.seen.insert(nonce, expiry);
        self.expiries.push_back((expiry.max(now), nonce));
        Ok(())
    }

    fn reassemble(
        &mut self,
        from: SocketAddr,
        message: u64,
        index: u8,
        count: u8,
        chunk: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.partial
            .retain(|_, p| now.duration_since(p.since) < PARTIAL_TIMEOUT);
        if self.partial.len() >= MAX_PARTIAL && !self.partial.contains_key(&(from, message)) {
            let oldest = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| *k)?;
            self.partial.remove(&oldest);
        }
        let partial = self
            .partial
            .entry((from, message))
            .or_insert_with(|| Partial {
                since: now,
                parts: vec![None; usize::from(count)],
            });
        let slot = partial.parts.get_mut(usize::from(index))?;
        *slot = Some(chunk);
        if partial.parts.iter().any(Option::is_none) {
            return None;
        }
        let parts = self.partial.remove(&(from, message))?.parts;
        Some(parts.into_iter().flatten().flatten().collect())
    }
}

/// Gossip over UDP with every datagram sealed under the cluster's key.
pub(crate) struct SealedTransport {
    key: Arc<ClusterKey>,
    stats: Arc<GossipStats>,
}

impl SealedTransport {
    pub(crate) fn new(key: Arc<ClusterKey>, stats: Arc<GossipStats>) -> SealedTransport {
        SealedTransport { key, stats }
    }
}

#[async_trait::async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("failed to bind to {listen}/UDP for gossip"))?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = UdpSocket::open(loopback).await?;
        let relay = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("failed to bind the gossip relay socket")?;
        // Connected: the relay hears only the codec, and the codec is told apart from anyone
        // else on this host by the relay's address.
        relay.connect(codec.local_addr()?).await?;
        let relay_addr = relay.local_addr()?;
        Ok(Box::new(SealedSocket {
            public,
            codec,
            relay,
            relay_addr,
            sealer: Sealer::new(&self.key),
            opener: Opener::new(&self.key),
            stats: self.stats.clone(),
            senders: VecDeque::new(),
            public_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            relay_buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct SealedSocket {
    /// The gossip address other nodes send to.
    public: tokio::net::UdpSocket,
    /// Chitchat's own socket on loopback: encodes envelopes to send, decodes opened ones.
    codec: UdpSocket,
    /// Talks to the codec only.
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    stats: Arc<GossipStats>,
    /// The senders (and lengths) of opened datagrams handed to the codec, oldest first.
    senders: VecDeque<(SocketAddr, usize)>,
    public_buf: Box<[u8]>,
    relay_buf: Box<[u8]>,
}

/// Errors a UDP socket recovers from (as chitchat's own socket treats them).
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

#[async_trait::async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Bytes of an earlier send whose wait timed out are not this envelope's.
        while self.relay.try_recv(&mut self.relay_buf).is_ok() {}
        self.codec.send(self.relay_addr, envelope).await?;
        let len =
            match tokio::time::timeout(CODEC_TIMEOUT, self.relay.recv(&mut self.relay_buf)).await {
                Ok(received) => received.context("gossip relay")?,
                Err(_) => {
                    tracing::warn!(%to, "the gossip codec did not answer; datagram dropped");
                    return Ok(SendOutcome { num_bytes_sent: 0 });
                }
            };
        let sealed = self
            .sealer
            .seal(&self.relay_buf[..len], SystemTime::now())
            .context("no randomness for a gossip nonce")?;
        let mut num_bytes_sent = 0;
        for datagram in sealed {
            num_bytes_sent += self
                .public
                .send_to(&datagram, to)
                .await
                .context("failed to send chitchat message to peer")?;
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe, as chitchat needs: every await is a cancel-safe receive, and what is
    /// handed to the codec is recorded in the same synchronous step.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            tokio::select! {
                biased;
                decoded = self.codec.recv() => {
                    let decoded = decoded?;
                    if decoded.from_addr != self.relay_addr {
                        // Not opened by us: another process on this host wrote to the codec.
                        self.stats.count(Refusal::Forged);
                        continue;
                    }
                    // The codec drops what it cannot decode: skip senders of other lengths.
                    while let Some((from, len)) = self.senders.pop_front() {
                        if len == decoded.num_bytes_received {
                            return Ok(RecvOutcome { from_addr: from, ..decoded });
                        }
                    }
                }
                received = self.public.recv_from(&mut self.public_buf) => {
                    let (len, from) = match received {
                        Ok(received) => received,
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => return Err(e).context("fatal UDP recv error"),
                    };
                    match self.opener.open(from, &self.public_buf[..len], SystemTime::now()) {
                        Ok(Some(plain)) => match self.relay.try_send(&plain) {
                            Ok(_) => {
                                self.senders.push_back((from, plain.len()));
                                if self.senders.len() > MAX_PARTIAL {
                                    self.senders.pop_front();
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "gossip relay full; dropped"),
                        },
                        Ok(None) => {}
                        Err(refusal) => {
                            self.stats.count(refusal);
                            tracing::debug!(%from, ?refusal, "refused a gossip datagram");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chitchat::ChitchatMessage;

    use super::*;

    fn from() -> SocketAddr {
        ([10, 0, 0, 2], 4000).into()
    }

    #[test]
    fn a_sealed_datagram_opens_once_with_the_same_key() {
        let key = ClusterKey::of("s3cret");
        let now = SystemTime::now();
        let sealed = key.seal_gossip(b"chitchat bytes", now);
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].len(), b"chitchat bytes".len() + SEAL_OVERHEAD);
        let mut opener = Opener::new(&key);
        assert_eq!(
            opener.open(from(), &sealed[0], now),
            Ok(Some(b"chitchat bytes".to_vec()))
        );
        assert_eq!(opener.open(from(), &sealed[0], now), Err(Refusal::Replayed));
        // Sealing the same bytes again gives another datagram, which opens.
        let again = key.seal_gossip(b"chitchat bytes", now);
        assert_ne!(again, sealed);
        assert!(opener.open(from(), &again[0], now).is_ok());
    }

    #[test]
    fn tampered_forged_and_stale_datagrams_are_refused() {
        let key = ClusterKey::of("s3cret");
        let now = SystemTime::now();
        let sealed = key.seal_gossip(b"chitchat bytes", now).remove(0);
        let mut opener = Opener::new(&key);
        // Every byte matters: version, time, nonce, ciphertext and tag.
        for at in [0, 1, 9, HEADER_LEN, sealed.len() - 1] {
            let mut tampered = sealed.clone();
            tampered[at] ^= 0x01;
            assert_eq!(
                opener.open(from(), &tampered, now),
                Err(Refusal::Forged),
                "byte {at}"
            );
        }
        let other = ClusterKey::of("another").seal_gossip(b"chitchat bytes", now);
        assert_eq!(opener.open(from(), &other[0], now), Err(Refusal::Forged));
        for junk in [&b""[..], b"\x01", &[0u8; 100], &sealed[..HEADER_LEN + 10]] {
            assert_eq!(opener.open(from(), junk, now), Err(Refusal::Forged));
        }
        let old = now - MAX_SKEW - Duration::from_secs(1);
        let stale = key.seal_gossip(b"chitchat bytes", old);
        assert_eq!(opener.open(from(), &stale[0], now), Err(Refusal::Stale));
        let ahead = key.seal_gossip(b"chitchat bytes", now + MAX_SKEW * 2);
        assert_eq!(opener.open(from(), &ahead[0], now), Err(Refusal::Stale));
        // None of the refused ones used up the untampered datagram.
        assert!(opener.open(from(), &sealed, now).is_ok());
    }

    #[test]
    fn the_largest_chitchat_datagram_travels_in_two_fragments_that_fit() {
        let key = ClusterKey::of("s3cret");
        let now = SystemTime::now();
        let datagram: Vec<u8> = (0..MAX_DATAGRAM).map(|i| i as u8).collect();
        let sealed = key.seal_gossip(&datagram, now);
        assert_eq!(sealed.len(), 2);
        assert!(sealed.iter().all(|d| d.len() <= MAX_DATAGRAM));
        // Just fits in one.
        let one = key.seal_gossip(&datagram[..MAX_FRAGMENT], now);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), MAX_DATAGRAM);

        let mut opener = Opener::new(&key);
        // In either order; a fragment alone is not a message.
        assert_eq!(opener.open(from(), &sealed[1], now), Ok(None));
        assert_eq!(opener.open(from(), &sealed[0], now), Ok(Some(datagram)));
        // A fragment of the same message from another sender does not complete it.
        let again = key.seal_gossip(&[7; MAX_DATAGRAM], now);
        assert_eq!(opener.open(from(), &again[0], now), Ok(None));
        let elsewhere = ([10, 0, 0, 3], 4000).into();
        assert_eq!(opener.open(elsewhere, &again[1], now), Ok(None));
    }

    #[test]
    fn a_full_nonce_cache_refuses_rather_than_forgets() {
        let key = ClusterKey::of("s3cret");
        let now = SystemTime::now();
        let mut opener = Opener::new(&key);
        let t = unix_ms(now);
        for i in 0..MAX_SEEN_DATAGRAMS {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            opener.remember(nonce, t, t).unwrap();
        }
        let sealed = key.seal_gossip(b"x", now);
        assert_eq!(opener.open(from(), &sealed[0], now), Err(Refusal::Busy));
        // Once the remembered ones age out, datagrams open again.
        let later = now + MAX_SKEW * 2 + Duration::from_millis(1);
        let fresh = key.seal_gossip(b"x", later);
        assert!(opener.open(from(), &fresh[0], later).is_ok());
    }

    /// A chitchat Syn with this cluster id and an empty digest.
    fn syn(cluster_id: String) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: chitchat::ProtocolVersion::V0,
            message: ChitchatMessage::Syn {
                cluster_id,
                digest: Default::default(),
            },
        }
    }

    async fn socket(key: &Arc<ClusterKey>, stats: &Arc<GossipStats>) -> Box<dyn Socket> {
        let transport = SealedTransport::new(key.clone(), stats.clone());
        transport.open(([127, 0, 0, 1], 0).into()).await.unwrap()
    }

    async fn recv(socket: &mut Box<dyn Socket>) -> RecvOutcome {
        tokio::time::timeout(Duration::from_secs(5), socket.recv())
            .await
            .expect("a datagram within 5 s")
            .unwrap()
    }

    #[tokio::test]
    async fn envelopes_travel_sealed_from_their_sender_even_when_they_need_two_fragments() {
        let key = ClusterKey::of("s3cret");
        let stats = Arc::new(GossipStats::default());
        let mut a = socket(&key, &stats).await;
        let mut b = socket(&key, &stats).await;
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // The largest envelope chitchat could send: over what one sealed datagram carries.
        let huge = "c".repeat(MAX_DATAGRAM - 8);
        for cluster_id in ["mesh-64".to_owned(), huge] {
            let sent = a.send(b_addr, syn(cluster_id.clone())).await.unwrap();
            let fragments = if cluster_id.len() > MAX_FRAGMENT {
                2
            } else {
                1
            };
            assert_eq!(
                sent.num_bytes_sent,
                cluster_id.len() + 8 + fragments * SEAL_OVERHEAD
            );
            let received = recv(&mut b).await;
            assert_eq!(received.from_addr, a_addr);
            assert_eq!(received.envelope, syn(cluster_id));
        }
        // The other way, too; nothing was refused.
        b.send(a_addr, syn("back".into())).await.unwrap();
        assert_eq!(recv(&mut a).await.from_addr, b_addr);
        assert!(stats.refused().iter().all(|(_, n)| *n == 0));

        // Neither plain chitchat bytes nor a datagram sealed under another key get through.
        let outsider = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let plain = [0x53, 0xb0, 0, 0, 0, 0, 1, 0, b'x'];
        outsider.send_to(&plain, b_addr).await.unwrap();
        let other = ClusterKey::of("other");
        let mut c = socket(&other, &Arc::new(GossipStats::default())).await;
        c.send(b_addr, syn("mesh-64".into())).await.unwrap();
        a.send(b_addr, syn("after".into())).await.unwrap();
        let received = recv(&mut b).await;
        assert_eq!(received.envelope, syn("after".into()));
        assert_eq!(received.from_addr, a_addr);
        assert_eq!(stats.refused()[0], ("forged", 2));
    }

    #[test]
    fn a_node_with_the_most_capabilities_fits_one_sealed_datagram() {
        // Chitchat must fit a node's capabilities key in one delta beside a digest of the
        // cluster; fragments mean sealing takes nothing from that room, and a delta of one
        // such node still travels in a single sealed datagram: the capabilities at their
        // bound, the other descriptor keys and framing (under 1 KiB), a digest of 200 nodes
        // (about 80 bytes each with short node ids) and the seal.
        const DELTA: usize = mesh_core::MAX_CAPABILITIES_BYTES + 1024;
        const DIGEST: usize = 200 * 80;
        const { assert!(DELTA + DIGEST + SEAL_OVERHEAD <= MAX_DATAGRAM) };
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// `len` pseudo-random bytes from `seed`: cheaper than a vector strategy at 64 KB.
        fn bytes(len: usize, seed: u64) -> Vec<u8> {
            let mut x = seed | 1;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 64,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_bytes_are_refused_as_forged_without_a_panic(
                junk in prop::collection::vec(any::<u8>(), 0..512),
                versioned in any::<bool>(),
            ) {
                let mut junk = junk;
                if versioned && !junk.is_empty() {
                    // Past the version check, into the cipher.
                    junk[0] = VERSION;
                }
                let mut opener = Opener::new(&ClusterKey::of("s3cret"));
                prop_assert_eq!(opener.open(from(), &junk, SystemTime::now()), Err(Refusal::Forged));
            }

            #[test]
            fn every_datagram_chitchat_may_send_opens_as_sent(
                len in prop_oneof![0..2048usize, (MAX_FRAGMENT - 2)..=MAX_DATAGRAM],
                seed in any::<u64>(),
                reversed in any::<bool>(),
            ) {
                let key = ClusterKey::of("s3cret");
                let now = SystemTime::now();
                let datagram = bytes(len, seed);
                let mut sealed = key.seal_gossip(&datagram, now);
                prop_assert!(sealed.iter().all(|d| d.len() <= MAX_DATAGRAM));
                prop_assert_eq!(sealed.len(), if len > MAX_FRAGMENT { 2 } else { 1 });
                if reversed {
                    sealed.reverse();
                }
                let mut opener = Opener::new(&key);
                let last = sealed.pop().unwrap();
                for fragment in &sealed {
                    prop_assert_eq!(opener.open(from(), fragment, now), Ok(None));
                }
                prop_assert_eq!(opener.open(from(), &last, now), Ok(Some(datagram)));
            }

            #[test]
            fn any_flipped_bit_makes_a_datagram_forged(
                len in 0..256usize,
                seed in any::<u64>(),
                at in any::<prop::sample::Index>(),
                bit in 0..8u8,
            ) {
                let key = ClusterKey::of("s3cret");
                let now = SystemTime::now();
                let mut sealed = key.seal_gossip(&bytes(len, seed), now).remove(0);
                let at = at.index(sealed.len());
                sealed[at] ^= 1 << bit;
                let mut opener = Opener::new(&key);
                prop_assert_eq!(opener.open(from(), &sealed, now), Err(Refusal::Forged));
            }
        }
    }
}
