//! A minimal writer for the `newc` cpio format the kernel unpacks as initramfs.

use std::io::{self, Write};

/// What an entry is.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Dir,
    File,
    /// A character device (major, minor): `/dev/console` must exist before devtmpfs.
    CharDevice(u32, u32),
}

/// Writes entries in order, then the trailer.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    inode: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            inode: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..padding])
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Adds one entry; `path` is relative (`init`, `lib/modules/…`), `data` only for files.
    pub fn entry(&mut self, path: &str, kind: Kind, mode: u32, data: &[u8]) -> io::Result<()> {
        let (type_bits, rdev) = match kind {
            Kind::Dir => (0o040000, (0, 0)),
            Kind::File => (0o100000, (0, 0)),
            Kind::CharDevice(major, minor) => (0o020000, (major, minor)),
        };
        let size = if matches!(kind, Kind::File) {
            data.len()
        } else {
            0
        };
        let name_size = path.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            type_bits | (mode & 0o7777),
            0, // uid
            0, // gid
            if matches!(kind, Kind::Dir) { 2 } else { 1 },
            0, // mtime: fixed, for reproducible images
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name_size,
            0, // checksum (newc: unused)
        );
        self.inode += 1;
        self.put(header.as_bytes())?;
        self.put(path.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        if size > 0 {
            self.put(data)?;
            self.pad()?;
        }
        Ok(())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.inode = 0;
        self.entry("TRAILER!!!", Kind::File, 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_and_4_byte_aligned() {
        let mut writer = Writer::new(Vec::new());
        writer.entry("dev", Kind::Dir, 0o755, &[]).expect("dir");
        writer
            .entry("dev/console", Kind::CharDevice(5, 1), 0o600, &[])
            .expect("dev");
        writer
            .entry("init", Kind::File, 0o755, b"#!x")
            .expect("file");
        let bytes = writer.finish().expect("finish");
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // The console entry: a character device with rdev 5:1.
        let console = text.find("dev/console").expect("console") - 110;
        assert_eq!(
            &text[console + 14..console + 22],
            "00002180",
            "mode = S_IFCHR | 0600"
        );
        assert_eq!(&text[console + 78..console + 94], "0000000500000001");
    }

    #[test]
    fn cpio_tool_lists_what_we_wrote() {
        let Ok(cpio) = which::which("cpio") else {
            eprintln!("skipped: the cpio tool is not installed");
            return;
        };
        let mut writer = Writer::new(Vec::new());
        writer.entry("lib", Kind::Dir, 0o755, &[]).expect("dir");
        writer
            .entry("lib/a.ko", Kind::File, 0o644, b"hello")
            .expect("file");
        let bytes = writer.finish().expect("finish");
        let mut child = std::process::Command::new(cpio)
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&bytes)
            .expect("write");
        let out = child.wait_with_output().expect("cpio output");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "lib\nlib/a.ko\n");
    }
}
