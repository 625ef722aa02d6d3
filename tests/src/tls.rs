//! Certificates for nodes serving TLS, generated per test with rcgen and written as PEM files
//! into a directory of the test's own ([`Certs`], removed on drop); [`NodeTls`] is what one node
//! is started with (`NodeBuilder::tls`) and what its clients trust.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::unique;

/// The names every test certificate is valid for: the nodes of the tests listen on 127.0.0.1.
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A directory of PEM files for one test, deleted on drop.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
}

/// The TLS files of one node: `--tls-cert`, `--tls-key` and optionally `--tls-ca`, and the PEM
/// certificates its clients trust.
#[derive(Debug, Clone)]
pub struct NodeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    /// PEM: what a client of the node trusts as roots.
    pub trust: Vec<u8>,
}

/// A certificate authority whose certificate is in a [`Certs`] directory, issuing node
/// certificates ([`TestCa::issue`]).
pub struct TestCa<'a> {
    certs: &'a Certs,
    issuer: CertifiedIssuer<'static, KeyPair>,
    path: PathBuf,
}

impl Certs {
    /// A fresh directory in the system temp dir.
    pub fn new() -> Certs {
        let dir = std::env::temp_dir().join(unique("mesh-tls"));
        fs::create_dir_all(&dir).expect("creating the certificates' directory");
        Certs { dir }
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A self-signed certificate for 127.0.0.1 and `localhost`, which nodes can share: they
    /// trust it without `--tls-ca`.
    pub fn self_signed(&self, name: &str) -> NodeTls {
        let key = KeyPair::generate().expect("generating a key");
        let cert = CertificateParams::new(NAMES.map(String::from))
            .and_then(|params| params.self_signed(&key))
            .expect("self-signing a certificate");
        NodeTls {
            cert: self.write(&format!("{name}.crt"), cert.pem()),
            key: self.write(&format!("{name}.key"), key.serialize_pem()),
            ca: None,
            trust: cert.pem().into_bytes(),
        }
    }

    /// A new certificate authority.
    pub fn ca(&self, name: &str) -> TestCa<'_> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("generating a key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signing the CA");
        let path = self.write(&format!("{name}-ca.crt"), issuer.pem());
        TestCa {
            certs: self,
            issuer,
            path,
        }
    }
}

impl Default for Certs {
    fn default() -> Self {
        Certs::new()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl TestCa<'_> {
    /// The CA's certificate file (`--tls-ca`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A certificate for 127.0.0.1 and `localhost` signed by this CA, with the CA as the roots
    /// its hops and clients trust.
    pub fn issue(&self, name: &str) -> NodeTls {
        let key = KeyPair::generate().expect("generating a key");
        let cert = CertificateParams::new(NAMES.map(String::from))
            .and_then(|params| params.signed_by(&key, &self.issuer))
            .expect("signing a certificate");
        NodeTls {
            cert: self.certs.write(&format!("{name}.crt"), cert.pem()),
            key: self
                .certs
                .write(&format!("{name}.key"), key.serialize_pem()),
            ca: Some(self.path.clone()),
            trust: self.issuer.pem().into_bytes(),
        }
    }
}
