//! HTTPS with a real certificate (self-signed for 127.0.0.1, made by the
//! test): the API answers over TLS, session cookies are `Secure`, and bad
//! certificate files are refused before the server starts, naming the file.

mod common;

use std::sync::Arc;

use common::{TestServer, PASSWORD};
use vigil_storage::WriterStats;
use vigil_web_ui::TlsFiles;

struct Certs {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    cert_pem: String,
}

fn self_signed() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = made.cert.pem();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, &cert_pem).unwrap();
    std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
    Certs {
        _dir: dir,
        files,
        cert_pem,
    }
}

/// A client that trusts only this certificate.
fn client(cert_pem: &str) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .into()
}

#[test]
fn the_api_answers_over_https_with_secure_cookies() {
    let certs = self_signed();
    let server =
        TestServer::start_with(Arc::new(WriterStats::default()), Some(certs.files.clone()));
    assert!(server.origin.starts_with("https://"));
    let agent = client(&certs.cert_pem);
    let mut r = agent
        .get(&format!("{}/api/v1/cameras", server.origin))
        .header("Authorization", format!("Bearer {}", server.read_token))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.body_mut().read_to_string().unwrap().contains("gate"));
    let login = agent
        .post(&format!("{}/api/v1/login", server.origin))
        .content_type("application/json")
        .send(format!(r#"{{"user":"ana","password":"{PASSWORD}"}}"#))
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");

    // A client that does not trust the certificate gets no answer.
    let stranger = ureq::get(&format!("{}/healthz", server.origin)).call();
    assert!(stranger.is_err(), "{stranger:?}");
}

#[test]
fn missing_or_mismatched_certificate_files_are_refused_by_name() {
    let certs = self_signed();
    let other = self_signed();
    let message = |files: TlsFiles| -> String {
        match TestServer::try_start_with(Arc::new(WriterStats::default()), Some(files)) {
            Ok(_) => panic!("started with bad TLS files"),
            Err(e) => e.to_string(),
        }
    };
    let missing = TlsFiles {
        cert: certs.files.cert.with_file_name("nope.pem"),
        key: certs.files.key.clone(),
    };
    let e = message(missing);
    assert!(e.contains("nope.pem"), "{e}");
    let mismatched = TlsFiles {
        cert: certs.files.cert.clone(),
        key: other.files.key.clone(),
    };
    let e = message(mismatched);
    assert!(e.contains("key does not fit"), "{e}");
    let swapped = TlsFiles {
        cert: certs.files.key.clone(),
        key: certs.files.cert.clone(),
    };
    let e = message(swapped);
    assert!(e.contains("certificate"), "{e}");
}
