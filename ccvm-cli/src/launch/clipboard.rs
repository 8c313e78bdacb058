//! The host side of the clipboard bridge (S8): the responder the launcher runs for the
//! plan's `clipboard-images` host service.
//!
//! It listens on a Unix socket in the private run directory (mode 0700, the socket itself
//! 0600, and a peer that is not this user is dropped), so only this session's ssh client can
//! reach it: no TCP port, nothing another user or another guest could connect to. The ssh
//! session carries the guest's loopback port there. Each connection is one request of the
//! contract in [`ccvm_plugin_api::clipboard`], matched byte for byte: `TARGETS` is answered
//! with the image types on offer (never anything else), an image type with the clipboard's
//! bytes when they really are such an image. Everything else is refused without running
//! anything. The host tool (`xclip` or `wl-paste`, found by ccvm's trusted `PATH` lookup) runs
//! by absolute path with a fixed argv that names only our own constants, no shell, the
//! display variables as its whole environment (never the API key), a deadline and a size cap;
//! nothing ever writes the host clipboard.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ccvm_plugin_api::clipboard::{self, Header, Refusal, Request};
use ccvm_plugin_api::{HostService, HostServiceKind};

/// At most this many connections are served at once; more are answered `busy`.
const MAX_CONNECTIONS: usize = 4;
/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// Deadlines and caps of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the guest to send its request line.
    pub request: Duration,
    /// For the tool to list the offered types. Claude Code 2.1.330 gives its `xclip … -t
    /// TARGETS` 3 s in all, so this must answer well within that.
    pub targets: Duration,
    /// For the tool to hand over an image (Claude Code waits 30 s for it).
    pub image: Duration,
    /// For the guest to take the answer.
    pub write: Duration,
    /// The largest image that crosses.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request: Duration::from_secs(5),
            targets: Duration::from_secs(2),
            image: Duration::from_secs(10),
            write: Duration::from_secs(20),
            max_bytes: clipboard::MAX_IMAGE_BYTES,
        }
    }
}

/// Which program the tool is; it decides the argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    Xclip,
    WlPaste,
}

/// A host clipboard tool, ready to run.
#[derive(Debug, Clone)]
pub struct Tool {
    kind: ToolKind,
    path: PathBuf,
    env: BTreeMap<String, String>,
}

impl Tool {
    /// The tool at `path` (named `xclip` or `wl-paste`), with `env` (the plan's display
    /// variables, [`crate::host::display_environment`]) as its whole environment.
    pub fn new(path: &Path, env: &BTreeMap<String, String>) -> Option<Tool> {
        let kind = match path.file_name()?.to_str()? {
            "xclip" => ToolKind::Xclip,
            "wl-paste" => ToolKind::WlPaste,
            _ => return None,
        };
        Some(Tool {
            kind,
            path: path.to_owned(),
            env: env.clone(),
        })
    }

    /// The arguments for `request`: fixed words and our own type constant, never a byte the
    /// guest sent.
    fn args(&self, request: Request) -> Vec<&'static str> {
        match (self.kind, request) {
            (ToolKind::Xclip, request) => {
                vec!["-selection", "clipboard", "-o", "-t", request.token()]
            }
            (ToolKind::WlPaste, Request::Targets) => vec!["--list-types"],
            (ToolKind::WlPaste, Request::Image(mime)) => vec!["--no-newline", "--type", mime],
        }
    }

    /// Runs the tool for `request` and returns its stdout, within `limit` and `max_bytes`.
    fn run(&self, request: Request, limit: Duration, max_bytes: usize) -> Result<Vec<u8>, Refusal> {
        let mut command = Command::new(&self.path);
        command
            .args(self.args(request))
            .env_clear()
            .envs(&self.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own group, so a timeout kills whatever it started too.
            .process_group(0);
        super::machine::die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|_| Refusal::Unavailable)?;
        let deadline = Instant::now() + limit;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(stdout) = stdout {
                // One byte past the cap tells "too large" from "exactly the cap".
                let _ = stdout.take(max_bytes as u64 + 1).read_to_end(&mut bytes);
            }
            // The receiver may have given up at its deadline.
            let _ = tx.send(bytes);
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = match rx.recv_timeout(left) {
            Ok(bytes) => bytes,
            Err(_) => {
                kill(&mut child);
                return Err(Refusal::Timeout);
            }
        };
        if bytes.len() > max_bytes {
            kill(&mut child);
            return Err(Refusal::TooLarge);
        }
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(bytes),
                Ok(Some(_)) => return Err(Refusal::Empty),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    kill(&mut child);
                    return Err(Refusal::Timeout);
                }
            }
        }
    }

    /// The answer to one request: the body of an `OK`, or why not.
    pub fn answer(&self, request: Request, limits: &Limits) -> Result<Vec<u8>, Refusal> {
        match request {
            Request::Targets => {
                let listing = self.run(request, limits.targets, limits.max_bytes)?;
                let types = clipboard::image_targets(&listing);
                if types.is_empty() {
                    return Err(Refusal::Empty);
                }
                Ok(types
                    .iter()
                    .flat_map(|t| [t.as_bytes(), b"\n"])
                    .flatten()
                    .copied()
                    .collect())
            }
            Request::Image(mime) => {
                let bytes = self.run(request, limits.image, limits.max_bytes)?;
                if clipboard::looks_like(mime, &bytes) {
                    Ok(bytes)
                } else {
                    // Empty, or text (or another type) offered under this one.
                    Err(Refusal::Empty)
                }
            }
        }
    }
}

