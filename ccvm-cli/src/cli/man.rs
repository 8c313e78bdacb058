//! The man page, `ccvm(1)` (S1.6), in roff: generated from the flag table ([`FLAGS`]) and the
//! option table, like `--ccvm-help`, so the three cannot drift apart.

use super::flags::{FLAGS, synopsis};
use crate::config::{SYSTEM_CONFIG, documented_options};
use crate::plugins::SYSTEM_PLUGIN_DIR;

/// `text` safe in roff running text: backslashes escaped, hyphens literal, non-ASCII
/// characters by their Unicode names, and a line that would start with a control character
/// (`.` or `'`) guarded.
fn roff(text: &str) -> String {
    let mut escaped = String::new();
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\e"),
            '-' => escaped.push_str("\\-"),
            // groff's input is ASCII, and the page must render on an ASCII terminal too:
            // the characters the help uses by names every output device has, anything else
            // by its Unicode name.
            '…' => escaped.push_str("..."),
            '—' => escaped.push_str("\\(em"),
            '–' => escaped.push_str("\\(en"),
            '→' => escaped.push_str("\\(->"),
            c if !c.is_ascii() => escaped.push_str(&format!("\\[u{:04X}]", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
        .lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One `.TP` entry per documented flag of a section.
fn flags(management: bool) -> String {
    let mut out = String::new();
    for def in FLAGS
        .iter()
        .filter(|d| d.management == management && !d.hidden)
    {
        out.push_str(&format!(
            ".TP\n.B {}\n{}\n",
            roff(&synopsis(def)),
            roff(def.help)
        ));
    }
    out
}

/// The whole page.
pub fn page() -> String {
    let mut out = format!(
        ".TH CCVM 1 \"\" \"ccvm {version}\" \"User Commands\"\n\
.SH NAME\n\
ccvm \\- run Claude Code in an ephemeral micro\\-VM that sees only this directory\n\
.SH SYNOPSIS\n\
.B ccvm\n\
[\\fICCVM FLAGS\\fR] [\\fICLAUDE ARGUMENTS\\fR]...\n\
.br\n\
.B ccvm \\-\\-shell\n\
[\\fICCVM FLAGS\\fR] [\\fISHELL ARGUMENTS\\fR]...\n\
.SH DESCRIPTION\n\
{description}\n\
.SH CCVM FLAGS\n\
{flags}\
.SH MANAGEMENT\n\
{management}\
.SH IMAGES\n\
{images}\
.SH CONFIGURATION\n\
{configuration}\n\
.SH OPTIONS\n\
Each option is a key of the configuration file, and most have an environment variable.\n",
        version = env!("CARGO_PKG_VERSION"),
        description = roff(
            "Every argument that is not one of ccvm's flags below is passed to claude unchanged \
             and in order, including --help, --version, --debug and claude's own subcommands. \
             ccvm's flags are recognised anywhere before a bare --; -- and everything after it go \
             to claude as they are. The VM sees only the project directory, never receives your \
             login credential, can be locked to an egress allowlist, and vanishes when the \
             session ends."
        ),
        flags = flags(false),
        management = flags(true),
        images = super::help::image_commands()
            .iter()
            .map(|(synopsis, help)| format!(".TP\n.B ccvm {}\n{}\n", roff(synopsis), roff(help)))
            .collect::<String>(),
        configuration = roff(&format!(
            "Layers, lowest first, later ones win: built-in defaults; {SYSTEM_CONFIG}; \
             $XDG_CONFIG_HOME/ccvm/config.toml (default ~/.config/ccvm/config.toml); CCVM_* \
             environment variables; command-line flags. Unknown keys and wrong types are \
             errors. Booleans in the environment accept 1/true/yes and 0/false/no. Settings for \
             a third-party policy go in a [plugins.<name>] table."
        )),
    );
    for (key, env, help) in documented_options() {
        let var = env
            .map(|e| format!(" \\fR[\\fB{}\\fR]", roff(e)))
            .unwrap_or_default();
        out.push_str(&format!(".TP\n.B {}{var}\n{}\n", roff(key), roff(help)));
    }
    out.push_str(&format!(
        ".SH ENVIRONMENT\n\
.TP\n\
.B CCVM_TIMINGS=\\fIFILE\\fR\n\
write when each phase of the session was reached (JSON, seconds since the Unix epoch) to \
FILE when it ends\n\
.SH FILES\n\
.TP\n\
.B {config}\n\
the system configuration\n\
.TP\n\
.B ~/.config/ccvm/config.toml\n\
your configuration\n\
.TP\n\
.B {plugins}\n\
plugins installed by packages; searched after \\-\\-ccvm\\-plugin\\-dir, CCVM_PLUGIN_PATH, \
plugin_dirs, ~/.local/lib/ccvm/plugins and /usr/local/lib/ccvm/plugins. Group\\- or \
world\\-writable plugins, or ones owned by neither root nor you, are refused.\n\
.SH EXIT STATUS\n\
claude's (or the shell's) status for a session; 2 for a configuration or usage error; 1 for \
a boot, runtime or plugin failure; 0 for the management actions.\n\
.SH SEE ALSO\n\
.BR claude (1),\n\
.BR qemu\\-system\\-x86_64 (1),\n\
.BR ssh (1)\n",
        config = roff(SYSTEM_CONFIG),
        plugins = roff(SYSTEM_PLUGIN_DIR),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_guards_control_lines_and_escapes() {
        assert_eq!(roff(".so /etc/passwd"), "\\&.so /etc/passwd");
        assert_eq!(roff("a\\b --c"), "a\\eb \\-\\-c");
        assert_eq!(roff("build|list …"), "build|list ...");
        assert_eq!(roff("ü"), "\\[u00FC]");
    }

    /// Every documented flag and every option is on the page, no internal flag is.
    #[test]
    fn the_page_lists_every_documented_flag_and_option() {
        let page = page();
        for def in FLAGS {
            assert_eq!(
                page.contains(&format!(".B {}", roff(def.name))),
                !def.hidden,
                "{}",
                def.name
            );
        }
        for (synopsis, _) in super::super::help::image_commands() {
            assert!(
                page.contains(&format!(".B ccvm {}", roff(synopsis))),
                "{synopsis}"
            );
        }
        for (key, _, _) in documented_options() {
            assert!(page.contains(&format!(".B {}", roff(key))), "{key}");
        }
    }
}
