//! A bound on the connections a node holds, so that no flood of connections exhausts its file
//! descriptors: beyond the bound, each new connection sheds the oldest one. A fresh connection
//! (a health check, a hop) is therefore always accepted and served at once, however many
//! stalled connections an attacker holds; waiting for room instead (actix-web's own
//! `max_connections` alone) would queue it behind every stalled one for their whole timeouts.
//! Actix-web's bound still caps, at twice ours, the connections accepted but not yet tracked
//! or shed but not yet closed, which a fast flood piles up faster than the workers drop them.
//!
//! A second, smaller bound per client IP keeps one address from taking the whole room: beyond
//! it, a new connection from that IP sheds that IP's own oldest one, not anybody else's. That
//! sheds rather than refuses for the same reason as above: the newest connection of a client
//! (one that reconnected after its old one stalled, a fresh hop from a peer node) is the one
//! most likely to be alive.
//!
//! Actix-web bounds the arrival of a connection's first request head only: once a kept-alive
//! connection has been answered, the next head may trickle in a byte at a time for ever (the
//! keep-alive timer stops at its first byte). So each tracked connection also counts its
//! requests in flight, and a sweep closes any that has had none for the keep-alive and the
//! header timeout together: the next head must arrive, and the last response be taken by a
//! client that reads it, within that time.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;

/// File descriptors kept free beside the connections: listener, gossip sockets, epoll and
/// event fds of the runtime, outgoing hops, the store, logs.
pub const FD_RESERVE: u64 = 128;

/// The connection bound when none is given: what the soft `RLIMIT_NOFILE` allows with
/// [`FD_RESERVE`] kept free, at three descriptors per connection (actix-web's and our
/// duplicate of each tracked one, and as many again accepted but not yet tracked or shed but
/// not yet closed), at most 25,000 (actix-web's own default per worker).
pub fn default_max_connections() -> usize {
    let soft = fd_limits().map_or(1024, |(soft, _)| soft);
    let room = soft.saturating_sub(FD_RESERVE) / 3;
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(16, 25_000)
}

/// The per-IP bound when none is given: half of the connection bound `max_connections`, so
/// that one address never takes the room of all the others (rounded up: at least 1).
pub fn default_max_connections_per_ip(max_connections: usize) -> usize {
    max_connections.div_ceil(2).max(1)
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn fd_limits() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (a process may, unprivileged), so that the
/// node can hold as many connections as the system lets it; returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; setrlimit only reads the struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// The live connections of a node, oldest first, each by a duplicate of its socket: shutting a
/// duplicate down ends the connection (actix-web then closes its own descriptor), and unlike
/// actix-web's descriptor number, ours cannot be closed and reused by another connection
/// behind our back. That costs one more descriptor per connection.
pub(crate) struct Connections {
    bound: usize,
    bound_per_ip: usize,
    /// How long a connection may go without a request in flight.
    idle_limit: Duration,
    /// What [`Activity::idle_since`] counts from.
    epoch: Instant,
    live: Mutex<Live>,
    next: AtomicU64,
    shed_bound: AtomicU64,
    shed_per_ip: AtomicU64,
    closed_idle: AtomicU64,
}

/// How often idle connections are looked for: a connection is closed at most this long after
/// its idle limit.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The tracked connections, by age and by client.
#[derive(Default)]
struct Live {
    /// Every connection by id, oldest first (ids only grow).
    all: BTreeMap<u64, Connection>,
    /// The ids of each client's connections, oldest first; no empty sets.
    by_client: HashMap<Client, BTreeSet<u64>>,
}

struct Connection {
    socket: OwnedFd,
    client: Client,
    activity: Arc<Activity>,
}

/// What a connection is doing, shared by the sweep and its requests without a lock: its
/// requests in flight (a count rather than a flag, should a protocol ever carry several at
/// once), and since when it has had none.
struct Activity {
    in_flight: AtomicU32,
    /// Milliseconds from [`Connections::epoch`].
    idle_since: AtomicU64,
}

/// A request in flight on a tracked connection; dropped when its handler is done (or the
/// request is abandoned), it marks the connection idle from then if it was the last.
pub(crate) struct Busy {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity
            .idle_since
            .store(millis_since(self.epoch), Ordering::Relaxed);
        // Release: a sweep that sees no request in flight sees the time stored above.
        self.activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// Marks the connection of `request` busy until the returned guard drops; `None` for a
/// connection [`Connections`] does not track.
pub(crate) fn busy(request: &HttpRequest) -> Option<Busy> {
    let tracked = request.conn_data::<Tracked>()?;
    let activity = tracked.activity.clone();
    activity.in_flight.fetch_add(1, Ordering::Relaxed);
    Some(Busy {
        activity,
        epoch: tracked.connections.epoch,
    })
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whom a connection counts against for the per-IP bound: its peer's IP, an IPv6 one by its
/// /64 (what one host or site usually gets, so that its 2^64 addresses count as one), an
/// IPv4-mapped IPv6 one as the IPv4 address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Client(IpAddr);

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip.to_canonical() {
            IpAddr::V6(v6) => Client(IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            ))),
            v4 => Client(v4),
        }
    }
}

/// Why this node closed a connection.
#[derive(Debug, Clone, Copy)]
enum Closed {
    /// Shed: the node held its most connections.
    Bound,
    /// Shed: the connection's client IP held its most connections.
    PerIp,
    /// No request in flight for the idle limit.
    Idle,
}

impl Live {
    fn insert(&mut self, id: u64, connection: Connection) {
        self.by_client
            .entry(connection.client)
            .or_default()
            .insert(id);
        self.all.insert(id, connection);
    }

