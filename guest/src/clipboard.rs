//! The `xclip` and `wl-paste` stand-ins (S8): the guest agent run under those names.
//!
//! They read the argument forms the real tools read (xclip 0.13: X-style options that may be
//! shortened to any unambiguous prefix, `-selection c`, `-t TYPE`, `-o`/`-out`, `-i`, unknown
//! words taken as file names; wl-paste 2.1: `--list-types`, `--type=TYPE`, `-t TYPE`,
//! `-tTYPE`, `-n`, `--primary`, shortened long options, grouped short ones), and then either
//! ask the host for one thing, the list of image types or one image from the clipboard
//! selection, through the session's forwarded loopback port, or fail like a clipboard that
//! holds no such thing (exit 1) without contacting anyone: text, the primary selection,
//! `--watch` and every input mode (writing a clipboard) never reach the host. When the
//! bridge is off nothing listens on that port and every request fails the same way.
//!
//! Claude Code 2.1.330 runs `xclip -selection clipboard -o -t TARGETS`, then
//! `xclip -selection clipboard -o -t image/png` (or `wl-paste --list-types` and
//! `wl-paste --type image/png` when `WAYLAND_DISPLAY` is set), and on Ctrl+V without an image
//! `xclip -selection clipboard -o` and `wl-paste --no-newline` for text, which fail here.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ccvm_guest_protocol::clipboard::{self, Header, Refusal, Request};

/// How long connecting to the forwarded port may take (a refused one fails at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole exchange for the list of types; Claude Code gives it 3 s.
const TARGETS_DEADLINE: Duration = Duration::from_secs(5);
/// The whole exchange for one image; Claude Code gives it 30 s.
const IMAGE_DEADLINE: Duration = Duration::from_secs(28);

/// Which tool this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Xclip,
    WlPaste,
}

/// What an invocation does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Print this on stdout and exit 0 (help, version).
    Print(String),
    /// Ask the host. `strip_newline`: xclip's `-rmlastnl`.
    Fetch {
        request: Request,
        strip_newline: bool,
    },
    /// Print this on stderr and exit 1 without contacting the host.
    Fail(String),
}

/// Runs the stand-in called `name` with `args` (without the program name); the exit status.
pub fn run(name: &str, args: &[OsString]) -> i32 {
    let tool = if name == "wl-paste" {
        Tool::WlPaste
    } else {
        Tool::Xclip
    };
    let action = match tool {
        Tool::Xclip => parse_xclip(args),
        Tool::WlPaste => parse_wl_paste(args),
    };
    match action {
        Action::Print(text) => {
            print!("{text}");
            0
        }
        Action::Fail(message) => {
            eprintln!("{message}");
            1
        }
        Action::Fetch {
            request,
            strip_newline,
        } => match fetch(request) {
            Ok(mut bytes) => {
                if strip_newline && bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                let mut stdout = std::io::stdout().lock();
                match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                    Ok(()) => 0,
                    Err(_) => 1,
                }
            }
            Err(why) => {
                eprintln!("{}", failure(tool, request, &why));
                1
            }
        },
    }
}

/// Why a request got nothing.
#[derive(Debug)]
enum Nothing {
    /// No bridge: nothing listens on the forwarded port.
    Off,
    /// The host answered `NO`.
    Refused(Option<Refusal>),
    /// The connection broke or did not answer in time.
    Broken(std::io::Error),
    /// The answer was not the contract's.
    Garbled,
}

fn failure(tool: Tool, request: Request, why: &Nothing) -> String {
    let detail = match why {
        Nothing::Off => {
            "ccvm: image paste is off for this session (no clipboard tool on the host, or \
             clipboard.images = false)"
                .to_owned()
        }
        Nothing::Refused(Some(refusal)) => format!("ccvm: {}", refusal.explanation()),
        Nothing::Refused(None) => "ccvm: the host refused".to_owned(),
        Nothing::Broken(e) => format!("ccvm: the host clipboard bridge failed: {e}"),
        Nothing::Garbled => "ccvm: the host clipboard bridge answered garbage".to_owned(),
    };
    match (tool, request) {
        (Tool::Xclip, request) => {
            format!("Error: target {} not available ({detail})", request.token())
        }
        (Tool::WlPaste, Request::Targets) => format!("Nothing is copied ({detail})"),
        (Tool::WlPaste, Request::Image(_)) => {
            format!("No suitable type of content copied ({detail})")
        }
    }
}

