//! `ccvm`: a drop-in replacement for the `claude` command that runs Claude Code in an
//! ephemeral micro-VM.
//!
//! This crate is the host side: it splits ccvm's flags from claude's argv ([`args`]), layers
//! the configuration ([`config`]), finds and loads plugins ([`plugins`]), chooses the
//! acceleration ([`accel`]), gathers host facts for the plugins ([`host`]) and assembles the
//! launch plan ([`planner`]). It never lets a plugin touch the host, and it never passes the
//! user's API key anywhere but the ssh session's environment.

// One audited exception: `machine::die_with_parent` (a pre-exec prctl).
#![deny(unsafe_code)]

pub mod accel;
pub mod args;
pub mod config;
pub mod error;
pub mod help;
pub mod host;
pub mod image;
pub mod machine;
pub mod planner;
pub mod plugins;
pub mod seed;
pub mod vsock;

use std::ffi::OsString;
use std::io::Write;

use crate::args::Action;
use crate::config::Env;
use crate::error::Error;

/// Runs ccvm with `args` (without the program name) and returns the exit status.
pub fn run(args: Vec<OsString>) -> u8 {
    let env = Env::from_process();
    match dispatch(args, &env) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ccvm: error: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("ccvm: hint: {hint}");
            }
            error.exit_code()
        }
    }
}

fn print(text: &str) -> Result<u8, Error> {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`ccvm --ccvm-plan | head`) is not an error worth reporting.
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    Ok(0)
}

fn dispatch(args: Vec<OsString>, env: &Env) -> Result<u8, Error> {
    let invocation = args::parse(args)?;
    match invocation.action {
        Action::Help => print(&help::text()),
        Action::Version => print(&format!("ccvm {}\n", env!("CARGO_PKG_VERSION"))),
        Action::VsockProxy { socket, port } => vsock::proxy(&socket, port),
        Action::Image(words) => match image::parse_command(&words)? {
            image::ImageCommand::Build(options) => image::build(&options, env).map(|_| 0),
            image::ImageCommand::List => print(&image::list(env)?),
            image::ImageCommand::Remove(name) => print(&image::remove(env, &name)?),
        },
        Action::Plugins => {
            let config = config::load(env, &invocation.flags)?;
            let dirs = plugins::search_dirs(&config, env);
            let registry = plugins::Registry::discover(&dirs)?;
            print(&registry.render_table(&dirs))
        }
        Action::Plan => {
            let config = config::load(env, &invocation.flags)?;
            let registry = plugins::Registry::discover(&plugins::search_dirs(&config, env))?;
            let plan = planner::plan(&config, &registry, env, &invocation.forwarded, accel::probe)?;
            for diagnostic in &plan.diagnostics {
                if diagnostic.level == ccvm_plugin_api::DiagnosticLevel::Warning {
                    eprintln!("ccvm: warning: {}", diagnostic.message);
                }
            }
            let json = serde_json::to_string_pretty(&plan).map_err(|e| Error::Host {
                message: format!("cannot encode the plan: {e}"),
                hint: None,
            })?;
            print(&(json + "\n"))
        }
        Action::Run => {
            let config = config::load(env, &invocation.flags)?;
            let registry = plugins::Registry::discover(&plugins::search_dirs(&config, env))?;
            planner::plan(&config, &registry, env, &invocation.forwarded, accel::probe)?;
            Err(Error::Host {
                message: "starting a VM session is not available in this version of ccvm yet"
                    .to_owned(),
                hint: Some("`ccvm --ccvm-plan` shows everything a session would run".to_owned()),
            })
        }
    }
}
