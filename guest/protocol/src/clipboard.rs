//! The clipboard bridge's contract between the guest's `xclip` / `wl-paste` stand-ins and the
//! host's responder (S8), defined once for both sides.
//!
//! The guest connects to [`GUEST_LISTEN`] (the one reverse forward sshd permits), sends one
//! request line and reads one answer. A request is exactly `TARGETS\n` or one of the
//! [`IMAGE_TYPES`] followed by `\n`, matched byte for byte: nothing is trimmed, folded or
//! interpreted, and anything else is refused. The answer is a header line, `OK <length>\n`
//! followed by exactly that many bytes, or `NO <reason>\n`. Image bytes must start the way
//! their type's files do ([`looks_like`]), so text offered under an image type never crosses.
//!
//! Pure data and checks; no I/O.

/// Where the stand-ins connect in the guest: a loopback port the ssh session forwards to the
/// host responder's Unix socket.
pub const GUEST_LISTEN: &str = "127.0.0.1:39721";

/// The request for the list of image types the host clipboard offers.
pub const TARGETS: &str = "TARGETS";

/// The only content types that ever cross, in the order a TARGETS answer lists them.
pub const IMAGE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
];

/// The longest request line, newline included (`image/jpeg\n` is 11 bytes).
pub const MAX_REQUEST_BYTES: usize = 16;

/// The largest image that crosses; a larger one is refused whole, never cut short.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;

/// The longest answer header (`OK 33554432\n`, `NO too-large\n`).
pub const MAX_HEADER_BYTES: usize = 32;

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The image types on offer, one per line.
    Targets,
    /// The clipboard's content of one of [`IMAGE_TYPES`].
    Image(&'static str),
}

impl Request {
    /// The request `token` names (`TARGETS` or an image type, exactly), if any.
    pub fn from_token(token: &str) -> Option<Request> {
        if token == TARGETS {
            return Some(Request::Targets);
        }
        IMAGE_TYPES
            .into_iter()
            .find(|t| *t == token)
            .map(Request::Image)
    }

    /// The request a whole received message is: one token and one `\n`, nothing before,
    /// after or in between.
    pub fn parse(message: &[u8]) -> Option<Request> {
        let token = message.strip_suffix(b"\n")?;
        Request::from_token(std::str::from_utf8(token).ok()?)
    }

    /// The token: `TARGETS` or the image type.
    pub fn token(self) -> &'static str {
        match self {
            Request::Targets => TARGETS,
            Request::Image(mime) => mime,
        }
    }

    /// The line the guest sends.
    pub fn line(self) -> String {
        format!("{}\n", self.token())
    }
}

/// Why the host answered nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a request this bridge answers.
    Refused,
    /// The host clipboard holds nothing of that type (or no image at all).
    Empty,
    /// The content is larger than [`MAX_IMAGE_BYTES`].
    TooLarge,
    /// The host tool did not answer in time.
    Timeout,
    /// Too many requests at once.
    Busy,
    /// The host tool could not be run.
    Unavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Refused,
        Refusal::Empty,
        Refusal::TooLarge,
        Refusal::Timeout,
        Refusal::Busy,
        Refusal::Unavailable,
    ];

    /// The word in the `NO` header.
    pub fn word(self) -> &'static str {
        match self {
            Refusal::Refused => "refused",
            Refusal::Empty => "empty",
            Refusal::TooLarge => "too-large",
            Refusal::Timeout => "timeout",
            Refusal::Busy => "busy",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// What a person reads (the stand-ins print it).
    pub fn explanation(self) -> &'static str {
        match self {
            Refusal::Refused => "the host answers only TARGETS and image requests",
            Refusal::Empty => "the host clipboard holds no image of that type",
            Refusal::TooLarge => "the image on the host clipboard is larger than 32 MiB",
            Refusal::Timeout => "the host clipboard did not answer in time",
            Refusal::Busy => "too many clipboard requests at once",
            Refusal::Unavailable => "the host clipboard tool could not be run",
        }
    }
}

/// An answer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// That many bytes follow.
    Ok(usize),
    /// Nothing follows; `None` for a reason word this side does not know.
    No(Option<Refusal>),
}

impl Header {
    /// The header line.
    pub fn line(self) -> String {
        match self {
            Header::Ok(length) => format!("OK {length}\n"),
            Header::No(reason) => {
                format!("NO {}\n", reason.map_or("unknown", |r: Refusal| r.word()))
            }
        }
    }

    /// A received header line (with its `\n`); `None` when it is not one, or announces more
    /// than [`MAX_IMAGE_BYTES`].
    pub fn parse(line: &[u8]) -> Option<Header> {
        let text = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
        if let Some(length) = text.strip_prefix("OK ") {
            let digits_only = !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit());
            let length: usize = length.parse().ok().filter(|_| digits_only)?;
            return (length <= MAX_IMAGE_BYTES).then_some(Header::Ok(length));
        }
        let word = text.strip_prefix("NO ")?;
        Some(Header::No(
            Refusal::ALL.into_iter().find(|r| r.word() == word),
        ))
    }
}

