//! TLS for the tracker (tracker.md §7.5): its own key and self-signed certificate in the
//! data directory, the server's rustls configuration, and the client's verifier that
//! accepts exactly the certificate an enrolment token pins.
//!
//! ```text
//! DATA/tls.key   the tracker's TLS private key (PKCS#8, PEM), mode 0600
//! DATA/tls.crt   its self-signed certificate (PEM); the pin is the SHA-256 of its DER
//! ```
//!
//! Both are made at the first start with TLS and never replaced. An administrator may
//! bring their own pair instead (`--tls-cert FILE --tls-key FILE`): the pin is then that
//! certificate's hash. No certificate authority is involved anywhere: a machine learns
//! the pin from its enrolment token, and trusts that certificate and no other.
//!
//! Only the `ring` provider is used, named explicitly (no process-wide default).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The tracker's TLS key file in its data directory.
pub const KEY_FILE: &str = "tls.key";
/// The tracker's TLS certificate file in its data directory.
pub const CERT_FILE: &str = "tls.crt";

/// Why the tracker's TLS identity could not be read, made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not a PEM certificate or key.
    #[error("{path}: {why}: give a PEM certificate (--tls-cert) and its PEM private key (--tls-key), or remove DATA/tls.key and DATA/tls.crt together to have new ones made (machines enrolled with the old pin must then enrol again)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `DATA/tls.crt` exists without `DATA/tls.key`.
    #[error("{0} exists but its key DATA/tls.key does not: restore the key from your backup (or remove the certificate too, and enrol the machines again with new tokens)")]
    KeyMissing(PathBuf),
    /// Making the certificate failed.
    #[error("making the tracker's TLS certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate or key.
    #[error("the TLS certificate and key cannot be used: {0}")]
    Rustls(String),
}

/// The tracker's TLS certificate and key, and the pin that names them.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    key: Arc<PrivateKeyDer<'static>>,
    /// SHA-256 of the certificate's DER: the pin enrolment tokens carry.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a certificate's DER: what a pin is compared with.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn read_pem_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    CertificateDer::from_pem_slice(&bytes).map_err(|e| TlsError::Malformed {
        path: path.to_path_buf(),
        why: format!("no PEM certificate ({e})"),
    })
}

fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Malformed {
        path: path.to_path_buf(),
        why: format!("no PEM private key ({e})"),
    })
}

/// Writes `data` to `path` (which must not exist) with `mode`: once, synced, never half
/// ([`swarmbak_trust::create_once`]).
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if swarmbak_trust::create_once(path, data, mode).map_err(io)? {
        Ok(())
    } else {
        Err(io(std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
    }
}

impl TlsIdentity {
    /// Reads an administrator's own certificate and key (PEM; the first certificate in
    /// `cert` is the tracker's).
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let c = read_pem_cert(cert)?;
        let k = read_pem_key(key)?;
        let id = TlsIdentity {
            sha256: fingerprint(&c),
            cert: c,
            key: Arc::new(k),
        };
        // Refuses a key that is not the certificate's now, not at the first handshake.
        id.server_config()?;
        Ok(id)
    }

    /// Reads `DATA/tls.crt` and `DATA/tls.key`, or makes them the first time (the key
    /// mode 0600; a self-signed certificate naming `names`, DNS names or IP addresses).
    /// An existing pair is never replaced; a key without its certificate gets a new
    /// certificate for the same key.
    pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<TlsIdentity, TlsError> {
        let key_path = data_dir.join(KEY_FILE);
        let cert_path = data_dir.join(CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => return TlsIdentity::from_files(&cert_path, &key_path),
            (false, true) => return Err(TlsError::KeyMissing(cert_path)),
            (true, false) | (false, false) => {}
        }
        let key_pair = if key_path.exists() {
            let pem = std::fs::read_to_string(&key_path).map_err(|source| TlsError::Io {
                path: key_path.clone(),
                source,
            })?;
            rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::Malformed {
                path: key_path.clone(),
                why: e.to_string(),
            })?
        } else {
            let kp = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
            write_new(&key_path, kp.serialize_pem().as_bytes(), 0o600)?;
            kp
        };
        let mut sans: Vec<String> = Vec::new();
        for n in names {
            let n = n.trim_start_matches('[').trim_end_matches(']');
            if !n.is_empty() && !sans.iter().any(|s| s == n) {
                sans.push(n.to_owned());
            }
        }
        if sans.is_empty() {
            sans.push("localhost".to_owned());
        }
        let mut params =
            rcgen::CertificateParams::new(sans).map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "swarmbak tracker");
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
        TlsIdentity::from_files(&cert_path, &key_path)
    }

    /// The SHA-256 pin in hex (as stored in the setting `admin::TLS_SETTING`).
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// The server's rustls configuration: this certificate, no client authentication,
    /// HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// The host names and addresses a tracker's self-signed certificate names: the host of
