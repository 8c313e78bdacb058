//! The image cache as ccvm uses it: where it is, that nobody else could have prepared it
//! (S6.4), and what the image builder (`ccvm-image`) is given to build with.

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;

use ccvm_image::BuildHost;

use super::dirs;
use super::programs::{absolute_path_var, find_program};
use crate::config::{Env, cache_dir};
use crate::error::Error;

/// Where images live: `<cache>/ccvm/images`. Both ccvm directories, when they exist, must be
/// the user's and not writable by others (S6.4): an image is a kernel and a root file system
/// the VM boots with this session's keys, so nobody else may be able to swap one in. The same
/// holds for a cache in the temp dir (no `HOME`, no passwd entry).
pub fn images_dir(env: &Env) -> Result<PathBuf, Error> {
    let cache = cache_dir(env);
    if cache.starts_with(env.temp_dir()) {
        dirs::check_if_present(&cache, "the cache directory", false)?;
    }
    let ccvm = cache.join("ccvm");
    dirs::check_if_present(&ccvm, "the cache directory", false)?;
    let images = ccvm.join("images");
    dirs::check_if_present(&images, "the image cache", false)?;
    Ok(images)
}

/// [`images_dir`], created (privately) when missing.
pub fn create_images_dir(env: &Env) -> Result<PathBuf, Error> {
    let images = images_dir(env)?;
    let cache = cache_dir(env);
    if cache.starts_with(env.temp_dir()) {
        dirs::ensure(&cache, "the cache directory")?;
    } else {
        fs::create_dir_all(&cache).map_err(|source| Error::Io {
            what: "cannot create",
            path: cache.clone(),
            source,
        })?;
    }
    dirs::ensure_below(&cache, &images, "the image cache")?;
    Ok(images)
}

/// The environment of the build's programs (npm, mmdebstrap, tar…): an allowlist of what they
/// need from the user's (locale, proxies, CA bundles, npm's own `npm_config_*` settings such
/// as a registry mirror), `HOME`, and the trusted `PATH`; no API key, no token variables
/// (S10.3: Debian maintainer scripts and npm see none of the user's secrets).
pub fn build_environment(env: &Env) -> Vec<(OsString, OsString)> {
    const KEEP: [&str; 14] = [
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "SOURCE_DATE_EPOCH",
    ];
    env.iter()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            KEEP.iter().any(|k| k.eq_ignore_ascii_case(&name))
                || name.starts_with("LC_")
                || name.to_ascii_lowercase().starts_with("npm_config_")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(absolute_path_var(env).map(|p| ("PATH".into(), p)))
        .collect()
}

/// The static guest agent an image for `arch` will carry: `CCVM_GUEST_AGENT` names the host
/// architecture's, `CCVM_GUEST_AGENT_AARCH64` (…`_<ARCH>`) another's.
pub fn guest_agent(env: &Env, arch: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "cannot locate",
        path: PathBuf::from("ccvm"),
        source,
    })?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("/"));
    let variable = if arch == std::env::consts::ARCH {
        "CCVM_GUEST_AGENT".to_owned()
    } else {
        format!("CCVM_GUEST_AGENT_{}", arch.to_ascii_uppercase())
    };
    Ok(ccvm_image::find_guest_agent(
        env.abs_path(&variable),
        dir,
        arch,
    )?)
}

/// Everything `ccvm_image::build` needs from this host: the checked images directory, the
/// build programs from the trusted `PATH`, the guest agent for `arch` and the allowlisted
/// environment.
pub fn build_host(env: &Env, stub: bool, arch: &str) -> Result<BuildHost, Error> {
    let tool = |name: &str, package: &str| {
        find_program(name, env).ok_or_else(|| {
            Error::from(ccvm_image::Error::MissingTool {
                program: name.to_owned(),
                package: package.to_owned(),
            })
        })
    };
    let mut found = std::collections::BTreeMap::new();
    for (name, package) in ccvm_image::tools(stub, arch) {
        found.insert(name, tool(name, package)?);
    }
    let mut take = |name: &str| found.remove(name);
    Ok(BuildHost {
        mmdebstrap: take("mmdebstrap").expect("a build always needs mmdebstrap"),
        tar2sqfs: take("tar2sqfs").expect("a build always needs tar2sqfs"),
        tar: take("tar").expect("a build always needs tar"),
        xz: take("xz").expect("a build always needs xz"),
        npm: take("npm"),
        guest_agent: guest_agent(env, arch)?,
        environment: build_environment(env),
        images: create_images_dir(env)?,
    })
}
