//! A recording upstream for framing tests: it logs the exact bytes each connection carries,
//! splits them into requests with a strict HTTP/1.1 reader, and notes every way a request
//! could be read differently by another server (the gateway must never send one). Tests send
//! hostile requests to the gateway and then check what reached this upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the recorder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `200` with a small JSON body naming the request (its index and target).
    Echo,
    /// `101 Switching Protocols` (`Upgrade: h2c`) to every request, then silence: an
    /// upstream that switches protocols unasked. Anything received after it is a violation.
    Switch101,
}

/// One request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which accepted connection (0-based) carried it.
    pub conn: usize,
    /// Method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// Header lines, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of a header (name in lower case).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The single value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    violations: Vec<String>,
    raw: Vec<Vec<u8>>,
}

/// A running recording upstream; stops when dropped.
pub struct Recorder {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: crate::server_thread::ServerThread,
}

impl Recorder {
    /// Starts a recorder on 127.0.0.1 (random port) answering with `answer`.
    pub fn start(answer: Answer) -> Recorder {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        acc = listener.accept() => {
                            let Ok((stream, _)) = acc else { continue };
                            let conn = {
                                let mut s = st.lock().unwrap_or_else(PoisonError::into_inner);
                                s.raw.push(Vec::new());
                                s.raw.len() - 1
                            };
                            tokio::spawn(serve(stream, conn, st.clone(), answer));
                        }
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Recorder {
            addr,
            state,
            _server: crate::server_thread::ServerThread::new(stop, thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Requests read so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// Ways the received bytes could be read ambiguously (should stay empty).
    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    /// Every byte each connection carried, as text (for failure messages).
    pub fn raw_text(&self) -> String {
        self.with(|s| {
            s.raw
                .iter()
                .enumerate()
                .map(|(i, r)| format!("--- connection {i} ---\n{}", String::from_utf8_lossy(r)))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.with(|s| s.raw.len())
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.requests.clear();
        s.violations.clear();
        for r in &mut s.raw {
            r.clear();
        }
    }

    /// Waits until at least `n` requests were read (or `within` passed), then a little more
    /// so that anything smuggled behind them arrives too; returns what was read.
    pub fn settle(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let start = Instant::now();
        while self.with(|s| s.requests.len()) < n && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(150));
        self.requests()
    }
}

fn note(state: &Mutex<State>, f: impl FnOnce(&mut State)) {
    f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
}

async fn serve(mut s: TcpStream, conn: usize, state: Arc<Mutex<State>>, answer: Answer) {
    let mut buf: Vec<u8> = Vec::new();
    let mut switched = false;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        note(&state, |st| st.raw[conn].extend_from_slice(&chunk[..n]));
        if switched {
            note(&state, |st| {
                st.violations
                    .push("bytes arrived after an unasked 101 (the gateway tunnelled)".into())
            });
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match read_one(&buf) {
                Parse::More => break,
                Parse::Bad(why) => {
                    note(&state, |st| st.violations.push(why));
                    return;
                }
                Parse::Done(req, used, mut problems) => {
                    buf.drain(..used);
                    let mut rec = req;
                    rec.conn = conn;
                    let index = {
                        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                        st.violations.append(&mut problems);
                        st.requests.push(rec.clone());
                        st.requests.len() - 1
                    };
                    let out = match answer {
                        Answer::Echo => {
                            let body = serde_json::json!({
                                "index": index,
                                "target": rec.target,
                                "body_len": rec.body.len(),
                            })
                            .to_string();
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: recorder\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        }
                        Answer::Switch101 => {
                            switched = true;
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                                .to_string()
                        }
                    };
                    if s.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    if switched {
                        break;
                    }
                }
            }
        }
    }
}

enum Parse {
    More,
    Bad(String),
    Done(Recorded, usize, Vec<String>),
}

/// Reads one request off the front of `buf` the strict way, listing what a lenient or
/// different reader could take another way.
fn read_one(buf: &[u8]) -> Parse {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 256 * 1024 {
            return Parse::Bad("request head too large".into());
        }
        return Parse::More;
    };
    let head = &buf[..end + 4];
    let mut problems = Vec::new();
    if head
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        problems.push("bare LF in a forwarded head".into());
    }
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Parse::Bad(format!(
                "unparsable head: {:?}",
                String::from_utf8_lossy(head)
            ))
        }
    }
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let get = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let cls = get("content-length");
    let tes = get("transfer-encoding");
    if !cls.is_empty() && !tes.is_empty() {
        problems.push("Content-Length and Transfer-Encoding together".into());
    }
    if cls.len() > 1 {
        problems.push(format!("{} Content-Length headers", cls.len()));
    }
    if tes.len() > 1
        || tes
            .first()
            .is_some_and(|t| !t.eq_ignore_ascii_case("chunked"))
    {
        problems.push(format!("Transfer-Encoding {tes:?} is not a single chunked"));
    }
    if get("host").len() != 1 {
        problems.push(format!("{} Host headers", get("host").len()));
    }
    for c in get("connection") {
        for t in c.split(',').map(str::trim) {
            if ["content-length", "transfer-encoding", "host"]
                .iter()
                .any(|p| t.eq_ignore_ascii_case(p))
            {
                problems.push(format!("Connection names {t}"));
            }
        }
    }
    for u in get("upgrade") {
        if !u.eq_ignore_ascii_case("websocket") {
            problems.push(format!("Upgrade: {u} forwarded"));
        }
    }
    if !get("http2-settings").is_empty() {
        problems.push("HTTP2-Settings forwarded".into());
    }
    let mut rec = Recorded {
        conn: 0,
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        headers: headers.clone(),
        body: Vec::new(),
    };
    let mut at = end + 4;
    if let Some(te) = tes.first() {
        if !te.eq_ignore_ascii_case("chunked") {
            return Parse::Bad(format!("cannot frame Transfer-Encoding {te}"));
        }
        loop {
            let Some(le) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                return Parse::More;
            };
            let line = &buf[at..at + le];
            let hex: Vec<u8> = line
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .copied()
                .collect();
            if hex.is_empty() || (hex.len() < line.len() && line[hex.len()] != b';') {
                problems.push(format!(
                    "chunk size line {:?} is not strict",
                    String::from_utf8_lossy(line)
                ));
            }
            let Ok(size) = usize::from_str_radix(&String::from_utf8_lossy(&hex), 16) else {
                return Parse::Bad("bad chunk size".into());
            };
            at += le + 2;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let Some(le) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                        return Parse::More;
                    };
                    at += le + 2;
                    if le == 0 {
                        break;
                    }
                    problems.push("trailer forwarded".into());
                }
                break;
            }
            if buf.len() < at + size + 2 {
                return Parse::More;
            }
            rec.body.extend_from_slice(&buf[at..at + size]);
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Parse::Bad("missing CRLF after chunk".into());
            }
            at += size + 2;
        }
    } else if let Some(cl) = cls.first() {
        let Ok(n) = cl.trim().parse::<usize>() else {
            return Parse::Bad(format!("bad Content-Length {cl}"));
        };
        if buf.len() < at + n {
            return Parse::More;
        }
        rec.body.extend_from_slice(&buf[at..at + n]);
        at += n;
    }
    Parse::Done(rec, at, problems)
}