/// Kills the tool's whole process group and reaps it.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the request: up to the first `\n`, at most [`clipboard::MAX_REQUEST_BYTES`] + 1
/// bytes, within the deadline set on the stream. Whatever arrived is returned as it is, for
/// [`Request::parse`] to match exactly.
fn read_request(stream: &mut UnixStream) -> Vec<u8> {
    let mut message = Vec::new();
    let mut chunk = [0u8; clipboard::MAX_REQUEST_BYTES + 1];
    while message.len() <= clipboard::MAX_REQUEST_BYTES && !message.contains(&b'\n') {
        let room = clipboard::MAX_REQUEST_BYTES + 1 - message.len();
        match stream.read(&mut chunk[..room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => message.extend_from_slice(&chunk[..n]),
        }
    }
    message
}

/// Whether the peer of `stream` runs as this user (ssh does; the run directory already keeps
/// everyone else out, this says so twice).
fn peer_is_us(stream: &UnixStream) -> bool {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw())
}

/// Serves one connection: one request, one answer.
fn serve(mut stream: UnixStream, tool: &Tool, limits: &Limits, one_at_a_time: &Mutex<()>) {
    if !peer_is_us(&stream) {
        return;
    }
    let _ = stream.set_read_timeout(Some(limits.request));
    let _ = stream.set_write_timeout(Some(limits.write));
    let message = read_request(&mut stream);
    let answer = match Request::parse(&message) {
        None => Err(Refusal::Refused),
        Some(request) => {
            // One tool at a time: a guest cannot make the host run many at once.
            let _turn = one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
            tool.answer(request, limits)
        }
    };
    let _ = match answer {
        Ok(body) => stream
            .write_all(Header::Ok(body.len()).line().as_bytes())
            .and_then(|()| stream.write_all(&body)),
        Err(refusal) => stream.write_all(Header::No(Some(refusal)).line().as_bytes()),
    };
}

