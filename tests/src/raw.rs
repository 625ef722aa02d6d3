//! Raw TCP connections to a node, for the tests of its read deadlines and connection bounds:
//! [`RawConn`] sends exactly the bytes a test gives it (half a request head, a trickle) and
//! tells when, and with what, the node closes it. Every wait is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One TCP connection a test drives byte by byte.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    /// What the node sent so far.
    received: Vec<u8>,
}

/// How a connection ended, as [`RawConn::closed_within`] saw it.
#[derive(Debug)]
pub struct Closed {
    /// Time from the call to the close.
    pub after: Duration,
    /// Everything the node sent on the connection.
    pub received: String,
}

impl RawConn {
    /// Connects to `addr`.
    pub fn open(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        RawConn::from_stream(stream)
    }

    /// Connects to `addr` from the local address `source` (any of 127.0.0.0/8 for a node on
    /// loopback: Linux routes them all there), so that one test can be several client IPs.
    pub async fn open_from(source: IpAddr, addr: SocketAddr) -> RawConn {
        let socket = match source {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("a TCP socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("binding {source}: {e}"));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connecting to {addr} from {source} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {addr} from {source}: {e}"));
        let stream = stream.into_std().expect("a std socket");
        stream.set_nonblocking(false).expect("a blocking socket");
        RawConn::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> RawConn {
        stream
            .set_write_timeout(Some(CONNECT_TIMEOUT))
            .expect("a write timeout");
        RawConn {
            stream,
            received: Vec::new(),
        }
    }

    /// Sends `bytes`; `false` if the node closed the connection already.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads what arrives within `wait`: `false` once the node closed the connection.
    fn read_for(&mut self, wait: Duration) -> bool {
        // A zero timeout would mean "block for ever".
        let wait = wait.max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .expect("a read timeout");
        let mut buf = [0; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return true
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset: closed, with whatever arrived before.
                Err(_) => return false,
            }
        }
    }

    /// Whether the node still holds the connection open (it has not closed it within 100 ms).
    pub fn is_open(&mut self) -> bool {
        self.read_for(Duration::from_millis(100))
    }

    /// Waits until the node closes the connection, for at most `within`; `None` if it is still
    /// open then.
    pub fn closed_within(&mut self, within: Duration) -> Option<Closed> {
        let started = Instant::now();
        while self.read_for(within.saturating_sub(started.elapsed())) {
            if started.elapsed() >= within {
                return None;
            }
        }
        Some(self.closed(started))
    }

    /// Sends `bytes` and waits, for at most `within`, until the node answers and closes the
    /// connection; panics if it does not.
    pub fn close_after(&mut self, bytes: &[u8], within: Duration) -> Closed {
        assert!(
            self.send(bytes),
            "the node closed the connection before it was sent to"
        );
        self.closed_within(within)
            .unwrap_or_else(|| panic!("the connection stayed open past {within:?}"))
    }

    /// Sends `byte` every `every` until the node closes the connection, for at most `within`;
    /// `None` if it is still open then. What a client trickling a request head does.
    pub fn trickle_until_closed(
        &mut self,
        byte: u8,
        every: Duration,
        within: Duration,
    ) -> Option<Closed> {
        let started = Instant::now();
        while started.elapsed() < within {
            if !self.send(&[byte]) || !self.read_for(every) {
                return Some(self.closed(started));
            }
        }
        None
    }

    fn closed(&self, started: Instant) -> Closed {
        Closed {
            after: started.elapsed(),
            received: String::from_utf8_lossy(&self.received).into_owned(),
        }
    }
}
