//! A loopback npm registry serving Claude Code's platform package, for the image builder's
//! `claude_code_version` tests: the real `npm` resolves versions and downloads tarballs from
//! it exactly as from registry.npmjs.org (`npm_config_registry`), and the test decides what it
//! answers (a wrong digest, a version that does not exist, a `claude` that prints another
//! version).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// One published version: its tarball and the digest the registry lists for it.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub tarball: Vec<u8>,
    pub integrity: String,
}

impl Release {
    /// A tarball like the real package's (`package/package.json`, `package/claude`) whose
    /// `claude` is `script`, listed with its true digest.
    pub fn with_script(package: &str, version: &str, script: &str, scratch: &Path) -> Release {
        Release::with_files(package, version, scratch, |root| {
            std::fs::write(root.join("claude"), script).expect("write claude");
            std::fs::set_permissions(
                root.join("claude"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("chmod");
        })
    }

    /// A release whose `package/` holds a package.json for `package`@`version` and what
    /// `populate` puts beside it.
    pub fn with_files(
        package: &str,
        version: &str,
        scratch: &Path,
        populate: impl FnOnce(&Path),
    ) -> Release {
        let dir = scratch.join(format!("release-{version}"));
        let root = dir.join("package");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(
            root.join("package.json"),
            format!(r#"{{"name": "{package}", "version": "{version}"}}"#),
        )
        .expect("write package.json");
        populate(&root);
        let tarball = dir.join("package.tgz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dir)
            .arg("package")
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar failed");
        let bytes = std::fs::read(&tarball).expect("read the tarball");
        let integrity = ccvm_image::sri_sha512(&bytes[..]).expect("hash");
        Release {
            version: version.to_owned(),
            tarball: bytes,
            integrity,
        }
    }
}

/// The registry: serves until the test process ends.
#[derive(Debug)]
pub struct Registry {
    pub url: String,
    /// Every request path, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    /// Serves `package` with `releases`, `latest` being the `latest` dist-tag.
    pub fn start(package: &str, releases: Vec<Release>, latest: &str) -> Registry {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind loopback");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let versions: serde_json::Map<String, serde_json::Value> = releases
            .iter()
            .map(|r| {
                (
                    r.version.clone(),
                    serde_json::json!({
                        "name": package,
                        "version": r.version,
                        "dist": {
                            "tarball": format!("{url}tarballs/{}.tgz", r.version),
                            "integrity": r.integrity,
                        },
                    }),
                )
            })
            .collect();
        let packument = serde_json::json!({
            "name": package,
            "dist-tags": { "latest": latest },
            "versions": versions,
        })
        .to_string();
        let escaped = package.replace('/', "%2f");
        let log = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &escaped, &packument, &releases, &log);
            }
        });
        Registry { url, requests }
    }
}

fn serve(
    stream: TcpStream,
    escaped: &str,
    packument: &str,
    releases: &[Release],
    log: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The headers, up to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    log.lock().expect("log").push(path.clone());
    let (status, body): (&str, Vec<u8>) = if path.eq_ignore_ascii_case(&format!("/{escaped}")) {
        ("200 OK", packument.as_bytes().to_vec())
    } else if let Some(release) = releases
        .iter()
        .find(|r| path == format!("/tarballs/{}.tgz", r.version))
    {
        ("200 OK", release.tarball.clone())
    } else {
        ("404 Not Found", br#"{"error":"not found"}"#.to_vec())
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}