/// The running responder; stops when dropped.
#[derive(Debug)]
pub struct Responder {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Listens on `socket` (mode 0600; its directory must be private) and answers with `tool`.
    pub fn bind(socket: &Path, tool: Tool, limits: Limits) -> std::io::Result<Responder> {
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("clipboard".to_owned())
            .spawn(move || accept_loop(&listener, &tool, limits, &flag))?;
        Ok(Responder {
            socket: socket.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    #[cfg(test)]
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn accept_loop(listener: &UnixListener, tool: &Tool, limits: Limits, stop: &AtomicBool) {
    let tool = Arc::new(tool.clone());
    let active = Arc::new(AtomicUsize::new(0));
    let one_at_a_time = Arc::new(Mutex::new(()));
    while !stop.load(Ordering::SeqCst) {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(Header::No(Some(Refusal::Busy)).line().as_bytes());
            continue;
        }
        let (tool, done, one_at_a_time) = (
            Arc::clone(&tool),
            Arc::clone(&active),
            Arc::clone(&one_at_a_time),
        );
        let spawned = std::thread::Builder::new()
            .name("clipboard-request".to_owned())
            .spawn(move || {
                serve(stream, &tool, &limits, &one_at_a_time);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Starts the plan's clipboard responder, if it has one (the launcher calls this once the run
/// directory exists; the planner has checked the socket's place and the tool). A responder
/// that cannot listen is a warning: the session works without paste.
pub fn start(services: &[HostService], env: &BTreeMap<String, String>) -> Option<Responder> {
    let HostServiceKind::ClipboardImages { socket, tool } = &services.first()?.kind;
    let socket = Path::new(socket);
    let Some(tool) = Tool::new(Path::new(tool), env) else {
        eprintln!(
            "ccvm: warning: image paste is off for this session: {tool} is not a clipboard tool"
        );
        return None;
    };
    match Responder::bind(socket, tool, Limits::default()) {
        Ok(responder) => Some(responder),
        Err(e) => {
            eprintln!(
                "ccvm: warning: image paste is off for this session: cannot listen on {}: {e}",
                socket.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\x01\x02\n\r\xffbinary";

    /// A private directory with a fake tool named `name` running `body` (sh), which logs its
    /// argv to `argv.log` and its environment to `env.log`.
    struct Fake {
        dir: tempfile::TempDir,
        tool: Tool,
    }

    impl Fake {
        fn new(name: &str, body: &str) -> Fake {
            Fake::with_env(
                name,
                body,
                &[("DISPLAY", ":7"), ("ANTHROPIC_API_KEY", "sk-ant-secret")],
            )
        }

        fn with_env(name: &str, body: &str, env: &[(&str, &str)]) -> Fake {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            let d = dir.path().display();
            let script = format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/argv.log\nenv > {d}/env.log\n{body}\n"
            );
            let path = dir.path().join(name);
            std::fs::write(&path, script).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            std::fs::write(dir.path().join("png"), PNG).expect("write");
            let env = crate::host::display_environment(&crate::config::Env::from_pairs(
                env.iter().copied(),
            ));
            let tool = Tool::new(&path, &env).expect("a tool");
            Fake { dir, tool }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn argv(&self) -> Option<Vec<String>> {
            let text = std::fs::read_to_string(self.path("argv.log")).ok()?;
            Some(text.lines().map(str::to_owned).collect())
        }

        fn answer(&self, request: Request) -> Result<Vec<u8>, Refusal> {
            self.tool.answer(request, &Limits::default())
        }

        fn responder(&self, limits: Limits) -> Responder {
            Responder::bind(&self.path("clipboard.sock"), self.tool.clone(), limits).expect("bind")
        }
    }

    /// Sends `message` and reads the whole answer. The responder closes after its answer
    /// without reading more than a request, so a longer message may end in a reset (after the
    /// answer) or fail to be written whole.
    fn ask(socket: &Path, message: &[u8]) -> Vec<u8> {
        let mut stream = UnixStream::connect(socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = stream.write_all(message);
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read: {e}"),
        }
        answer
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        let mut answer = Header::Ok(body.len()).line().into_bytes();
        answer.extend_from_slice(body);
        answer
    }

    fn no(refusal: Refusal) -> Vec<u8> {
        Header::No(Some(refusal)).line().into_bytes()
    }

    #[test]
    fn targets_answer_lists_only_the_image_types_on_offer() {
        let fake = Fake::new(
            "xclip",
            "printf 'TARGETS\\nTIMESTAMP\\nUTF8_STRING\\ntext/plain\\nimage/svg+xml\\nimage/png\\n\
             image/jpeg\\nimage/pngx\\n'",
        );
        assert_eq!(
            fake.answer(Request::Targets),
            Ok(b"image/png\nimage/jpeg\n".to_vec())
        );
        assert_eq!(
            fake.argv().expect("ran"),
            ["-selection", "clipboard", "-o", "-t", "TARGETS"]
        );
    }

    #[test]
    fn targets_answer_without_images_is_empty() {
        let fake = Fake::new(
            "xclip",
            "printf 'TARGETS\\nUTF8_STRING\\nSTRING\\ntext/plain\\n'",
        );
        assert_eq!(fake.answer(Request::Targets), Err(Refusal::Empty));
    }

    #[test]
    fn image_answer_is_the_tools_bytes_exactly() {
        let fake = Fake::new("xclip", &format!("cat {}/png", "$(dirname \"$0\")"));
        assert_eq!(fake.answer(Request::Image("image/png")), Ok(PNG.to_vec()));
        assert_eq!(
            fake.argv().expect("ran"),
            ["-selection", "clipboard", "-o", "-t", "image/png"]
        );
    }

    #[test]
    fn wl_paste_is_asked_for_the_list_and_the_exact_type() {
        let fake = Fake::new(
            "wl-paste",
            "case \"$1\" in --list-types) printf 'text/plain\\nimage/png\\n';; *) cat \"$(dirname \"$0\")/png\";; esac",
        );
        assert_eq!(fake.answer(Request::Targets), Ok(b"image/png\n".to_vec()));
        assert_eq!(fake.argv().expect("ran"), ["--list-types"]);
        assert_eq!(fake.answer(Request::Image("image/png")), Ok(PNG.to_vec()));
        assert_eq!(
            fake.argv().expect("ran"),
            ["--no-newline", "--type", "image/png"]
        );
    }

    #[test]
    fn tool_environment_is_the_display_variables_only() {
        let fake = Fake::with_env(
            "xclip",
            "printf 'image/png\\n'",
            &[
                ("DISPLAY", ":7"),
                ("XAUTHORITY", "/home/alice/.Xauthority-x"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("ANTHROPIC_API_KEY", "sk-ant-secret"),
                ("HOME", "/home/alice"),
                ("PATH", "/usr/bin:/bin"),
                ("LD_PRELOAD", "/tmp/evil.so"),
            ],
        );
        fake.answer(Request::Targets).expect("answers");
        let env = std::fs::read_to_string(fake.path("env.log")).expect("env.log");
        let mut names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            // sh sets these itself.
            .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(k))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR"], "{env}");
        assert!(!env.contains("sk-ant-secret"), "{env}");
        assert!(env.contains("PWD=/\n"), "runs in /: {env}");
    }

    #[test]
    fn xclip_without_xauthority_is_given_the_home_one() {
        let fake = Fake::with_env(
            "xclip",
            "printf 'image/png\\n'",
            &[("DISPLAY", ":7"), ("HOME", "/home/alice")],
        );
        fake.answer(Request::Targets).expect("answers");
        let env = std::fs::read_to_string(fake.path("env.log")).expect("env.log");
        assert!(
            env.contains("XAUTHORITY=/home/alice/.Xauthority\n"),
            "{env}"
        );
        assert!(!env.contains("HOME="), "{env}");
    }

    #[test]
    fn text_offered_under_an_image_type_is_refused() {
        // What a real xclip owner does: it answers every target with what it holds.
        let fake = Fake::new("xclip", "printf 'my password is hunter2'");
        for mime in clipboard::IMAGE_TYPES {
            assert_eq!(
                fake.answer(Request::Image(mime)),
                Err(Refusal::Empty),
                "{mime}"
            );
        }
        // A PNG is not a JPEG either.
        let fake = Fake::new("xclip", "cat \"$(dirname \"$0\")/png\"");
        assert_eq!(
            fake.answer(Request::Image("image/jpeg")),
            Err(Refusal::Empty)
        );
    }

    #[test]
    fn failing_or_silent_tool_means_empty() {
        let fake = Fake::new(
            "xclip",
            "echo 'Error: target image/png not available' >&2; exit 1",
        );
        assert_eq!(
            fake.answer(Request::Image("image/png")),
            Err(Refusal::Empty)
        );
        assert_eq!(fake.answer(Request::Targets), Err(Refusal::Empty));
        let fake = Fake::new("xclip", "exit 0");
        assert_eq!(
            fake.answer(Request::Image("image/png")),
            Err(Refusal::Empty)
        );
    }

    #[test]
    fn oversize_image_is_refused_whole_and_the_tool_killed() {
        let fake = Fake::new(
            "xclip",
            "echo $$ > \"$(dirname \"$0\")/pid\"; printf '\\211PNG\\r\\n\\032\\n'; exec cat /dev/zero",
        );
        let limits = Limits {
            max_bytes: 64 << 10,
            ..Limits::default()
        };
        let started = Instant::now();
        assert_eq!(
            fake.tool.answer(Request::Image("image/png"), &limits),
            Err(Refusal::TooLarge)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = std::fs::read_to_string(fake.path("pid")).expect("pid");
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the tool still runs"
        );
    }

    #[test]
    fn slow_tool_times_out_and_its_children_are_killed() {
        let fake = Fake::new(
            "xclip",
            "sleep 60 & echo $! > \"$(dirname \"$0\")/pid\"; wait",
        );
        let limits = Limits {
            targets: Duration::from_millis(300),
            ..Limits::default()
        };
        let started = Instant::now();
        assert_eq!(
            fake.tool.answer(Request::Targets, &limits),
            Err(Refusal::Timeout)
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let pid = std::fs::read_to_string(fake.path("pid")).expect("pid");
        let deadline = Instant::now() + Duration::from_secs(5);
        // The killed `sleep` may stay a zombie of init for a moment.
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
            if stat.map_or(true, |s| s.contains(") Z ")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the tool's child {} still runs", pid.trim());
    }

    #[test]
    fn socket_answers_a_good_request_and_is_private() {
        let fake = Fake::new("xclip", "cat \"$(dirname \"$0\")/png\"");
        let responder = fake.responder(Limits::default());
        let mode = std::fs::metadata(responder.socket())
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ask(responder.socket(), b"image/png\n"), ok(PNG));
        let socket = responder.socket().to_owned();
        drop(responder);
        assert!(
            !socket.exists(),
            "the socket is removed when the responder stops"
        );
    }

    #[test]
    fn socket_refuses_every_other_request_without_running_the_tool() {
        let fake = Fake::new("xclip", "cat \"$(dirname \"$0\")/png\"");
        let responder = fake.responder(Limits {
            request: Duration::from_millis(500),
            ..Limits::default()
        });
        let flood = vec![b'A'; 1 << 20];
        for request in [
            &b"image/png; rm -rf /\n"[..],
            b"image/png && touch /tmp/ccvm-pwned\n",
            b"$(touch /tmp/ccvm-pwned)\n",
            b"`id`\n",
            b"TARGETS\n image/png",
            b"TARGETS\nimage/png\n",
            b"TARGETS \n",
            b" image/png\n",
            b"image/png\r\n",
            b"image/png\0\n",
            b"IMAGE/PNG\n",
            b"image/svg+xml\n",
            b"image/jpg\n",
            b"image/x-bmp\n",
            b"text/plain\n",
            b"text/plain;charset=utf-8\n",
            b"UTF8_STRING\n",
            b"STRING\n",
            b"TEXT\n",
            b"image/png",
            b"\n",
            b"",
            b"../../../etc/passwd\n",
            b"-i\n",
            b"--watch\n",
            &flood,
        ] {
            assert_eq!(
                ask(responder.socket(), request),
                no(Refusal::Refused),
                "{:?}",
                String::from_utf8_lossy(&request[..request.len().min(40)])
            );
        }
        assert_eq!(fake.argv(), None, "the tool never ran");
        assert!(!Path::new("/tmp/ccvm-pwned").exists());
    }

    #[test]
    fn silent_client_is_dropped_at_its_deadline() {
        let fake = Fake::new("xclip", "cat \"$(dirname \"$0\")/png\"");
        let responder = fake.responder(Limits {
            request: Duration::from_millis(300),
            ..Limits::default()
        });
        let started = Instant::now();
        let mut stream = UnixStream::connect(responder.socket()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        assert_eq!(answer, no(Refusal::Refused));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn too_many_connections_are_turned_away() {
        let fake = Fake::new("xclip", "cat \"$(dirname \"$0\")/png\"");
        let responder = fake.responder(Limits {
            request: Duration::from_secs(20),
            ..Limits::default()
        });
        let idle: Vec<UnixStream> = (0..MAX_CONNECTIONS)
            .map(|_| UnixStream::connect(responder.socket()).expect("connect"))
            .collect();
        // Let the responder take all of them before the next one.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(ask(responder.socket(), b"image/png\n"), no(Refusal::Busy));
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ask(responder.socket(), b"image/png\n") != ok(PNG) {
            assert!(Instant::now() < deadline, "served again once they left");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
