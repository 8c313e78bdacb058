//! What goes into an image, and the key derived from it.

use std::ffi::OsString;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::BuildOptions;
use crate::error::Error;

/// Bumped whenever the build steps change what an image contains (2: the root image is
/// compressed with lz4 instead of zstd).
pub const RECIPE_VERSION: u32 = 2;
pub const DEFAULT_SUITE: &str = "bookworm";
/// Empty: the architecture's generic Debian kernel (`amd64`, `arm64`).
pub const DEFAULT_KERNEL_FLAVOUR: &str = "";
/// The Claude Code release the real image carries (S10.2).
pub const CLAUDE_CODE_VERSION: &str = "2.1.330";

/// The stub `claude` of the test image: reports what the tests check, exits on request.
pub const STUB_CLAUDE: &str = r#"#!/bin/sh
# ccvm test stub standing in for Claude Code.
echo "stub-claude: started"
echo "stub-claude: cwd=$(pwd)"
echo "stub-claude: id=$(id -u):$(id -g) user=$(id -un)"
echo "stub-claude: argc=$#"
for arg in "$@"; do
    printf 'stub-claude: arg-hex=%s\n' "$(printf '%s' "$arg" | od -An -tx1 | tr -d ' \n')"
done
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    echo "stub-claude: api-key-sha256=$(printf '%s' "$ANTHROPIC_API_KEY" | sha256sum | cut -d' ' -f1)"
else
    echo "stub-claude: api-key=unset"
fi
echo "stub-claude: term=${TERM:-unset}"
for arg in "$@"; do
    case "$arg" in
        --stub-exit=*) exit "${arg#--stub-exit=}" ;;
    esac
done
exit 0
"#;

/// Packages on top of `minbase` (S10.2), besides the kernel.
const PACKAGES: &[&str] = &[
    "openssh-server",
    "git",
    "ripgrep",
    "curl",
    "jq",
    "less",
    "vim",
    "zsh",
    "ca-certificates",
    "nftables",
    "cryptsetup-bin",
    "iproute2",
    "sudo",
    "procps",
    "kmod",
    // Satisfies the kernel's `initramfs-tools | linux-initramfs-tool`: ccvm brings its own
    // initramfs, and initramfs-tools pulls in udev, whose hwdb compile and mkinitramfs run
    // minutes under qemu-user for an aarch64 image (bench/RESULTS.md).
    "tiny-initramfs",
    "ncurses-term",
    "kitty-terminfo",
    "foot-terminfo",
];

