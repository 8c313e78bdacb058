//! `ccvm`: a drop-in replacement for the `claude` command that runs Claude Code in an
//! ephemeral micro-VM.
//!
//! This crate is the host side, arranged by the phases of a run: [`cli`] splits ccvm's flags
//! from claude's argv, [`config`] layers the configuration, [`plugins`] finds and loads the
//! backends and policies, [`host`] gathers the host facts they ask for (and guards the host
//! boundary), [`plan`] turns all of it into a [`plan::LaunchPlan`] of plain data, and
//! [`launch`] — the only part with side effects — carries the plan out; [`doctor`] checks the
//! host. It never lets a plugin touch the host, and it never passes the user's API key
//! anywhere but the ssh session's environment.

// One audited exception: `launch::machine::die_with_parent` (a pre-exec prctl).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod doctor;
pub mod error;
pub mod host;
pub mod launch;
pub mod plan;
pub mod plugins;

use std::ffi::OsString;
use std::io::Write;

use crate::cli::Action;
use crate::cli::image::ImageCommand;
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
    let invocation = cli::parse(args)?;
    match invocation.action {
        Action::Help => print(&cli::help::text()),
        Action::Man => print(&cli::man::page()),
        Action::Completions(shell) => {
            // The backends this project ships (built in or as separate packages) and any
            // other built into this binary: a package's completions are generated at build
            // time, before any plugin library is installed.
            let mut backends: Vec<String> = cli::completions::SHIPPED_BACKENDS
                .map(str::to_owned)
                .to_vec();
            for backend in plugins::Registry::discover(&[])?.backends() {
                if !backends.iter().any(|b| b == backend.name()) {
                    backends.push(backend.name().to_owned());
                }
            }
            print(&cli::completions::script(shell, &backends))
        }
        Action::Version => print(&format!("ccvm {}\n", env!("CARGO_PKG_VERSION"))),
        Action::VsockProxy { socket, port } => launch::vsock::proxy(&socket, port),
        Action::Reap { dir, disk } => Ok(launch::reap(&dir, &disk)),
        Action::Doctor => {
            let config = config::load(env, &invocation.flags)?;
            let (text, ready) = doctor::run(&config, env, &invocation.forwarded)?;
            print(&text)?;
            Ok(if ready { 0 } else { 1 })
        }
        Action::Image(words) => match cli::image::parse(&words)? {
            ImageCommand::Build(mut options) => {
                // The configured extra packages and Claude Code release are part of every
                // image ccvm builds.
                let config = config::load(env, &invocation.flags)?;
                options.extra_packages = config.extra_packages;
                options.claude_code_version = config.claude_code_version;
                let host = host::images::build_host(env, options.stub, &options.arch)?;
                ccvm_image::build(&options, &host)?;
                Ok(0)
            }
            ImageCommand::List => print(&ccvm_image::list(&host::images::images_dir(env)?)?),
            ImageCommand::Remove { name, arch } => print(&ccvm_image::remove(
                &host::images::images_dir(env)?,
                &name,
                &arch,
            )?),
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
            let plan = plan::plan_to_inspect(&config, &registry, env, &invocation.forwarded)?;
            print_warnings(&plan);
            let json = serde_json::to_string_pretty(&plan).expect("a plan always serializes");
            print(&(json + "\n"))?;
            // The plan is printed; why it cannot run here is the exit status.
            let mut code = 0;
            for diagnostic in &plan.diagnostics {
                if diagnostic.level == ccvm_plugin_api::DiagnosticLevel::Error {
                    eprintln!("ccvm: error: {}", diagnostic.message);
                    code = 1;
                }
            }
            Ok(code)
        }
        Action::Run => {
            host::refuse_root()?;
            let config = config::load(env, &invocation.flags)?;
            let registry = plugins::Registry::discover(&plugins::search_dirs(&config, env))?;
            let mut plan = plan::plan_here(&config, &registry, env, &invocation.forwarded)?;
            if !plan.image.present {
                build_missing_image(&plan, env)?;
                plan = plan::plan_here(&config, &registry, env, &invocation.forwarded)?;
            }
            print_warnings(&plan);
            launch::run(&plan)
        }
    }
}

fn print_warnings(plan: &plan::LaunchPlan) {
    for diagnostic in &plan.diagnostics {
        if diagnostic.level == ccvm_plugin_api::DiagnosticLevel::Warning {
            eprintln!("ccvm: warning: {}", diagnostic.message);
        }
    }
}

/// First run: the image is missing, so build it (S10.3), saying what and how long.
fn build_missing_image(plan: &plan::LaunchPlan, env: &Env) -> Result<(), Error> {
    let foreign = plan.image.arch != std::env::consts::ARCH;
    // What a foreign build needs is checked before the long message promises a build.
    let host = host::images::build_host(env, false, &plan.image.arch)?;
    if foreign {
        ccvm_image::require_foreign_exec(&plan.image.arch)?;
    }
    ccvm_image::require_unprivileged_build()?;
    eprintln!(
        "ccvm: the guest image `{}`{} is not built yet{}; building it now (once; usually {} \
         plus the Claude Code download)",
        plan.image.name,
        if foreign {
            format!(" for {}", plan.image.arch)
        } else {
            String::new()
        },
        plan.image.wanted(),
        // Another architecture's packages are configured under emulation (bench/RESULTS.md).
        if foreign {
            "5-8 minutes"
        } else {
            "3-5 minutes"
        }
    );
    let options = ccvm_image::BuildOptions {
        name: plan.image.name.clone(),
        extra_packages: plan.image.extra_packages.clone(),
        claude_code_version: plan.image.claude_code_version.clone(),
        arch: plan.image.arch.clone(),
        ..ccvm_image::BuildOptions::default()
    };
    ccvm_image::build(&options, &host)?;
    Ok(())
}