    fn remove(&mut self, id: u64) -> Option<Connection> {
        let connection = self.all.remove(&id)?;
        if let Some(ids) = self.by_client.get_mut(&connection.client) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_client.remove(&connection.client);
            }
        }
        Some(connection)
    }

    /// The oldest connection of `client`, if it holds more than `bound`.
    fn over_per_ip(&self, client: Client, bound: usize) -> Option<u64> {
        let ids = self.by_client.get(&client)?;
        ids.first().copied().filter(|_| ids.len() > bound)
    }

    /// The oldest connection, if there are more than `bound`.
    fn over(&self, bound: usize) -> Option<u64> {
        let oldest = self.all.first_key_value().map(|(id, _)| *id);
        oldest.filter(|_| self.all.len() > bound)
    }
}

/// Lives in the connection's extensions: dropped with the connection, it forgets it.
struct Tracked {
    id: u64,
    connections: Arc<Connections>,
    activity: Arc<Activity>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.connections.lock().remove(self.id);
    }
}

impl Connections {
    /// Holds at most `bound` connections, `bound_per_ip` of them from one client, and closes
    /// those that go `idle_limit` without a request in flight.
    pub(crate) fn new(bound: usize, bound_per_ip: usize, idle_limit: Duration) -> Arc<Connections> {
        let bound = bound.max(1);
        Arc::new(Connections {
            bound,
            bound_per_ip: bound_per_ip.clamp(1, bound),
            idle_limit,
            epoch: Instant::now(),
            live: Mutex::default(),
            next: AtomicU64::new(0),
            shed_bound: AtomicU64::new(0),
            shed_per_ip: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
        })
    }

    /// Closes idle connections every [`SWEEP_EVERY`], until the connections are dropped with
    /// the server.
    pub(crate) async fn sweep(connections: Weak<Connections>) {
        let mut tick = actix_web::rt::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            let Some(connections) = connections.upgrade() else {
                return;
            };
            connections.close_idle();
        }
    }

    fn close_idle(&self) {
        let now = millis_since(self.epoch);
        let limit = u64::try_from(self.idle_limit.as_millis()).unwrap_or(u64::MAX);
        let mut live = self.lock();
        let idle: Vec<u64> = live
            .all
            .iter()
            .filter(|(_, connection)| {
                let activity = &connection.activity;
                activity.in_flight.load(Ordering::Acquire) == 0
                    && now.saturating_sub(activity.idle_since.load(Ordering::Relaxed)) > limit
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close(&mut live, id, Closed::Idle);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For `HttpServer::on_connect`: tracks the new connection and sheds the oldest ones
    /// beyond the bounds, its client's first.
    pub(crate) fn on_connect(self: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        // The socket under a TLS connection is shed the same way (shutting it down ends the
        // TLS session with it).
        let stream = connection.downcast_ref::<TcpStream>().or_else(|| {
            connection
                .downcast_ref::<TlsStream<TcpStream>>()
                .map(|tls| tls.get_ref().0)
        });
        let Some(stream) = stream else {
            return;
        };
        let Ok(duplicate) = stream.as_fd().try_clone_to_owned() else {
            // Out of descriptors: the connection is served untracked rather than refused.
            return;
        };
        // A socket whose peer is already gone has no address: such connections share one
        // client, and so one per-IP bound, until actix-web closes them.
        let client = Client::of(
            stream
                .peer_addr()
                .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |peer| {
                    peer.ip()
                }),
        );
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // Idle from now until its first request arrives.
        let activity = Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch)),
        });
        let mut live = self.lock();
        live.insert(
            id,
            Connection {
                socket: duplicate,
                client,
                activity: activity.clone(),
            },
        );
        if let Some(oldest) = live.over_per_ip(client, self.bound_per_ip) {
            self.close(&mut live, oldest, Closed::PerIp);
        }
        while let Some(oldest) = live.over(self.bound) {
            self.close(&mut live, oldest, Closed::Bound);
        }
        drop(live);
        data.insert(Tracked {
            id,
            connections: self.clone(),
            activity,
        });
    }

    fn close(&self, live: &mut Live, id: u64, why: Closed) {
        let Some(connection) = live.remove(id) else {
            return;
        };
        // SAFETY: shutdown(2) on a descriptor we own; it ends the connection for every
        // descriptor of the socket, actix-web's included.
        unsafe { libc::shutdown(connection.socket.as_raw_fd(), libc::SHUT_RDWR) };
        match why {
            Closed::Bound => &self.shed_bound,
            Closed::PerIp => &self.shed_per_ip,
            Closed::Idle => &self.closed_idle,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.lock().all.len()
    }

    /// Connections closed by this node since start, by reason (as `/metrics` labels them).
    pub(crate) fn closed_counts(&self) -> [(&'static str, u64); 3] {
        [
            ("bound", self.shed_bound.load(Ordering::Relaxed)),
            ("per_ip", self.shed_per_ip.load(Ordering::Relaxed)),
            ("idle", self.closed_idle.load(Ordering::Relaxed)),
        ]
    }

    pub(crate) fn bound(&self) -> usize {
        self.bound
    }

    pub(crate) fn bound_per_ip(&self) -> usize {
        self.bound_per_ip
    }
}

#[cfg(test)]
mod tests {
    use super::Client;
    use std::net::IpAddr;

    fn client(ip: &str) -> Client {
        Client::of(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_one_as_ipv4() {
        assert_eq!(client("2001:db8:1:2::1"), client("2001:db8:1:2:ffff::9"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::ffff:192.0.2.7"), client("192.0.2.7"));
        assert_ne!(client("192.0.2.7"), client("192.0.2.8"));
    }
}