/// The image types in a tool's list of offered types (one per line), each once, in the
/// tool's order. Lines are compared exactly; everything that is not one of [`IMAGE_TYPES`]
/// (text types, `TARGETS`, `image/svg+xml`, …) is dropped.
pub fn image_targets(listing: &[u8]) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = Vec::new();
    for line in listing.split(|b| *b == b'\n') {
        if let Some(mime) = IMAGE_TYPES.into_iter().find(|t| t.as_bytes() == line)
            && !found.contains(&mime)
        {
            found.push(mime);
        }
    }
    found
}

/// Whether `bytes` start the way a file of type `mime` does. A clipboard owner may answer a
/// request for any type with whatever it holds (xclip does), so this is what keeps text out.
pub fn looks_like(mime: &str, bytes: &[u8]) -> bool {
    match mime {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(b"\xff\xd8\xff"),
        "image/gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        "image/webp" => bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP",
        // "BM" alone starts many words; the DIB header's size must be one that exists.
        "image/bmp" => {
            bytes.len() >= 18
                && bytes.starts_with(b"BM")
                && matches!(
                    u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]),
                    12 | 40 | 52 | 56 | 64 | 108 | 124
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parse_exact_lines_only() {
        assert_eq!(Request::parse(b"TARGETS\n"), Some(Request::Targets));
        for mime in IMAGE_TYPES {
            let line = Request::Image(mime).line();
            assert_eq!(Request::parse(line.as_bytes()), Some(Request::Image(mime)));
            assert!(line.len() <= MAX_REQUEST_BYTES, "{line:?}");
        }
        for bad in [
            &b"TARGETS"[..],
            b"targets\n",
            b"TARGETS\r\n",
            b" TARGETS\n",
            b"TARGETS \n",
            b"TARGETS\n\n",
            b"TARGETS\n image/png",
            b"TARGETS\nimage/png\n",
            b"image/png; rm -rf /\n",
            b"image/png\0\n",
            b"IMAGE/PNG\n",
            b"image/png\n\n",
            b"image/svg+xml\n",
            b"image/jpg\n",
            b"text/plain\n",
            b"UTF8_STRING\n",
            b"STRING\n",
            b"$(id)\n",
            b"\n",
            b"",
            b"\xff\xfe\n",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_oversize() {
        for header in [Header::Ok(0), Header::Ok(MAX_IMAGE_BYTES)]
            .into_iter()
            .chain(Refusal::ALL.map(|r| Header::No(Some(r))))
        {
            let line = header.line();
            assert!(line.len() <= MAX_HEADER_BYTES, "{line:?}");
            assert_eq!(Header::parse(line.as_bytes()), Some(header));
        }
        assert_eq!(Header::parse(b"NO whatever\n"), Some(Header::No(None)));
        for bad in [
            format!("OK {}\n", MAX_IMAGE_BYTES + 1),
            "OK -1\n".to_owned(),
            "OK +5\n".to_owned(),
            "OK \n".to_owned(),
            "OK 5".to_owned(),
            "ok 5\n".to_owned(),
            "HELLO\n".to_owned(),
        ] {
            assert_eq!(Header::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn image_targets_keeps_exact_image_types_once() {
        let listing = b"TARGETS\nTIMESTAMP\nUTF8_STRING\ntext/plain\nimage/png\nimage/svg+xml\n\
                        image/pngx\n image/gif\nimage/jpeg\nimage/png\nimage/bmp\r\nimage/webp";
        assert_eq!(
            image_targets(listing),
            ["image/png", "image/jpeg", "image/webp"]
        );
        assert!(image_targets(b"UTF8_STRING\nSTRING\n").is_empty());
    }

    #[test]
    fn looks_like_tells_images_from_text() {
        let mut bmp = b"BM\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        bmp.extend(40u32.to_le_bytes());
        let cases: [(&str, &[u8]); 5] = [
            ("image/png", b"\x89PNG\r\n\x1a\n...."),
            ("image/jpeg", b"\xff\xd8\xff\xe0\0\x10JFIF"),
            ("image/gif", b"GIF89a...."),
            ("image/webp", b"RIFF\x10\0\0\0WEBPVP8 "),
            ("image/bmp", &bmp),
        ];
        for (mime, bytes) in cases {
            assert!(looks_like(mime, bytes), "{mime}");
            for (other, _) in cases.iter().filter(|(m, _)| *m != mime) {
                assert!(!looks_like(other, bytes), "{mime} bytes as {other}");
            }
        }
        for text in [
            &b"hello"[..],
            b"BMW is a car brand",
            b"",
            b"GIF8",
            b"RIFF....WAVE",
        ] {
            for mime in IMAGE_TYPES {
                assert!(!looks_like(mime, text), "{text:?} as {mime}");
            }
        }
        assert!(!looks_like("text/plain", b"\x89PNG\r\n\x1a\n"));
    }
}