/// Asks the host for `request` through the forwarded port.
fn fetch(request: Request) -> Result<Vec<u8>, Nothing> {
    let address: SocketAddr = clipboard::GUEST_LISTEN
        .parse()
        .map_err(|_| Nothing::Garbled)?;
    let limit = match request {
        Request::Targets => TARGETS_DEADLINE,
        Request::Image(_) => IMAGE_DEADLINE,
    };
    fetch_from(address, request, Instant::now() + limit)
}

/// One exchange of the contract with `address`, finished by `deadline`.
fn fetch_from(
    address: SocketAddr,
    request: Request,
    deadline: Instant,
) -> Result<Vec<u8>, Nothing> {
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            Nothing::Off
        } else {
            Nothing::Broken(e)
        }
    })?;
    stream
        .set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(Nothing::Broken)?;
    stream
        .write_all(request.line().as_bytes())
        .map_err(Nothing::Broken)?;
    // The header a byte at a time: the host may close right after a `NO`.
    let mut header = Vec::new();
    while !header.ends_with(b"\n") {
        if header.len() >= clipboard::MAX_HEADER_BYTES {
            return Err(Nothing::Garbled);
        }
        let mut byte = [0u8; 1];
        read_some(&mut stream, &mut byte, deadline)?;
        header.push(byte[0]);
    }
    match Header::parse(&header) {
        Some(Header::Ok(length)) => {
            let mut body = vec![0u8; length];
            let mut filled = 0;
            while filled < length {
                filled += read_some(&mut stream, &mut body[filled..], deadline)?;
            }
            Ok(body)
        }
        Some(Header::No(refusal)) => Err(Nothing::Refused(refusal)),
        None => Err(Nothing::Garbled),
    }
}

/// One read before `deadline`; end of stream is an error (the answer is incomplete).
fn read_some(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, Nothing> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Nothing::Broken(std::io::ErrorKind::TimedOut.into()));
    }
    stream
        .set_read_timeout(Some(left))
        .map_err(Nothing::Broken)?;
    match stream.read(buf) {
        Ok(0) => Err(Nothing::Broken(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(n) => Ok(n),
        Err(e) => Err(Nothing::Broken(e)),
    }
}

/// The request for a target name, or the failure a real clipboard without it gives.
fn request_for(tool: Tool, target: &str) -> Result<Request, String> {
    Request::from_token(target).ok_or_else(|| match tool {
        Tool::Xclip => format!(
            "Error: target {target} not available (ccvm: only images are pasted from the host \
             clipboard into the VM)"
        ),
        Tool::WlPaste => "No suitable type of content copied (ccvm: only images are pasted from \
                          the host clipboard into the VM)"
            .to_owned(),
    })
}

/// xclip's options: each may be given as any prefix that matches no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XOption {
    In,
    Out,
    Loops,
    Display,
    Help,
    Selection,
    NoUtf8,
    Target,
    RmLastNl,
    Version,
    Silent,
    Quiet,
    Verbose,
    Filter,
}

/// xclip 0.13's option table (its `-help` and what it accepts).
const XCLIP_OPTIONS: [(&str, XOption); 14] = [
    ("-in", XOption::In),
    ("-out", XOption::Out),
    ("-loops", XOption::Loops),
    ("-display", XOption::Display),
    ("-help", XOption::Help),
    ("-selection", XOption::Selection),
    ("-noutf8", XOption::NoUtf8),
    ("-target", XOption::Target),
    ("-rmlastnl", XOption::RmLastNl),
    ("-version", XOption::Version),
    ("-silent", XOption::Silent),
    ("-quiet", XOption::Quiet),
    ("-verbose", XOption::Verbose),
    ("-filter", XOption::Filter),
];

