//! The ssh `ProxyCommand` for backends that reach sshd over hybrid vsock (D4): connect to
//! the hypervisor's Unix socket, send `CONNECT <port>\n`, expect `OK …\n`, then relay
//! stdin/stdout. The handshake has a deadline: a guest without a vsock driver never answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::error::Error;

/// How long the `CONNECT` handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(socket: &Path, what: String) -> Error {
    Error::Vsock {
        socket: socket.to_owned(),
        problem: what,
    }
}

/// Connects and completes the handshake; returns the stream positioned after `OK …\n`.
pub fn connect(
    socket: &Path,
    port: u32,
    timeout: Duration,
) -> Result<(UnixStream, Vec<u8>), Error> {
    let mut stream = UnixStream::connect(socket).map_err(|e| failed(socket, e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| failed(socket, e.to_string()))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| failed(socket, e.to_string()))?;
    let mut reader = BufReader::new(
        stream
            .try_clone()
            .map_err(|e| failed(socket, e.to_string()))?,
    );
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| failed(socket, format!("no answer to CONNECT {port} ({e})")))?;
    if !line.starts_with("OK ") {
        return Err(failed(
            socket,
            format!("CONNECT {port} was refused: {:?}", line.trim_end()),
        ));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| failed(socket, e.to_string()))?;
    // Bytes the reader buffered past the OK line belong to the session.
    let leftover = reader.buffer().to_vec();
    Ok((stream, leftover))
}

/// Runs the proxy until either side closes.
pub fn proxy(socket: &Path, port: u32) -> Result<u8, Error> {
    let (stream, leftover) = connect(socket, port, HANDSHAKE_TIMEOUT)?;
    let mut to_guest = stream
        .try_clone()
        .map_err(|e| failed(socket, e.to_string()))?;
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        // When stdin ends, tell the guest side we are done writing.
        let _ = std::io::copy(&mut stdin, &mut to_guest);
        let _ = to_guest.shutdown(std::net::Shutdown::Write);
    });
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&leftover)
        .and_then(|()| stdout.flush())
        .map_err(|e| failed(socket, e.to_string()))?;
    let mut from_guest = stream;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = from_guest
            .read(&mut buffer)
            .map_err(|e| failed(socket, e.to_string()))?;
        if n == 0 {
            return Ok(0);
        }
        stdout
            .write_all(&buffer[..n])
            .and_then(|()| stdout.flush())
            .map_err(|e| failed(socket, e.to_string()))?;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    fn server(
        answer: &'static [u8],
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<String>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut line = String::new();
            BufReader::new(conn.try_clone().expect("clone"))
                .read_line(&mut line)
                .expect("read");
            conn.write_all(answer).expect("answer");
            line
        });
        (dir, path, handle)
    }

    #[test]
    fn handshake_sends_connect_and_keeps_bytes_after_ok() {
        let (_dir, path, handle) = server(b"OK 1073741824\nSSH-2.0-OpenSSH_9.2\r\n");
        let (_stream, leftover) = connect(&path, 22, Duration::from_secs(5)).expect("connects");
        assert_eq!(handle.join().expect("server"), "CONNECT 22\n");
        // The banner may arrive with the OK line or later; whatever came early is kept.
        assert!(
            b"SSH-2.0-OpenSSH_9.2\r\n".starts_with(&leftover),
            "{leftover:?}"
        );
    }

    #[test]
    fn refusal_is_an_error_naming_the_answer() {
        let (_dir, path, _handle) = server(b"ERR no such port\n");
        let error = connect(&path, 22, Duration::from_secs(5)).expect_err("refused");
        assert!(error.to_string().contains("ERR no such port"), "{error}");
    }

    #[test]
    fn silent_guest_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vsock.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let error = connect(&path, 22, Duration::from_millis(200)).expect_err("timeout");
        assert!(error.to_string().contains("no answer"), "{error}");
    }
}
