//! The clipboard bridge (S8) end to end: a real X server on the host (Xvfb) with a real
//! clipboard owner (`xclip -i`), the real launcher and its responder, a booted guest whose
//! `xclip` and `wl-paste` stand-ins fetch through the ssh session's one forward; and a second
//! local user trying the responder's socket.
//!
//! Every wait has a deadline.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ccvm_test_support::vm;
use ccvm_test_support::world::World;

/// The whole `--shell -c` session, boot included.
const SESSION_LIMIT: Duration = Duration::from_secs(300);
/// How long the guest script waits for the host to change its clipboard, in 0.2 s steps.
const HANDSHAKE_STEPS: u32 = 900;
/// A user other than the one ccvm runs as: `daemon`, which every Debian system has.
const OTHER_UID: u32 = 1;

/// A valid PNG of `width`×`height` RGB pixels (a gradient), with stored (uncompressed) deflate
/// blocks: real enough for Claude Code to decode, and full of `\n`, `\r` and `\0` bytes.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0u8);
        for x in 0..width {
            raw.extend([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x ^ y) & 0xff) as u8,
            ]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Which kind of desktop a [`HostClipboard`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Desktop {
    /// Xvfb on this display; the clipboard owned by a foreground `xclip -i`.
    X11 { display: String },
    /// A headless sway (as the test user: sway refuses root) listening on this socket; the
    /// clipboard owned by a foreground `wl-copy`.
    Wayland { socket: PathBuf },
}

/// A private display server for one test and the clipboard in it.
pub struct HostClipboard {
    desktop: Desktop,
    server: Child,
    owner: Option<Child>,
    dir: tempfile::TempDir,
}

/// Whether every program is installed; prints the skip reason when one is not.
fn installed(programs: &[(&str, &str)]) -> bool {
    for (program, package) in programs {
        if which::which(program).is_err() {
            vm::skip(&format!(
                "`{program}` is not installed (package {package}; scripts/deps.sh installs it)"
            ));
            return false;
        }
    }
    true
}

impl HostClipboard {
    /// Xvfb on a free display; `None` after printing why when Xvfb or xclip is missing.
    pub fn x11() -> Option<HostClipboard> {
        if !installed(&[("Xvfb", "xvfb"), ("xclip", "xclip")]) {
            return None;
        }
        // -displayfd 1: Xvfb picks a free display and writes its number to stdout.
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-ac", "-nolisten", "tcp"])
            .args(["-screen", "0", "640x480x24"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs");
        let mut stdout = xvfb.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut number = Vec::new();
            let mut byte = [0u8; 1];
            while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
                number.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&number).into_owned());
        });
        let number = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(number) if !number.is_empty() => number,
            _ => {
                let _ = xvfb.kill();
                let _ = xvfb.wait();
                panic!("Xvfb named no display within 30 s");
            }
        };
        Some(HostClipboard {
            desktop: Desktop::X11 {
                display: format!(":{number}"),
            },
            server: xvfb,
            owner: None,
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// A headless sway compositor (wlroots, software rendering, no input devices) run as the
    /// test user in a private runtime directory; `None` after printing why when sway or
    /// wl-clipboard is missing.
    pub fn wayland() -> Option<HostClipboard> {
        if !installed(&[
            ("sway", "sway"),
            ("wl-copy", "wl-clipboard"),
            ("wl-paste", "wl-clipboard"),
        ]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sway.conf");
        std::fs::write(
            &config,
            "xwayland disable\noutput HEADLESS-1 resolution 640x480\n",
        )
        .expect("write");
        let mut sway = Command::new("sway");
        sway.arg("-c")
            .arg(&config)
            .env_clear()
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("WLR_BACKENDS", "headless")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_RENDERER", "pixman")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::getuid().is_root() {
            std::os::unix::fs::chown(dir.path(), Some(vm::TEST_UID), Some(vm::TEST_UID))
                .expect("chown");
            sway.uid(vm::TEST_UID).gid(vm::TEST_UID);
        }
        let mut server = sway.spawn().expect("sway runs");
        // wlroots picks the socket name (`wayland-1`, …); wait for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket = loop {
            let found = std::fs::read_dir(dir.path())
                .expect("read_dir")
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.strip_prefix("wayland-")
                            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
                    })
                });
            if let Some(socket) = found {
                break socket;
            }
            if Instant::now() > deadline || server.try_wait().ok().flatten().is_some() {
                let _ = server.kill();
                let _ = server.wait();
                panic!("sway created no Wayland socket within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let clipboard = HostClipboard {
            desktop: Desktop::Wayland { socket },
            server,
            owner: None,
            dir,
        };
        // The socket exists a moment before the compositor answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !clipboard
            .tool("wl-paste", &["--list-types"])
            .output()
            .is_ok_and(|o| !String::from_utf8_lossy(&o.stderr).contains("Failed to connect"))
        {
            assert!(Instant::now() < deadline, "sway did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(clipboard)
    }

    /// The variable that points ccvm at this display, and its value.
    pub fn variable(&self) -> (&'static str, String) {
        match &self.desktop {
            Desktop::X11 { display } => ("DISPLAY", display.clone()),
            // libwayland takes an absolute path as the socket itself.
            Desktop::Wayland { socket } => ("WAYLAND_DISPLAY", socket.display().to_string()),
        }
    }

    /// The target a text owner offers here.
    pub fn text_target(&self) -> &'static str {
        match self.desktop {
            Desktop::X11 { .. } => "UTF8_STRING",
            Desktop::Wayland { .. } => "text/plain",
        }
    }

    fn tool(&self, program: &str, args: &[&str]) -> Command {
        let (name, value) = self.variable();
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env(name, value)
            .stdin(Stdio::null());
        command
    }

    /// Puts `bytes` on the clipboard as `target` (None: text), owned by a new foreground
    /// `xclip -i` or `wl-copy`, and waits until the clipboard offers it.
    pub fn offer(&mut self, target: Option<&str>, bytes: &[u8]) {
        if let Some(mut old) = self.owner.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let file = self.dir.path().join("offered");
        std::fs::write(&file, bytes).expect("write");
        let mut args: Vec<&str> = Vec::new();
        let program = match self.desktop {
            Desktop::X11 { .. } => {
                args.extend(["-quiet", "-selection", "clipboard"]);
                args.extend(target.map(|t| ["-t", t]).into_iter().flatten());
                args.push("-i");
                "xclip"
            }
            Desktop::Wayland { .. } => {
                args.push("--foreground");
                args.extend(target.map(|t| ["--type", t]).into_iter().flatten());
                "wl-copy"
            }
        };
        let owner = self
            .tool(program, &args)
            .stdin(std::fs::File::open(&file).expect("open"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the clipboard owner runs");
        self.owner = Some(owner);
        let expected = target.unwrap_or(self.text_target());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.offers().iter().any(|t| t == expected) {
            assert!(
                Instant::now() < deadline,
                "the host clipboard does not offer {expected}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the host clipboard offers, one type per entry.
    pub fn offers(&self) -> Vec<String> {
        let (program, args): (&str, &[&str]) = match self.desktop {
            Desktop::X11 { .. } => ("xclip", &["-selection", "clipboard", "-o", "-t", "TARGETS"]),
            Desktop::Wayland { .. } => ("wl-paste", &["--list-types"]),
        };
        let out = self.tool(program, args).output().expect("the tool runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The host clipboard's content as `target`.
    pub fn read(&self, target: &str) -> Vec<u8> {
        let out = match self.desktop {
            Desktop::X11 { .. } => {
                self.tool("xclip", &["-selection", "clipboard", "-o", "-t", target])
            }
            Desktop::Wayland { .. } => self.tool("wl-paste", &["--no-newline", "--type", target]),
        }
        .output()
        .expect("the tool runs");
        out.stdout
    }
}

impl Drop for HostClipboard {
    fn drop(&mut self) {
        if let Some(mut owner) = self.owner.take() {
            let _ = owner.kill();
            let _ = owner.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Set (only) for the helper run as another user: the socket it tries.
const PROBE_VARIABLE: &str = "CCVM_CLIPBOARD_PROBE";

/// Not a test on its own: [`probe_as`] runs this test binary as another user with only this
/// test selected. It connects to the socket, asks for `image/png` and prints what happened.
#[test]
#[ignore = "run by probe_as, as another user"]
fn probe_socket_as_this_user() {
    let Some(socket) = std::env::var_os(PROBE_VARIABLE) else {
        return;
    };
    let result = UnixStream::connect(&socket).and_then(|mut stream| {
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"image/png\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    });
    match result {
        Ok(answer) => println!(
            "probe: connected answer={}",
            String::from_utf8_lossy(&answer[..answer.len().min(12)]).escape_debug()
        ),
        Err(e) => println!("probe: refused {:?}", e.kind()),
    }
}

/// What connecting to `socket` as `uid` gives: `connected answer=…` or `refused <kind>`.
fn probe_as(uid: u32, socket: &Path) -> String {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "clipboard::probe_socket_as_this_user",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env_clear()
        .env(PROBE_VARIABLE, socket)
        .current_dir("/")
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .expect("the probe runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("probe: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "the probe as uid {uid} printed nothing:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// The guest's side. Phase 1, an image on the host clipboard: the list and the image through
/// both stand-ins, a type the clipboard does not hold, and attempts to write the host
/// clipboard. Phase 2, once the host holds text: every way to ask for it.
const GUEST_SCRIPT: &str = r#"
P="$(pwd)"
run() { name=$1; shift; "$@" > "$P/out.$name" 2> "$P/err.$name"; echo "check: $name=$?"; }
run targets xclip -selection clipboard -o -t TARGETS
run png xclip -selection clipboard -o -t image/png
run sel-c xclip -sel c -t image/png -out
run wl-targets wl-paste --list-types
run wl-png wl-paste --type=image/png
run jpeg xclip -selection clipboard -o -t image/jpeg
run primary xclip -selection primary -o -t image/png
printf 'guest-wrote-this' | xclip -selection clipboard -i; echo "check: write-text=$?"
printf 'guest-wrote-this' | xclip -selection clipboard -t image/png -i; echo "check: write-png=$?"
printf 'guest-wrote-this' | xclip -selection clipboard; echo "check: write-default=$?"
touch "$P/phase1.done"
i=0; while [ ! -e "$P/phase2.go" ] && [ $i -lt STEPS ]; do sleep 0.2; i=$((i + 1)); done
run text xclip -selection clipboard -o
run text-utf8 xclip -selection clipboard -o -t UTF8_STRING
run text-as-png xclip -selection clipboard -o -t image/png
run text-as-bmp xclip -selection clipboard -o -t image/bmp
run text-targets xclip -selection clipboard -o -t TARGETS
run wl-text wl-paste --no-newline
run wl-text-plain wl-paste --type text/plain
run wl-text-as-png wl-paste --type image/png
echo "check: done=yes"
"#;

/// The run directory of the one session running in `world`.
fn session_socket(world: &World, deadline: Instant) -> PathBuf {
    let base = world.path("runtime/ccvm");
    loop {
        let found = std::fs::read_dir(&base)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(ccvm_policy_clipboard::SOCKET_NAME))
            .find(|p| p.exists());
        if let Some(socket) = found {
            return socket;
        }
        assert!(
            Instant::now() < deadline,
            "no clipboard socket under {}",
            base.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_file(
    path: &Path,
    deadline: Instant,
    session: &std::thread::JoinHandle<(std::process::Output, bool)>,
) {
    while !path.exists() {
        assert!(
            !session.is_finished(),
            "the session ended before {} appeared",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// S8.1, S8.2: with a PNG on the host clipboard the guest's `xclip` and `wl-paste` list it
/// and hand it over byte for byte; nothing else crosses (another type, the primary
/// selection, text later on the clipboard, however it is asked for); the guest cannot write
/// the host clipboard; and another local user can neither reach the responder's socket nor
/// read an image through it, while the session's own user can.
fn host_images_cross_byte_for_byte_and_nothing_else(x: Option<HostClipboard>) {
    let Some(mut x) = x else { return };
    let image = png(320, 240);
    x.offer(Some("image/png"), &image);
    let Some(world) = vm::stub_world("", |_| {}) else {
        return;
    };
    let script = GUEST_SCRIPT.replace("STEPS", &HANDSHAKE_STEPS.to_string());
    let child = world
        .ccvm()
        .env(x.variable().0, x.variable().1)
        .args(["--shell", "-c", &script])
        .spawn_quiet();
    let session = std::thread::spawn(move || vm::output_within(child, SESSION_LIMIT));
    let deadline = Instant::now() + SESSION_LIMIT;
    let project = world.path("project");
    wait_for_file(&project.join("phase1.done"), deadline, &session);

    // The guest's writes changed nothing on the host.
    assert!(
        x.offers().contains(&"image/png".to_owned()),
        "{:?}",
        x.offers()
    );
    assert_eq!(x.read("image/png"), image, "the host clipboard was changed");

    // S8.2: the responder's socket, while the session runs.
    // Becoming another user takes root (the tests' usual case: ccvm runs as `nobody`).
    let socket = session_socket(&world, deadline);
    if nix::unistd::getuid().is_root() {
        let other = probe_as(OTHER_UID, &socket);
        assert!(
            other.starts_with("refused PermissionDenied"),
            "uid {OTHER_UID} reached the clipboard bridge: {other}"
        );
        // The control: the same probe as the session's user gets the image.
        let own = probe_as(vm::TEST_UID, &socket);
        assert!(
            own.starts_with(&format!("connected answer=OK {}\\n", image.len())),
            "the session's own user cannot use the bridge socket: {own}"
        );
    } else {
        eprintln!("skipping the second-user probe: it needs root to run as uid {OTHER_UID}");
    }

    let secret = format!("host-secret-text-{}", std::process::id());
    x.offer(None, secret.as_bytes());
    std::fs::write(project.join("phase2.go"), "").expect("write");

    let (output, in_time) = session.join().expect("the session thread");
    let stdout = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        in_time,
        "the session did not end within {SESSION_LIMIT:?}:\n{stdout}\n{stderr}"
    );
    let check = |key: &str| -> String {
        let prefix = format!("check: {key}=");
        let found: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {key}= line expected:\n{stdout}\n{stderr}"
        );
        found[0].to_owned()
    };
    let out = |name: &str| std::fs::read(project.join(format!("out.{name}"))).expect("output file");
    let err = |name: &str| {
        String::from_utf8_lossy(&std::fs::read(project.join(format!("err.{name}"))).expect("err"))
            .into_owned()
    };
    assert_eq!(check("done"), "yes", "{stdout}");

    for name in ["targets", "png", "sel-c", "wl-targets", "wl-png"] {
        assert_eq!(check(name), "0", "{name}: {}", err(name));
    }
    assert_eq!(out("targets"), b"image/png\n");
    assert_eq!(out("wl-targets"), b"image/png\n");
    for name in ["png", "sel-c", "wl-png"] {
        assert!(
            out(name) == image,
            "{name}: {} bytes, not the host's image",
            out(name).len()
        );
    }
    // The xclip owner answers every target with its PNG: the responder refuses it as JPEG.
    for name in ["jpeg", "primary"] {
        assert_eq!(check(name), "1", "{name}");
        assert!(out(name).is_empty(), "{name}");
    }
    assert!(err("jpeg").contains("not available"), "{}", err("jpeg"));
    for name in ["write-text", "write-png", "write-default"] {
        assert_eq!(
            check(name),
            "1",
            "{name}: the guest's xclip -i claimed success"
        );
    }

    for name in [
        "text",
        "text-utf8",
        "text-as-png",
        "text-as-bmp",
        "text-targets",
        "wl-text",
        "wl-text-plain",
        "wl-text-as-png",
    ] {
        assert_eq!(check(name), "1", "{name}: {}", err(name));
        assert!(out(name).is_empty(), "{name}: {:?}", out(name));
    }
    let everything = format!("{stdout}{stderr}");
    assert!(
        !everything.contains(&secret),
        "host text reached the guest:\n{everything}"
    );
    for entry in std::fs::read_dir(&project).expect("project").flatten() {
        let content = std::fs::read(entry.path()).expect("read");
        assert!(
            !String::from_utf8_lossy(&content).contains(&secret),
            "host text reached the guest in {}",
            entry.path().display()
        );
    }
    assert_eq!(
        x.read(x.text_target()),
        secret.as_bytes(),
        "the host clipboard changed"
    );
}

/// [`host_images_cross_byte_for_byte_and_nothing_else`] with an X11 desktop: Xvfb, and
/// ccvm reading the clipboard with `xclip` (`DISPLAY`).
#[test]
fn x11_host_images_cross_byte_for_byte_and_nothing_else() {
    host_images_cross_byte_for_byte_and_nothing_else(HostClipboard::x11());
}

/// [`host_images_cross_byte_for_byte_and_nothing_else`] with a Wayland desktop: headless
/// sway, and ccvm reading the clipboard with `wl-paste` (`WAYLAND_DISPLAY`).
#[test]
fn wayland_host_images_cross_byte_for_byte_and_nothing_else() {
    host_images_cross_byte_for_byte_and_nothing_else(HostClipboard::wayland());
}