const XCLIP_HELP: &str = "\
Usage: xclip [OPTION] [FILE]...
ccvm's stand-in for xclip: reads images (image/png, image/jpeg, image/gif, image/webp,
image/bmp) from the host's clipboard; never text, and it cannot write the host clipboard.

  -o, -out         print the selection (only -selection clipboard with -t TARGETS or an image type)
  -i, -in          write a selection: not available in the VM
  -selection       selection to access (only \"clipboard\" reaches the host)
  -target          the target atom (TARGETS, image/png, image/jpeg, image/gif, image/webp, image/bmp)
  -rmlastnl        remove the last newline character if present
  -h, -help        this text
      -version     version information
";

/// An xclip option word: an exact name, or a prefix of exactly one.
fn xclip_option(word: &str) -> Option<XOption> {
    if let Some((_, option)) = XCLIP_OPTIONS.iter().find(|(name, _)| *name == word) {
        return Some(*option);
    }
    let mut matching = XCLIP_OPTIONS
        .iter()
        .filter(|(name, _)| word.len() >= 2 && name.starts_with(word));
    match (matching.next(), matching.next()) {
        (Some((_, option)), None) => Some(*option),
        // Ambiguous (`-s`, `-v`) or unknown: xclip takes it for a file name.
        _ => None,
    }
}

fn parse_xclip(args: &[OsString]) -> Action {
    let mut output = false;
    let mut filter = false;
    let mut selection: Option<String> = None;
    let mut target: Option<String> = None;
    let mut no_utf8 = false;
    let mut strip_newline = false;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        // A word that is not UTF-8 matches no option: a file name.
        let Some(option) = word.to_str().and_then(xclip_option) else {
            continue;
        };
        let mut value = || words.next().map(|v| v.to_string_lossy().into_owned());
        match option {
            XOption::In => (output, filter) = (false, false),
            XOption::Out => (output, filter) = (true, false),
            XOption::Filter => (output, filter) = (false, true),
            XOption::Help => return Action::Print(XCLIP_HELP.to_owned()),
            XOption::Version => {
                return Action::Print(format!(
                    "xclip version 0.13 (ccvm {} stand-in: images from the host clipboard)\n",
                    env!("CARGO_PKG_VERSION")
                ));
            }
            XOption::Selection => {
                if let Some(v) = value() {
                    selection = Some(v);
                }
            }
            XOption::Target => {
                if let Some(v) = value() {
                    target = Some(v);
                }
            }
            XOption::Loops | XOption::Display => {
                let _ = value();
            }
            XOption::NoUtf8 => no_utf8 = true,
            XOption::RmLastNl => strip_newline = true,
            XOption::Silent | XOption::Quiet | XOption::Verbose => {}
        }
    }
    if !output || filter {
        return Action::Fail(
            "xclip: ccvm: the VM cannot write the host clipboard (image paste only reads)"
                .to_owned(),
        );
    }
    // xclip reads the first letter only: `c`, `clip`, `CLIPBOARD`; anything else that is not
    // `p`, `s` or `b` is the primary selection, its default.
    let clipboard_selection = selection
        .as_deref()
        .and_then(|s| s.chars().next())
        .is_some_and(|c| c.eq_ignore_ascii_case(&'c'));
    // Without -t, xclip asks for text (UTF8_STRING); -noutf8 makes any request plain STRING.
    let target = match (no_utf8, target) {
        (true, _) => "STRING".to_owned(),
        (false, None) => "UTF8_STRING".to_owned(),
        (false, Some(t)) => t,
    };
    if !clipboard_selection {
        return Action::Fail(format!(
            "Error: target {target} not available (ccvm: only the clipboard selection is \
             pasted from the host, not the primary or secondary one)"
        ));
    }
    match request_for(Tool::Xclip, &target) {
        Ok(request) => Action::Fetch {
            request,
            strip_newline,
        },
        Err(message) => Action::Fail(message),
    }
}

