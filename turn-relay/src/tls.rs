//! The TLS listener's certificate: PEM files from the configuration, or a
//! self-signed one for development.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::TurnError;

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TurnError> {
        let cert_chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TurnError::Tls(format!("{}: {e}", cert.display())))?;
        if cert_chain.is_empty() {
            return Err(TurnError::Tls(format!(
                "{}: no certificate in the file",
                cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TurnError::Tls(format!("{}: {e}", key.display())))?;
        Ok(TlsIdentity { cert_chain, key })
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP
    /// addresses), for development only.
    pub fn self_signed(names: &[String]) -> Result<TlsIdentity, TurnError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TurnError::Tls(e.to_string()))?;
        Ok(TlsIdentity {
            cert_chain: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        })
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TurnError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            })
            .map_err(|e| TurnError::Tls(e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
