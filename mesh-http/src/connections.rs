//! A bound on the connections a node holds, so that no flood of connections exhausts its file
//! descriptors: beyond the bound, each new connection sheds the oldest one. A fresh connection
//! (a health check, a hop) is therefore always accepted and served at once, however many
//! stalled connections an attacker holds; waiting for room instead (actix-web's own
//! `max_connections` alone) would queue it behind every stalled one for their whole timeouts.
//! Actix-web's bound still caps, at twice ours, the connections accepted but not yet tracked
//! or shed but not yet closed, which a fast flood piles up faster than the workers drop them.

use std::any::Any;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

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
    live: Mutex<BTreeMap<u64, OwnedFd>>,
    next: AtomicU64,
    shed: AtomicU64,
}

/// Lives in the connection's extensions: dropped with the connection, it forgets it.
struct Tracked {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    pub(crate) fn new(bound: usize) -> Arc<Connections> {
        Arc::new(Connections {
            bound: bound.max(1),
            live: Mutex::default(),
            next: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, OwnedFd>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For `HttpServer::on_connect`: tracks the new connection and sheds the oldest ones
    /// beyond the bound.
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
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut live = self.lock();
        live.insert(id, duplicate);
        while live.len() > self.bound {
            let Some((_, oldest)) = live.pop_first() else {
                break;
            };
            // SAFETY: shutdown(2) on a descriptor we own; it ends the connection for every
            // descriptor of the socket, actix-web's included.
            unsafe { libc::shutdown(oldest.as_raw_fd(), libc::SHUT_RDWR) };
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        drop(live);
        data.insert(Tracked {
            id,
            connections: self.clone(),
        });
    }

    /// Connections open now, and shed since start.
    pub(crate) fn stats(&self) -> (usize, u64) {
        (self.lock().len(), self.shed.load(Ordering::Relaxed))
    }

    pub(crate) fn bound(&self) -> usize {
        self.bound
    }
}