const WL_PASTE_HELP: &str = "\
Usage:
\twl-paste [options]
ccvm's stand-in for wl-paste: reads images (image/png, image/jpeg, image/gif, image/webp,
image/bmp) from the host's clipboard; never text.

Options:
\t-n, --no-newline\tDo not append a newline character.
\t-l, --list-types\tInstead of pasting, list the offered image types.
\t-p, --primary\t\tthe primary selection: not available in the VM.
\t-w, --watch command\tnot available in the VM.
\t-t, --type mime/type\tThe image type to paste.
\t-s, --seat seat-name\tIgnored.
\t-v, --version\t\tDisplay version info.
\t-h, --help\t\tDisplay this message.
";

/// wl-paste's options: (long name, short letter, takes a value).
const WL_PASTE_OPTIONS: [(&str, char, bool); 8] = [
    ("no-newline", 'n', false),
    ("list-types", 'l', false),
    ("primary", 'p', false),
    ("watch", 'w', true),
    ("type", 't', true),
    ("seat", 's', true),
    ("version", 'v', false),
    ("help", 'h', false),
];

fn wl_usage_error(message: String) -> Action {
    Action::Fail(format!("{message}\n{WL_PASTE_HELP}"))
}

/// wl-paste's arguments, read as getopt_long reads them (options anywhere, `--` ends them).
fn parse_wl_paste(args: &[OsString]) -> Action {
    let mut seen: Vec<(char, Option<String>)> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut words = args.iter().map(|w| w.to_string_lossy().into_owned());
    while let Some(word) = words.next() {
        if word == "--" {
            positional.extend(words.by_ref());
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (long, None),
            };
            let exact = WL_PASTE_OPTIONS.iter().find(|(n, _, _)| *n == name);
            let mut prefixed = WL_PASTE_OPTIONS
                .iter()
                .filter(|(n, _, _)| n.starts_with(name));
            let found = exact.or(match (prefixed.next(), prefixed.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            });
            let Some((long_name, letter, takes_value)) = found else {
                return wl_usage_error(format!("wl-paste: unrecognized option '--{name}'"));
            };
            let value = match (takes_value, inline) {
                (false, Some(_)) => {
                    return wl_usage_error(format!(
                        "wl-paste: option '--{long_name}' doesn't allow an argument"
                    ));
                }
                (false, None) => None,
                (true, Some(value)) => Some(value),
                (true, None) => match words.next() {
                    Some(value) => Some(value),
                    None => {
                        return wl_usage_error(format!(
                            "wl-paste: option '--{long_name}' requires an argument"
                        ));
                    }
                },
            };
            seen.push((*letter, value));
            continue;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) else {
            positional.push(word);
            continue;
        };
        for (at, letter) in cluster.char_indices() {
            let Some((_, _, takes_value)) = WL_PASTE_OPTIONS.iter().find(|(_, l, _)| *l == letter)
            else {
                return wl_usage_error(format!("wl-paste: invalid option -- '{letter}'"));
            };
            if !takes_value {
                seen.push((letter, None));
                continue;
            }
            let rest = &cluster[at + letter.len_utf8()..];
            let value = if rest.is_empty() {
                match words.next() {
                    Some(value) => value,
                    None => {
                        return wl_usage_error(format!(
                            "wl-paste: option requires an argument -- '{letter}'"
                        ));
                    }
                }
            } else {
                rest.to_owned()
            };
            seen.push((letter, Some(value)));
            break;
        }
    }
    if seen.iter().any(|(l, _)| *l == 'h') {
        return Action::Print(WL_PASTE_HELP.to_owned());
    }
    if seen.iter().any(|(l, _)| *l == 'v') {
        return Action::Print(format!(
            "wl-clipboard 2.1.0 (ccvm {} stand-in: images from the host clipboard)\n",
            env!("CARGO_PKG_VERSION")
        ));
    }
    if let Some(extra) = positional.first() {
        return wl_usage_error(format!("Unexpected argument: {extra}"));
    }
    if seen.iter().any(|(l, _)| *l == 'w') {
        return Action::Fail(
            "wl-paste: ccvm: --watch is not available in the VM (image paste answers one request \
             at a time)"
                .to_owned(),
        );
    }
    if seen.iter().any(|(l, _)| *l == 'p') {
        return Action::Fail(
            "Nothing is copied (ccvm: only the clipboard is pasted from the host, not the \
             primary selection)"
                .to_owned(),
        );
    }
    if seen.iter().any(|(l, _)| *l == 'l') {
        return Action::Fetch {
            request: Request::Targets,
            strip_newline: false,
        };
    }
    // The last --type counts; without one wl-paste picks a text type.
    let target = seen
        .iter()
        .rev()
        .find_map(|(l, v)| (*l == 't').then(|| v.clone()).flatten());
    let Some(target) = target else {
        return Action::Fail(
            "No suitable type of content copied (ccvm: only images are pasted from the host \
             clipboard into the VM; name one with --type image/png)"
                .to_owned(),
        );
    };
    match request_for(Tool::WlPaste, &target) {
        // An image request names a type exactly; "TARGETS" is not one for wl-paste.
        Ok(Request::Image(mime)) => Action::Fetch {
            request: Request::Image(mime),
            strip_newline: false,
        },
        Ok(Request::Targets) | Err(_) => Action::Fail(
            "No suitable type of content copied (ccvm: only images are pasted from the host \
             clipboard into the VM)"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn xclip(words: &[&str]) -> Action {
        parse_xclip(&args(words))
    }

    fn wl_paste(words: &[&str]) -> Action {
        parse_wl_paste(&args(words))
    }

    fn fetch(request: Request) -> Action {
        Action::Fetch {
            request,
            strip_newline: false,
        }
    }

    fn fails(action: &Action) -> bool {
        matches!(action, Action::Fail(_))
    }

    #[test]
    fn xclip_reads_what_claude_code_runs() {
        assert_eq!(
            xclip(&["-selection", "clipboard", "-o", "-t", "TARGETS"]),
            fetch(Request::Targets)
        );
        assert_eq!(
            xclip(&["-selection", "clipboard", "-o", "-t", "image/png"]),
            fetch(Request::Image("image/png"))
        );
        assert_eq!(
            xclip(&["-selection", "clipboard", "-t", "image/png", "-o"]),
            fetch(Request::Image("image/png"))
        );
    }

    #[test]
    fn xclip_accepts_shortened_options_and_selection_names() {
        for words in [
            &["-sel", "c", "-t", "image/jpeg", "-o"][..],
            &["-se", "clip", "-ta", "image/jpeg", "-out"],
            &["-selection", "CLIPBOARD", "-target", "image/jpeg", "-ou"],
            &[
                "-o",
                "-selection",
                "clipboard",
                "-t",
                "image/jpeg",
                "-l",
                "1",
                "-d",
                ":0",
            ],
            &[
                "-quiet",
                "-selection",
                "c",
                "-t",
                "image/jpeg",
                "-o",
                "somefile",
            ],
            // The last of -i / -o wins.
            &["-i", "-selection", "c", "-t", "image/jpeg", "-o"],
            // The last -t wins.
            &["-selection", "c", "-t", "TARGETS", "-t", "image/jpeg", "-o"],
        ] {
            assert_eq!(
                xclip(words),
                fetch(Request::Image("image/jpeg")),
                "{words:?}"
            );
        }
        assert_eq!(
            xclip(&["-selection", "c", "-t", "TARGETS", "-o", "-rmlastnl"]),
            Action::Fetch {
                request: Request::Targets,
                strip_newline: true
            }
        );
    }

    #[test]
    fn xclip_text_primary_and_unknown_targets_fail_without_asking() {
        for words in [
            // No -t: text (UTF8_STRING).
            &["-selection", "clipboard", "-o"][..],
            &["-selection", "clipboard", "-t", "UTF8_STRING", "-o"],
            &["-selection", "clipboard", "-t", "STRING", "-o"],
            &["-selection", "clipboard", "-t", "text/plain", "-o"],
            &["-selection", "clipboard", "-t", "image/svg+xml", "-o"],
            &["-selection", "clipboard", "-t", "IMAGE/PNG", "-o"],
            &["-selection", "clipboard", "-t", "image/png; rm -rf /", "-o"],
            // -noutf8 turns every request into STRING.
            &[
                "-selection",
                "clipboard",
                "-t",
                "image/png",
                "-noutf8",
                "-o",
            ],
            // xclip reads neither of these as -t: they are file names.
            &["-selection", "clipboard", "-timage/png", "-o"],
            &["-selection", "clipboard", "-target=image/png", "-o"],
            &["-selection", "clipboard", "--target", "image/png", "-o"],
            // The default selection is primary; `-s` is ambiguous (selection, silent).
            &["-t", "image/png", "-o"],
            &["-selection", "primary", "-t", "image/png", "-o"],
            &["-selection", "secondary", "-t", "image/png", "-o"],
            &["-selection", "", "-t", "image/png", "-o"],
            &["-s", "clipboard", "-t", "image/png", "-o"],
            // -selection swallows -o as its value: input mode.
            &["-t", "image/png", "-selection", "-o"],
            // -t at the very end has no value.
            &["-selection", "c", "-o", "-t"],
        ] {
            assert!(fails(&xclip(words)), "{words:?}: {:?}", xclip(words));
        }
    }

    #[test]
    fn xclip_input_modes_write_nothing() {
        for words in [
            &[][..],
            &["-selection", "clipboard"],
            &["-selection", "clipboard", "-i"],
            &["-selection", "clipboard", "-in", "file.txt"],
            &[
                "-selection",
                "clipboard",
                "-t",
                "image/png",
                "-i",
                "shot.png",
            ],
            &["-selection", "clipboard", "-o", "-i"],
            &["-selection", "clipboard", "-o", "-filter"],
            &["-selection", "clipboard", "-f"],
        ] {
            let action = xclip(words);
            let Action::Fail(message) = &action else {
                panic!("{words:?}: {action:?}");
            };
            assert!(message.contains("cannot write"), "{words:?}: {message}");
        }
    }

    #[test]
    fn xclip_help_and_version_print() {
        for words in [&["-h"][..], &["-help"], &["-selection", "c", "-o", "-he"]] {
            assert!(matches!(xclip(words), Action::Print(t) if t.starts_with("Usage: xclip")));
        }
        assert!(matches!(xclip(&["-version"]), Action::Print(t) if t.starts_with("xclip version")));
        // -v is ambiguous (version, verbose): a file name.
        assert!(fails(&xclip(&["-v"])));
    }

    #[test]
    fn xclip_non_utf8_words_are_file_names() {
        use std::os::unix::ffi::OsStringExt;
        let mut words = args(&["-selection", "clipboard", "-o", "-t", "image/png"]);
        words.insert(2, OsString::from_vec(vec![b'-', 0xff, b'o']));
        assert_eq!(parse_xclip(&words), fetch(Request::Image("image/png")));
        let words = args(&["-selection", "clipboard", "-o", "-t"])
            .into_iter()
            .chain([OsString::from_vec(b"image/png\xff".to_vec())])
            .collect::<Vec<_>>();
        assert!(fails(&parse_xclip(&words)));
    }

    #[test]
    fn wl_paste_reads_every_spelling_of_list_and_type() {
        for words in [
            &["--list-types"][..],
            &["-l"],
            &["--list"],
            &["--l"],
            &["-nl"],
            &["-l", "-n"],
        ] {
            assert_eq!(wl_paste(words), fetch(Request::Targets), "{words:?}");
        }
        for words in [
            &["--type", "image/png"][..],
            &["--type=image/png"],
            &["--ty", "image/png"],
            &["--t=image/png"],
            &["-t", "image/png"],
            &["-timage/png"],
            &["-nt", "image/png"],
            &["-ntimage/png"],
            &["--no-newline", "--type", "image/png"],
            &["--type", "image/png", "--no-newline"],
            &["-s", "seat0", "-t", "image/png"],
            &["--seat=seat0", "--type", "text/plain", "-t", "image/png"],
        ] {
            assert_eq!(
                wl_paste(words),
                fetch(Request::Image("image/png")),
                "{words:?}"
            );
        }
    }

    #[test]
    fn wl_paste_text_primary_watch_and_bad_arguments_fail_without_asking() {
        for words in [
            // No --type: wl-paste picks text.
            &[][..],
            &["--no-newline"],
            &["-n"],
            &["--type", "text/plain"],
            &["--type", "text"],
            &["--type", "TARGETS"],
            &["--type", "image/svg+xml"],
            &["--type", "image/png; rm -rf /"],
            &["--type", "image"],
            &["--primary", "--type", "image/png"],
            &["-p", "-l"],
            &["-pt", "image/png"],
            &["--watch", "cat"],
            &["-w", "cat"],
            &["extra"],
            &["--", "-l"],
            &["-l", "extra"],
            &["-x"],
            &["--bogus"],
            &["--list-types=yes"],
            &["--type"],
            &["-t"],
            &["--seat"],
        ] {
            assert!(fails(&wl_paste(words)), "{words:?}: {:?}", wl_paste(words));
        }
    }

    #[test]
    fn wl_paste_help_and_version_print() {
        assert!(matches!(wl_paste(&["-h"]), Action::Print(t) if t.starts_with("Usage:")));
        assert!(matches!(wl_paste(&["--help"]), Action::Print(_)));
        assert!(
            matches!(wl_paste(&["--version"]), Action::Print(t) if t.starts_with("wl-clipboard"))
        );
        assert!(matches!(wl_paste(&["-v", "-l"]), Action::Print(_)));
    }

    /// A one-connection server on an ephemeral loopback port that reads the request line and
    /// answers `answer`; its thread returns what it received.
    fn server(answer: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") && stream.read(&mut byte).expect("read") == 1 {
                line.push(byte[0]);
            }
            stream.write_all(&answer).expect("answer");
            line
        });
        (address, thread)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn fetch_sends_one_line_and_takes_exactly_the_announced_bytes() {
        let image = b"\x89PNG\r\n\x1a\n\0\n\xff".to_vec();
        let mut answer = Header::Ok(image.len()).line().into_bytes();
        answer.extend_from_slice(&image);
        let (address, thread) = server(answer);
        let got = fetch_from(address, Request::Image("image/png"), soon()).expect("an image");
        assert_eq!(got, image);
        assert_eq!(thread.join().expect("server"), b"image/png\n");
    }

    #[test]
    fn fetch_fails_on_refusal_short_body_garbage_and_silence() {
        let cases: [(&[u8], &str); 4] = [
            (b"NO empty\n", "Refused(Some(Empty))"),
            (b"OK 10\nabc", "Broken"),
            (b"HTTP/1.1 200 OK\r\n\r\n", "Garbled"),
            (&[b'A'; 100], "Garbled"),
        ];
        for (answer, expected) in cases {
            let (address, thread) = server(answer.to_vec());
            let got = fetch_from(address, Request::Targets, soon());
            assert!(format!("{got:?}").contains(expected), "{answer:?}: {got:?}");
            assert_eq!(thread.join().expect("server"), b"TARGETS\n");
        }
        // A server that never answers: the deadline ends the wait.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let started = Instant::now();
        let got = fetch_from(
            listener.local_addr().expect("address"),
            Request::Targets,
            Instant::now() + Duration::from_millis(300),
        );
        assert!(matches!(got, Err(Nothing::Broken(_))), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn fetch_with_nothing_listening_is_off() {
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let got = fetch_from(address, Request::Targets, soon());
        assert!(matches!(got, Err(Nothing::Off)), "{got:?}");
    }

    #[test]
    fn failure_messages_look_like_the_real_tools() {
        let why = Nothing::Refused(Some(Refusal::Empty));
        assert!(
            failure(Tool::Xclip, Request::Image("image/png"), &why)
                .starts_with("Error: target image/png not available (")
        );
        assert!(failure(Tool::WlPaste, Request::Targets, &why).starts_with("Nothing is copied"));
    }
}
