//! Splitting ccvm's own flags from the argv forwarded to claude (S1.1).
//!
//! ccvm's flags are recognised anywhere before a bare `--`; everything else, including the
//! `--` and all that follows it, is forwarded to claude unchanged and in order, as raw bytes
//! (arguments need not be UTF-8). Any other `--ccvm-…` flag is an error rather than being
//! passed to claude, so a typo cannot silently reach the agent.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub mod completions;
pub mod flags;
pub mod help;
pub mod image;
pub mod man;

use self::flags::Effect;
use crate::config::FlagLayer;
use crate::error::Error;

/// What the user asked ccvm to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a session (claude, or the shell with `--shell`).
    Run,
    Help,
    Version,
    /// `--ccvm-plugins`: list every plugin found.
    Plugins,
    /// `--ccvm-plan`: print the launch plan as JSON, boot nothing.
    Plan,
    /// `--ccvm-doctor`: every prerequisite, with fixes.
    Doctor,
    /// `--ccvm-image ACTION …`: every word after it belongs to the image command.
    Image(Vec<String>),
    /// `--ccvm-completions SHELL`: print a completion script.
    Completions(completions::Shell),
    /// `--ccvm-man`: print the man page.
    Man,
    /// `--ccvm-vsock-proxy SOCKET PORT`: internal, the ssh ProxyCommand for vsock backends.
    VsockProxy {
        socket: PathBuf,
        port: u32,
    },
    /// `--ccvm-reap DIR`: internal, removes a session's run directory once its stdin closes,
    /// which happens when the ccvm that started it exits in any way, SIGKILL included.
    Reap {
        dir: PathBuf,
        disk: PathBuf,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub action: Action,
    pub flags: FlagLayer,
    /// Forwarded verbatim to claude (or to the shell under `--shell`).
    pub forwarded: Vec<OsString>,
}

fn utf8_value(flag: &str, value: &OsStr) -> Result<String, Error> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::usage(format!("{flag}: the value is not valid UTF-8")))
}

/// Parses everything after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, Error> {
    let mut args = args.into_iter();
    let mut action = Action::Run;
    let mut flags = FlagLayer::default();
    let mut forwarded = Vec::new();
    let mut set_action = |new: Action, flag: &str| -> Result<(), Error> {
        if action != Action::Run && action != new {
            return Err(Error::usage(format!(
                "{flag} cannot be combined with another --ccvm- action"
            )));
        }
        action = new;
        Ok(())
    };

    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            forwarded.push(arg);
            forwarded.extend(args.by_ref());
            break;
        }
        let Some(text) = arg.to_str() else {
            forwarded.push(arg);
            continue;
        };
        let Some((def, inline)) = flags::lookup(text) else {
            if text.starts_with("--ccvm-") {
                return Err(Error::usage(format!("unknown ccvm flag `{text}`")));
            }
            forwarded.push(arg);
            continue;
        };
        let name = def.name;
        // A flag's value: `--flag=value`, or the next argument.
        let mut value = || -> Result<OsString, Error> {
            match inline {
                Some(value) => Ok(OsString::from(value)),
                None => args.next().ok_or_else(|| {
                    Error::usage(format!("{name} needs a value, e.g. `{name} <value>`"))
                }),
            }
        };
        match def.effect {
            Effect::Shell => flags.shell = true,
            Effect::Debug => flags.debug = true,
            Effect::WritableCwd(writable) => flags.writable_cwd = Some(writable),
            Effect::Backend => flags.backend = Some(utf8_value(name, &value()?)?),
            Effect::PluginDir => flags.plugin_dirs.push(PathBuf::from(value()?)),
            Effect::Help => set_action(Action::Help, name)?,
            Effect::Version => set_action(Action::Version, name)?,
            Effect::Plugins => set_action(Action::Plugins, name)?,
            Effect::Plan => set_action(Action::Plan, name)?,
            Effect::Doctor => set_action(Action::Doctor, name)?,
            Effect::Completions => {
                let shell = completions::Shell::parse(&utf8_value(name, &value()?)?)?;
                set_action(Action::Completions(shell), name)?;
            }
            Effect::Man => set_action(Action::Man, name)?,
            Effect::Image => {
                let words = args
                    .by_ref()
                    .map(|w| utf8_value(name, &w))
                    .collect::<Result<Vec<_>, _>>()?;
                set_action(Action::Image(words), name)?;
            }
            Effect::VsockProxy => {
                let (Some(socket), Some(port)) = (args.next(), args.next()) else {
                    return Err(Error::usage("--ccvm-vsock-proxy needs SOCKET and PORT"));
                };
                let port = utf8_value(name, &port)?
                    .parse()
                    .map_err(|_| Error::usage("--ccvm-vsock-proxy: PORT must be a number"))?;
                set_action(
                    Action::VsockProxy {
                        socket: PathBuf::from(socket),
                        port,
                    },
                    name,
                )?;
            }
            Effect::Reap => {
                let (Some(dir), Some(disk)) = (args.next(), args.next()) else {
                    return Err(Error::usage(
                        "--ccvm-reap needs DIR and DISK (`-` for none)",
                    ));
                };
                set_action(
                    Action::Reap {
                        dir: PathBuf::from(dir),
                        disk: PathBuf::from(disk),
                    },
                    name,
                )?;
            }
        }
    }
    if let Some(backend) = &flags.backend
        && backend.is_empty()
    {
        return Err(Error::usage("--backend needs a non-empty name"));
    }
    Ok(Invocation {
        action,
        flags,
        forwarded,
    })
}