/// its public URL, `localhost`, and the listen address (when not unspecified).
pub fn subject_names(public_url: Option<&str>, listen: Option<IpAddr>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = public_url.and_then(url_host) {
        names.push(host);
    }
    names.push("localhost".to_owned());
    if let Some(ip) = listen.filter(|ip| !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    names
}

/// The host of `scheme://HOST[:PORT][/...]` (brackets of an IPv6 address removed).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate a tracker presented is not the one pinned: carried inside the
/// handshake's error, so the client can say so plainly and not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinMismatch {
    /// The pin expected (from the enrolment token).
    pub expected: [u8; 32],
    /// SHA-256 of the certificate the server presented.
    pub found: [u8; 32],
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the tracker's TLS certificate has SHA-256 {}, not the pinned {}",
            hex::encode(self.found),
            hex::encode(self.expected)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Finds a [`PinMismatch`] in an error from a TLS connection (rustls's error wrapped in
/// an I/O error by tokio-rustls).
pub fn pin_mismatch(e: &std::io::Error) -> Option<PinMismatch> {
    let r = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match r {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
            o.0.downcast_ref::<PinMismatch>().copied()
        }
        _ => None,
    }
}

/// Accepts exactly the certificate whose DER hashes to the pin: no certificate
/// authority, no name or validity check (the pin names one certificate). The handshake's
/// signatures are still verified with that certificate's key, so only the holder of the
/// tracker's private key can complete it.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = fingerprint(end_entity);
        // Not secret, but compared without early exit all the same.
        let same = found
            .iter()
            .zip(self.pin.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    expected: self.pin,
                    found,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts exactly the certificate with SHA-256 `pin`.
pub fn pinned_client_config(pin: [u8; 32]) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions.
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("the ring provider supports TLS 1.3")
        });
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, provider }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            url_host("https://t.example:8443/x").as_deref(),
            Some("t.example")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(url_host("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(
            subject_names(Some("https://t.example:1"), Some([127, 0, 0, 1].into())),
            ["t.example", "localhost", "127.0.0.1"]
        );
        assert_eq!(
            subject_names(None, Some([0, 0, 0, 0].into())),
            ["localhost"]
        );
    }

    #[test]
    fn made_once_and_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let names = subject_names(Some("https://t.example:1"), Some([127, 0, 0, 1].into()));
        let a = TlsIdentity::load_or_create(d.path(), &names).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = TlsIdentity::load_or_create(d.path(), &["other".into()]).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.sha256, fingerprint(&b.cert));
        // A certificate without its key is an error, not a silent new identity.
        std::fs::remove_file(d.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            TlsIdentity::load_or_create(d.path(), &names),
            Err(TlsError::KeyMissing(_))
        ));
    }

    #[test]
    fn own_files_must_match() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        TlsIdentity::load_or_create(d1.path(), &[]).unwrap();
        TlsIdentity::load_or_create(d2.path(), &[]).unwrap();
        let err = TlsIdentity::from_files(&d1.path().join(CERT_FILE), &d2.path().join(KEY_FILE))
            .unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        let err = TlsIdentity::from_files(&d1.path().join(KEY_FILE), &d1.path().join(KEY_FILE))
            .unwrap_err();
        assert!(matches!(err, TlsError::Malformed { .. }), "{err}");
    }
}
