//! One TLS client set-up for connectors that open their own connections (IRC, XMPP): rustls with
//! aws-lc-rs, the Mozilla root store, and optionally the certificate authorities of an operator's
//! PEM file (a private network's CA, or a test server's throwaway one). Certificates are always
//! verified; there is no switch to turn that off.

use std::path::Path;
use std::sync::Arc;

/// A client configuration trusting the Mozilla roots and every certificate in `ca_file`. The
/// error names the file and says what is wrong with it.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!("{}: no PEM certificate in it", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("pss-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(err.contains("empty.pem") && err.contains("no PEM"), "{err}");
        let err = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(client_config(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
