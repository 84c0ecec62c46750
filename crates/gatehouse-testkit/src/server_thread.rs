//! The thread a test server runs on, and its stop signal: dropping the handle stops the
//! server and waits for its thread, so a test never leaves a server behind.

/// A running test server's thread.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Owns `thread`, which ends when `stop` is sent (or dropped).
    pub(crate) fn new(
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    ) -> ServerThread {
        ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds 127.0.0.1 (a free port) and serves it on a thread of its own with a two-thread
/// runtime: each accepted connection goes to `on_conn` as a task, until the returned handle
/// is dropped.
pub(crate) fn accept_loop<F, Fut>(what: &str, on_conn: F) -> (std::net::SocketAddr, ServerThread)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind {what}: {e}"));
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("addr");
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        tokio::spawn(on_conn(stream));
                    }
                }
            }
        });
        rt.shutdown_timeout(std::time::Duration::from_millis(100));
    });
    (addr, ServerThread::new(stop, thread))
}

/// A TLS server config from PEM `cert` and `key`; with `client_ca` it requires a client
/// certificate issued by that CA.
pub(crate) fn tls_config(cert: &str, key: &str, client_ca: Option<&str>) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject;
    use std::sync::Arc;
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert pem");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("ca pem")).expect("ca");
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(v)
        }
    };
    builder.with_single_cert(certs, key).expect("server cert")
}
