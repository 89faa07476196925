//! HTTPS with rustls: a PEM certificate chain and private key from the
//! configuration, TLS 1.2 and 1.3 only, ring for the cryptography.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::WebError;

/// Where the certificate chain and its key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn tls_err(path: &Path, what: &str, e: impl std::fmt::Display) -> WebError {
    WebError::Tls(format!("{what} {}: {e}", path.display()))
}

/// Loads the files and builds the server's TLS settings; every mistake
/// (missing file, no certificate in it, key not matching) is an error that
/// names the file, found before the server starts.
pub(crate) fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, WebError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_err(&files.cert, "certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&files.cert, "certificate", e))?;
    if certs.is_empty() {
        return Err(tls_err(&files.cert, "certificate", "no CERTIFICATE block"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| tls_err(&files.key, "key", e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&files.key, "key does not fit the certificate", e))
}
