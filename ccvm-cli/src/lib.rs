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
pub mod boundary;
pub mod config;
pub mod dirs;
pub mod doctor;
pub mod error;
pub mod help;
pub mod host;
pub mod image;
pub mod launch;
pub mod machine;
pub mod planner;
pub mod plugins;
pub mod reach;
pub mod seed;
pub mod vsock;
pub mod watch;

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
        Action::Reap(dir) => Ok(launch::reap(&dir)),
        Action::Doctor => {
            let config = config::load(env, &invocation.flags)?;
            let (text, ready) = doctor::run(&config, env, &invocation.forwarded)?;
            print(&text)?;
            Ok(if ready { 0 } else { 1 })
        }
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
            print_warnings(&plan);
            let json = serde_json::to_string_pretty(&plan).map_err(|e| Error::Host {
                message: format!("cannot encode the plan: {e}"),
                hint: None,
            })?;
            print(&(json + "\n"))
        }
        Action::Run => {
            refuse_root()?;
            let config = config::load(env, &invocation.flags)?;
            let registry = plugins::Registry::discover(&plugins::search_dirs(&config, env))?;
            let mut plan =
                planner::plan(&config, &registry, env, &invocation.forwarded, accel::probe)?;
            if !plan.image.present {
                build_missing_image(&plan, env)?;
                plan = planner::plan(&config, &registry, env, &invocation.forwarded, accel::probe)?;
            }
            print_warnings(&plan);
            launch::run(&plan, &invocation.forwarded, env)
        }
    }
}

fn print_warnings(plan: &planner::LaunchPlan) {
    for diagnostic in &plan.diagnostics {
        if diagnostic.level == ccvm_plugin_api::DiagnosticLevel::Warning {
            eprintln!("ccvm: warning: {}", diagnostic.message);
        }
    }
}

/// S11.3: as root, the agent would be root in the guest and the project share would let it
/// create root-owned or setuid files on the host. There is deliberately no override.
pub(crate) fn refuse_root() -> Result<(), Error> {
    if nix::unistd::getuid().is_root() {
        return Err(Error::Host {
            message: "ccvm refuses to run as root: the agent would be root in the VM, and the \
                      project share would let it create root-owned or setuid files on the host"
                .to_owned(),
            hint: Some(
                "run ccvm as an unprivileged user who owns the project (e.g. \
                 `useradd -m dev && chown -R dev <project> && su - dev`)"
                    .to_owned(),
            ),
        });
    }
    Ok(())
}

/// First run: the image is missing, so build it (S10.3), saying what and how long.
fn build_missing_image(plan: &planner::LaunchPlan, env: &Env) -> Result<(), Error> {
    let guest_arch = &plan.capabilities.guest_arch;
    if guest_arch != "host" && guest_arch != std::env::consts::ARCH {
        return Err(Error::Host {
            message: format!(
                "the guest image `{}` for {guest_arch} is missing ({}), and this {} host cannot build it",
                plan.image.name,
                plan.image.dir,
                std::env::consts::ARCH
            ),
            hint: Some(format!(
                "build it on a {guest_arch} machine with `ccvm --ccvm-image build`"
            )),
        });
    }
    eprintln!(
        "ccvm: the guest image `{}` is not built yet; building it now (once; usually 3-5 minutes \
         plus the Claude Code download)",
        plan.image.name
    );
    let options = image::BuildOptions {
        name: plan.image.name.clone(),
        ..image::BuildOptions::default()
    };
    image::build(&options, env).map(|_| ())
}
