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
