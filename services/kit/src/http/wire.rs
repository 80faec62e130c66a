//! The bytes on a connection before and after the router: hyper answers a request that does not parse
//! (a bad request line or header, a head over the size limit, an over-long target) by itself, with an
//! empty body, before any service code runs. [`JsonParseErrors`] gives those answers the common JSON
//! error shape.
//!
//! hyper offers no hook for its automatic responses (hyperium/hyper#3844), so the connection's writer
//! recognises them: a head with status 400, 414 or 431 and `content-length: 0` at the start of a
//! write. The services' own 400s always carry a JSON body, so nothing of theirs matches. The connection
//! is closed after such an answer, as hyper closes it.
//!
//! A connection closes with a lingering close (RFC 9112 §9.6): the server shuts down its side, then
//! reads and discards what the client still sends, for a bounded time and amount, before it closes.
//! A client that writes a whole body before it reads the answer (a 413 given before the body was read,
//! say) then reads that answer, where an immediate close with unread bytes would send it a reset that
//! destroys the answer.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

/// The most bytes of a request head (request line and headers) a server reads; a larger head is a 431.
/// Room for the longest target hyper accepts (65 534 bytes; longer is a 414) and a few headers.
pub const MAX_HEADER_BYTES: usize = 72 * 1024;

/// The longest a closing connection goes on reading what its client still sends.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// The most bytes a closing connection reads and discards before it closes regardless.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// A connection whose writes of hyper's own error responses are replaced by the JSON error shape, and
/// which closes with a lingering close.
pub struct JsonParseErrors<IO> {
    inner: IO,
    /// A replacement being written: the bytes, how many are written, and the length of hyper's bytes it
    /// stands for (reported as written once the replacement is).
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// Once its side is shut down: when the lingering ends, and how many bytes it has discarded.
    lingering: Option<(Pin<Box<Sleep>>, usize)>,
}

impl<IO> JsonParseErrors<IO> {
    pub fn new(inner: IO) -> Self {
        Self { inner, replacing: None, lingering: None }
    }
}

/// The JSON answer standing for `written` when it is one of hyper's automatic error responses, whole.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != written.len() {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?.to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (status, code, message) = match head.get(..13)? {
        "http/1.1 400 " | "http/1.0 400 " => (
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1: its request line or a header does not parse".to_owned(),
        ),
        "http/1.1 414 " | "http/1.0 414 " => {
            ("414 URI Too Long", "uri_too_long", "the request target is longer than 65534 bytes".to_owned())
        }
        "http/1.1 431 " | "http/1.0 431 " => (
            "431 Request Header Fields Too Large",
            "headers_too_large",
            format!("the request line and headers are larger than {MAX_HEADER_BYTES} bytes"),
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonParseErrors<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> JsonParseErrors<IO> {
    /// Writes what is left of the replacement; `Ready(Ok(n))` with the length of hyper's bytes when done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((bytes, written, stands_for)) = &mut self.replacing else {
            unreachable!("only called while replacing")
        };
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let stands_for = *stands_for;
        self.replacing = None;
        Poll::Ready(Ok(stands_for))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => self.replacing = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        self.poll_replacement(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // An automatic response is a head alone, so one non-empty slice.
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shuts down the write side, then reads until the client closes its side, [`LINGER_TIME`] has
    /// passed or [`LINGER_BYTES`] are read, whichever comes first; only then is the connection closed.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            std::task::ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.lingering = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        let this = &mut *self;
        let Some((deadline, discarded)) = &mut this.lingering else { unreachable!("set above") };
        let mut scratch = [0; 8192];
        loop {
            let mut buffer = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buffer) {
                // The client closed (or reset) its side: nothing is left to lose.
                Poll::Ready(Ok(())) if buffer.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    *discarded += buffer.filled().len();
                    if *discarded >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending => return deadline.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_400_414_and_431_heads_are_replaced() {
        let automatic = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let replaced = String::from_utf8(replacement(automatic).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{replaced}");
        assert!(replaced.ends_with(
            r#"{"error":"headers_too_large","message":"the request line and headers are larger than 73728 bytes"}"#
        ));
        // A service's own answers: a 400 with a body, a 404 without one, a head followed by its body.
        for own in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert_eq!(replacement(own), None, "{}", String::from_utf8_lossy(own));
        }
    }
}
