//! Optional TLS (rustls) for a node: HTTPS on its listener (the public API and the routes hops
//! post to) and the roots its hops trust. Gossip is not TLS: it is sealed with the secret (see
//! `crate::sealing`).
//!
//! The crypto provider is aws-lc-rs, named explicitly: it is the one reqwest's rustls brings, so
//! the build holds one provider and nothing depends on a process-wide default being installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A node's certificate chain and key (served on its listener), and the certificates its hops
/// trust as roots: the cluster's CA, or by default the node's own certificates, which is enough
/// for a cluster that shares one self-signed certificate.
///
/// ```no_run
/// use std::path::Path;
/// use mesh_http::{JoinOptions, ServeOptions, TlsConfig};
///
/// let tls = TlsConfig::from_pem_files(Path::new("node.pem"), Path::new("node.key"), Some(Path::new("ca.pem")))?;
/// let serve = ServeOptions { tls: Some(tls.clone()), ..ServeOptions::default() };
/// let mut join = JoinOptions::new("10.0.0.1:4000".parse()?, vec!["10.0.0.2:4000".into()]);
/// join.tls = Some(tls);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    server: ServerConfig,
    roots: Vec<CertificateDer<'static>>,
}

/// Why the TLS files could not be used; each names the file and what is wrong with it.
///
/// ```
/// use std::path::Path;
/// use mesh_http::{TlsConfig, TlsError};
///
/// let (cert, key) = (Path::new("no-such.pem"), Path::new("no-such.key"));
/// let missing = TlsConfig::from_pem_files(cert, key, None);
/// match missing.unwrap_err() {
///     TlsError::Read { what, path, .. } => {
///         assert_eq!((what, path.as_path()), ("certificate", Path::new("no-such.pem")));
///     }
///     other => panic!("{other}"),
/// }
///
/// let dir = std::env::temp_dir().join(format!("mesh-tls-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let cert = dir.join("node.pem");
/// std::fs::write(&cert, "not a certificate").unwrap();
/// let error = TlsConfig::from_pem_files(&cert, &dir.join("node.key"), None).unwrap_err();
/// assert!(matches!(error, TlsError::Invalid { what: "certificate", .. }));
/// assert!(error.to_string().ends_with("no PEM certificate in it"), "{error}");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {}: {error}", path.display())]
    Read {
        /// Which file: "certificate", "private key", "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// A file was read but does not hold what it should.
    #[error("the {what} {}: {problem}", path.display())]
    Invalid {
        /// Which file: "certificate", "private key", "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl TlsConfig {
    /// Reads a PEM certificate chain (the node's certificate first), its PEM private key
    /// (PKCS#8, PKCS#1 or SEC1) and, optionally, the PEM certificates hops trust as roots
    /// (without them, the chain's own certificates). The certificate must name the address
    /// other nodes and clients dial (an IP or DNS subject alternative name).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self, TlsError> {
        let chain = certificates("certificate", cert)?;
        let key_der = {
            let bytes = read("private key", key)?;
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| invalid("private key", key, pem_problem(e, "private key")))?
        };
        let roots = match ca {
            Some(ca) => certificates("CA certificate", ca)?,
            None => chain.clone(),
        };
        // Checked here, at start, rather than on the first hop: a root that is not a usable
        // trust anchor would otherwise only show as refused hops.
        let mut store = RootCertStore::empty();
        for root in &roots {
            store.add(root.clone()).map_err(|e| {
                let path = ca.unwrap_or(cert);
                invalid("CA certificate", path, format!("not a usable root: {e}"))
            })?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(chain, key_der)
            })
            .map_err(|e| {
                invalid(
                    "private key",
                    key,
                    format!("unusable with the certificate {}: {e}", cert.display()),
                )
            })?;
        Ok(TlsConfig { server, roots })
    }

    /// The rustls configuration the listener serves with.
    pub(crate) fn server(&self) -> &ServerConfig {
        &self.server
    }

    /// The roots hops trust, for reqwest.
    pub(crate) fn roots(&self) -> Result<Vec<reqwest::Certificate>, reqwest::Error> {
        self.roots
            .iter()
            .map(|root| reqwest::Certificate::from_der(root))
            .collect()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}

fn invalid(what: &'static str, path: &Path, problem: String) -> TlsError {
    TlsError::Invalid {
        what,
        path: path.to_owned(),
        problem,
    }
}

/// Every PEM certificate in `path`; at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, pem_problem(e, "certificate")))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// A PEM error for a person: "no PEM private key in it" rather than `NoItemsFound`.
fn pem_problem(error: rustls_pki_types::pem::Error, item: &str) -> String {
    match error {
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {item} in it"),
        other => format!("not a PEM {item}: {other}"),
    }
}
