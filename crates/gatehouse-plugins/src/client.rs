//! A one-request HTTP/1.1 client for plugins that call out of the request path (http-log's
//! sink, jwt's JWKS endpoint): a fresh connection per call, which those rare calls afford.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};

/// Sends `req` to `host:port` (setting `Host`) and returns the status and whole body;
/// `Err` on a connection or protocol failure, or a non-2xx status.
pub async fn send(
    host: &str,
    port: u16,
    mut req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let authority =
        http::HeaderValue::from_str(&format!("{host}:{port}")).map_err(|e| e.to_string())?;
    req.headers_mut().insert(http::header::HOST, authority);
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, body))
}
