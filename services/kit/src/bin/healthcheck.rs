//! `healthcheck [URL]`: exits 0 if an HTTP GET of URL (default http://127.0.0.1:8080/healthz) answers
//! 200. For container health checks in images without a shell or curl; it needs no dependencies.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

fn main() {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080/healthz".to_owned());
    match check(&url) {
        Ok(()) => {}
        Err(reason) => {
            eprintln!("healthcheck {url}: {reason}");
            std::process::exit(1);
        }
    }
}

fn check(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let address =
        std::net::ToSocketAddrs::to_socket_addrs(authority).map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[9..12]).into_owned();
    if status == "200" { Ok(()) } else { Err(format!("status {status}")) }
}