/// Files dpkg never unpacks: documentation and kernel drivers a VM has no device for.
const PATH_EXCLUDES: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/lib/modules/*/kernel/drivers/gpu/*",
    "/usr/lib/modules/*/kernel/drivers/media/*",
    "/usr/lib/modules/*/kernel/drivers/net/wireless/*",
    "/usr/lib/modules/*/kernel/drivers/infiniband/*",
    "/usr/lib/modules/*/kernel/drivers/bluetooth/*",
    "/usr/lib/modules/*/kernel/drivers/staging/*",
    "/usr/lib/modules/*/kernel/drivers/isdn/*",
    "/usr/lib/modules/*/kernel/sound/*",
    "/usr/lib/modules/*/kernel/net/wireless/*",
    "/usr/lib/modules/*/kernel/net/mac80211/*",
    "/usr/lib/modules/*/kernel/net/bluetooth/*",
];

/// Debian's name for an architecture.
pub(crate) fn debian_arch(arch: &str) -> Result<&'static str, Error> {
    match arch {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => Err(Error::UnsupportedArch {
            arch: other.to_owned(),
        }),
    }
}

/// The npm package with Claude Code's native binary for `arch`, and the registry's integrity
/// digest of its [`CLAUDE_CODE_VERSION`] tarball (`npm view <package>@<version>
/// dist.integrity`): the download is checked against it before anything in it runs.
pub(crate) fn claude_package(arch: &str) -> Result<(&'static str, &'static str), Error> {
    Ok(match debian_arch(arch)? {
        "arm64" => (
            "@anthropic-ai/claude-code-linux-arm64",
            "sha512-V4yanAY5EA5UpwwRPtjSfqDbNqAlUJeVn3NYZw2AgmRHjdpSsLtHAzbxRXfkAnbjwTXzE0uedjQxUY02ARPcsA==",
        ),
        _ => (
            "@anthropic-ai/claude-code-linux-x64",
            "sha512-9Gn+V7DtJ8M1nztP9CeDVl9g3RtrepI7rOFTyPRRnZe8D6zebIHKmC7OvBauucuAP0X0k85SDN/LPVZyjsGezQ==",
        ),
    })
}

/// The npm/SRI form of the SHA-512 of everything `reader` yields: `sha512-<base64>`.
pub fn sri_sha512(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = sha2::Sha512::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(sri(&hasher.finalize()))
}

fn sri(digest: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("sha512-");
    for chunk in digest.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `packages` sorted, without repeats.
pub fn normalized(packages: &[String]) -> Vec<String> {
    let mut packages = packages.to_vec();
    packages.sort();
    packages.dedup();
    packages
}

/// Every input of an image except the guest agent's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub version: u32,
    pub suite: String,
    pub debian_arch: String,
    pub kernel_flavour: String,
    pub packages: Vec<String>,
    pub path_excludes: Vec<String>,
    /// The Claude Code version, or `stub:<sha256 of the stub>`.
    pub claude: String,
    /// The user's `extra_packages`, sorted and unique (absent from the key's input when empty,
    /// so images built before the option existed keep their keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_packages: Vec<String>,
}

/// Whether `name` is a Debian package name: lower-case letters, digits, `+`, `-` and `.`, at
/// least two characters, starting with a letter or digit (Debian Policy 5.6.1).
pub fn is_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
}

impl Recipe {
    pub fn new(options: &BuildOptions, arch: &str) -> Result<Recipe, Error> {
        let debian_arch = debian_arch(arch)?;
        let flavour = if options.kernel_flavour.is_empty() {
            debian_arch.to_owned()
        } else {
            options.kernel_flavour.clone()
        };
        let mut packages = vec![format!("linux-image-{flavour}")];
        packages.extend(PACKAGES.iter().map(|p| (*p).to_owned()));
        Ok(Recipe {
            version: RECIPE_VERSION,
            suite: options.suite.clone(),
            debian_arch: debian_arch.to_owned(),
            kernel_flavour: flavour,
            packages,
            path_excludes: PATH_EXCLUDES.iter().map(|p| (*p).to_owned()).collect(),
            claude: if options.stub {
                format!("stub:{:x}", Sha256::digest(STUB_CLAUDE.as_bytes()))
            } else {
                options.claude_code_version.clone()
            },
            extra_packages: normalized(&options.extra_packages),
        })
    }

    /// Every package mmdebstrap installs: the recipe's and the user's extra ones.
    fn all_packages(&self) -> Vec<String> {
        let mut all = self.packages.clone();
        all.extend(
            self.extra_packages
                .iter()
                .filter(|p| !self.packages.contains(p))
                .cloned(),
        );
        all
    }

    /// The cache key: a hash of the recipe and the guest agent.
    pub fn key(&self, agent_sha256: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(self).expect("a recipe always serializes"));
        hasher.update(agent_sha256.as_bytes());
        format!("{:x}", hasher.finalize())[..16].to_owned()
    }

    /// mmdebstrap arguments before the suite and output. `agent` and `claude` are uploaded
    /// into the root; give names relative to mmdebstrap's working directory (the build's):
    /// mmdebstrap splits these hooks like a shell, so a path with a space or quote breaks.
    pub fn mmdebstrap_args(&self, agent: &Path, claude: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--variant=minbase".into(),
            format!("--architectures={}", self.debian_arch).into(),
            format!("--include={}", self.all_packages().join(",")).into(),
        ];
        for pattern in &self.path_excludes {
            args.push(format!("--dpkgopt=path-exclude={pattern}").into());
        }
        let mut hook = |text: String| {
            args.push("--customize-hook".into());
            args.push(text.into());
        };
        hook(format!(
            "upload {} /usr/local/bin/ccvm-guest",
            agent.display()
        ));
        hook(format!("upload {} /usr/local/bin/claude", claude.display()));
        hook(
            "chmod 0755 \"$1/usr/local/bin/ccvm-guest\" \"$1/usr/local/bin/claude\" && \
             ln -sf ccvm-guest \"$1/usr/local/bin/xclip\" && \
             ln -sf ccvm-guest \"$1/usr/local/bin/wl-paste\" && \
             rm -f \"$1\"/etc/ssh/ssh_host_* \"$1\"/boot/initrd.img-*"
                .to_owned(),
        );
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_every_input() {
        let options = BuildOptions::default();
        let base = Recipe::new(&options, "x86_64").expect("recipe");
        let key = base.key("agent-a");
        assert_eq!(key.len(), 16);
        assert_eq!(key, base.key("agent-a"), "deterministic");
        assert_ne!(key, base.key("agent-b"));
        let stub = Recipe::new(
            &BuildOptions {
                stub: true,
                ..options.clone()
            },
            "x86_64",
        )
        .expect("recipe");
        assert_ne!(key, stub.key("agent-a"));
        let trixie = Recipe::new(
            &BuildOptions {
                suite: "trixie".into(),
                ..options
            },
            "x86_64",
        )
        .expect("recipe");
        assert_ne!(key, trixie.key("agent-a"));
    }

    /// `extra_packages` change the key and reach mmdebstrap; none leaves the key of an
    /// image built before the option existed as it was.
    #[test]
    fn extra_packages_are_part_of_the_key_and_the_include_list() {
        let base = Recipe::new(&BuildOptions::default(), "x86_64").expect("recipe");
        let json = serde_json::to_string(&base).expect("json");
        assert!(!json.contains("extra_packages"), "{json}");
        let with = |names: &[&str]| {
            Recipe::new(
                &BuildOptions {
                    extra_packages: names.iter().map(|n| (*n).to_owned()).collect(),
                    ..BuildOptions::default()
                },
                "x86_64",
            )
            .expect("recipe")
        };
        let python = with(&["python3", "nodejs", "python3"]);
        assert_eq!(
            python.extra_packages,
            ["nodejs", "python3"],
            "sorted, unique"
        );
        assert_ne!(python.key("a"), base.key("a"));
        assert_eq!(python.key("a"), with(&["nodejs", "python3"]).key("a"));
        let args = python.mmdebstrap_args(Path::new("/agent"), Path::new("/claude"));
        let include = args
            .iter()
            .find_map(|a| a.to_str()?.strip_prefix("--include="))
            .expect("--include");
        assert!(include.ends_with(",nodejs,python3"), "{include}");
        // A package the recipe has already is not listed twice.
        let git = with(&["git"]);
        let args = git.mmdebstrap_args(Path::new("/agent"), Path::new("/claude"));
        let include = args
            .iter()
            .find_map(|a| a.to_str()?.strip_prefix("--include="))
            .expect("--include");
        assert_eq!(
            include.split(',').filter(|p| *p == "git").count(),
            1,
            "{include}"
        );
    }

    #[test]
    fn debian_package_names_follow_policy() {
        for good in [
            "python3",
            "build-essential",
            "g++",
            "libssl3.0",
            "r-base",
            "0ad",
        ] {
            assert!(is_debian_package_name(good), "{good}");
        }
        for bad in [
            "", "a", "Python3", "-x", ".x", "+x", "py thon", "x;rm", "pkg=1.0", "ü",
        ] {
            assert!(!is_debian_package_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn sri_digest_matches_the_npm_form() {
        // `printf abc | openssl dgst -sha512 -binary | base64`
        assert_eq!(
            sri_sha512(&b"abc"[..]).expect("hash"),
            "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
        );
        assert_eq!(
            sri_sha512(&b""[..]).expect("hash").len(),
            "sha512-".len() + 88
        );
    }

    #[test]
    fn default_flavour_follows_the_architecture() {
        let recipe = Recipe::new(&BuildOptions::default(), "aarch64").expect("recipe");
        assert_eq!(recipe.packages[0], "linux-image-arm64");
        assert!(Recipe::new(&BuildOptions::default(), "riscv64").is_err());
    }

    #[test]
    fn mmdebstrap_gets_the_packages_excludes_and_hooks() {
        let recipe = Recipe::new(&BuildOptions::default(), "x86_64").expect("recipe");
        let args: Vec<String> = recipe
            .mmdebstrap_args(Path::new("/a/ccvm-guest"), Path::new("/w/claude"))
            .into_iter()
            .map(|a| a.into_string().expect("utf8"))
            .collect();
        assert!(args.contains(&"--variant=minbase".to_owned()));
        assert!(
            args.iter()
                .any(|a| a.starts_with("--include=linux-image-amd64,openssh-server,"))
        );
        assert!(args.contains(&"upload /a/ccvm-guest /usr/local/bin/ccvm-guest".to_owned()));
        assert!(
            args.iter()
                .any(|a| a.contains("rm -f \"$1\"/etc/ssh/ssh_host_*"))
        );
    }
}
