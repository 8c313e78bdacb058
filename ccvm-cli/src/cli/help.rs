//! `--ccvm-help` (S1.3): flags, environment variables, config files. Built from the flag
//! table ([`FLAGS`]) the parser uses and the option table the configuration code uses, so it
//! cannot drift from what is accepted.

use super::flags::{FLAGS, synopsis};
use crate::config::{SYSTEM_CONFIG, documented_options};
use crate::plugins::SYSTEM_PLUGIN_DIR;

/// Where the help column starts, and how wide the text may be.
const COLUMN: usize = 26;
const WIDTH: usize = 92;

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("there is always a line");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// The `--ccvm-image` commands and what each does, for the help and the man page.
pub fn image_commands() -> [(&'static str, String); 3] {
    [
        (
            "--ccvm-image build [--name NAME] [--stub] [--suite SUITE] [--kernel-flavour FLAVOUR] \
             [--arch ARCH] [--refresh]",
            format!(
                "build the guest image (Debian SUITE, default bookworm, its kernel, Claude Code \
                 from npm at claude_code_version, default {}, the guest agent) into \
                 $XDG_CACHE_HOME/ccvm/images/<key>/ and name it NAME (default `default`), with \
                 the configured extra_packages; --arch aarch64 builds the `virt` backend's image \
                 on an x86_64 host (under qemu-user); --stub puts a test stand-in in place of \
                 claude; --refresh (or --force) rebuilds from current Debian packages (and the \
                 registry's current `latest`) even when nothing changed",
                ccvm_image::CLAUDE_CODE_VERSION
            ),
        ),
        (
            "--ccvm-image list",
            "the built images: name, architecture, Claude Code version, kernel, size, key, extra \
             packages"
                .to_owned(),
        ),
        (
            "--ccvm-image remove NAME [--arch ARCH]",
            "delete an image (this host's architecture unless --arch says otherwise)".to_owned(),
        ),
    ]
}

/// One entry: the synopsis, then its help wrapped in the help column.
fn entry(synopsis: &str, help: &str) -> String {
    let help = wrap(help, WIDTH - COLUMN);
    let mut out = if synopsis.len() + 4 < COLUMN {
        format!("    {synopsis:<width$}{}\n", help[0], width = COLUMN - 4)
    } else {
        format!("    {synopsis}\n{:COLUMN$}{}\n", "", help[0])
    };
    for line in &help[1..] {
        out.push_str(&format!("{:COLUMN$}{line}\n", ""));
    }
    out
}

/// The documented flags of one help section, from [`FLAGS`].
fn flag_lines(management: bool) -> String {
    FLAGS
        .iter()
        .filter(|d| d.management == management && !d.hidden)
        .map(|def| entry(&synopsis(def), def.help))
        .collect()
}

/// The full usage text.
pub fn text() -> String {
    let mut out = format!(
        "\
ccvm {version} — run Claude Code in an ephemeral micro-VM that sees only this directory

USAGE
    ccvm [CCVM FLAGS] [CLAUDE ARGUMENTS]...
    ccvm --shell [CCVM FLAGS] [SHELL ARGUMENTS]...

Every argument that is not one of ccvm's flags below is passed to claude unchanged and in
order, including --help, --version, --debug and claude's own subcommands. ccvm's flags are
recognised anywhere before a bare `--`; `--` and everything after it go to claude as they are.

CCVM FLAGS
{flags}
MANAGEMENT
{management}
IMAGES
{images}
CONFIGURATION (lowest layer first; later layers win)
    built-in defaults
    {SYSTEM_CONFIG}
    $XDG_CONFIG_HOME/ccvm/config.toml (default ~/.config/ccvm/config.toml)
    CCVM_* environment variables
    command-line flags
Unknown keys and wrong types are errors. Booleans in the environment accept 1/true/yes and
0/false/no. Settings for a third-party policy go in a [plugins.<name>] table.

OPTIONS (config key [environment variable]: meaning)
",
        version = env!("CARGO_PKG_VERSION"),
        flags = flag_lines(false),
        management = flag_lines(true),
        images = image_commands()
            .iter()
            .map(|(synopsis, help)| entry(synopsis, help))
            .collect::<String>(),
    );
    for (key, env, help) in documented_options() {
        let var = env.map(|e| format!(" [{e}]")).unwrap_or_default();
        out.push_str(&format!("    {key}{var}\n        {help}\n"));
    }
    out.push_str(&format!(
        "\
    (the API key's value is read from the variable named by api_key_variable and reaches the
    guest only through the ssh session's environment, never a file or a command line)

ENVIRONMENT (besides the CCVM_* options above)
    CCVM_TIMINGS=FILE     write when each phase of the session was reached (JSON, seconds
                          since the Unix epoch) to FILE when it ends; used by the benchmarks

PLUGINS
    Searched in this order, first hit per kind and name wins: --ccvm-plugin-dir,
    CCVM_PLUGIN_PATH, plugin_dirs, ~/.local/lib/ccvm/plugins, /usr/local/lib/ccvm/plugins,
    {SYSTEM_PLUGIN_DIR}, then the plugins built into this binary. Directories and files that are group- or
    world-writable, or owned by neither root nor you, are refused.

EXIT STATUS
    claude's (or the shell's) status for a session; 2 for a configuration or usage error;
    1 for a boot, runtime or plugin failure; 0 for the management actions above.
"
    ));
    out
}