/// The forwarded argv as the guest receives it: each argument followed by a NUL byte (S1.2).
/// An argument cannot contain NUL (the kernel passes argv as C strings), so this is lossless.
pub fn encode_argv(args: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for arg in args {
        out.extend_from_slice(arg.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn os(args: &[&[u8]]) -> Vec<OsString> {
        args.iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    }

    fn parse_bytes(args: &[&[u8]]) -> Invocation {
        parse(os(args)).expect("parses")
    }

    #[test]
    fn ccvm_flags_consumed_everything_else_forwarded_in_order() {
        let inv = parse_bytes(&[
            b"-p",
            b"fix the bug",
            b"--backend",
            b"q35",
            b"--shell",
            b"*.rs",
            b"--ccvm-debug",
            b"it's \"quoted\"",
            b"line1\nline2",
            b"-",
            b"--help",
            b"--version",
            b"--debug",
            b"doctor",
        ]);
        assert_eq!(inv.action, Action::Run);
        assert_eq!(inv.flags.backend.as_deref(), Some("q35"));
        assert!(inv.flags.shell && inv.flags.debug);
        assert_eq!(
            inv.forwarded,
            os(&[
                b"-p",
                b"fix the bug",
                b"*.rs",
                b"it's \"quoted\"",
                b"line1\nline2",
                b"-",
                b"--help",
                b"--version",
                b"--debug",
                b"doctor"
            ])
        );
    }

    #[test]
    fn double_dash_and_everything_after_it_is_forwarded() {
        let inv = parse_bytes(&[b"--read-only-cwd", b"--", b"--shell", b"--backend=x"]);
        assert_eq!(inv.flags.writable_cwd, Some(false));
        assert!(!inv.flags.shell);
        assert_eq!(inv.forwarded, os(&[b"--", b"--shell", b"--backend=x"]));
    }

    #[test]
    fn non_utf8_arguments_pass_through_byte_for_byte() {
        let inv = parse_bytes(&[b"caf\xe9", b"\xff\xfe"]);
        assert_eq!(inv.forwarded, os(&[b"caf\xe9", b"\xff\xfe"]));
    }

    #[test]
    fn equals_forms_and_repeated_plugin_dirs() {
        let inv = parse_bytes(&[
            b"--backend=virt",
            b"--ccvm-plugin-dir",
            b"/a",
            b"--ccvm-plugin-dir=/b",
            b"--writable-cwd",
        ]);
        assert_eq!(inv.flags.backend.as_deref(), Some("virt"));
        assert_eq!(
            inv.flags.plugin_dirs,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(inv.flags.writable_cwd, Some(true));
    }

    #[test]
    fn management_actions_are_recognised() {
        assert_eq!(parse_bytes(&[b"--ccvm-plan"]).action, Action::Plan);
        assert_eq!(parse_bytes(&[b"--ccvm-plugins"]).action, Action::Plugins);
        assert_eq!(parse_bytes(&[b"--ccvm-help"]).action, Action::Help);
        assert_eq!(parse_bytes(&[b"--ccvm-version"]).action, Action::Version);
    }

    #[test]
    fn missing_value_unknown_ccvm_flag_and_two_actions_are_usage_errors() {
        for bad in [
            &[&b"--backend"[..]][..],
            &[b"--ccvm-frobnicate"],
            &[b"--ccvm-plan", b"--ccvm-plugins"],
            &[b"--backend="],
        ] {
            let error = parse(os(bad)).expect_err("usage error");
            assert_eq!(error.exit_code(), 2, "{error}");
        }
    }

    #[test]
    fn argv_encoding_is_nul_terminated_per_argument() {
        assert_eq!(
            encode_argv(&os(&[b"a b", b"", b"\xff"])),
            b"a b\0\0\xff\0".to_vec()
        );
    }
}
