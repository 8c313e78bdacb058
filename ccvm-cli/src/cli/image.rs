//! The words after `--ccvm-image`: `build [options]`, `list`, `remove NAME`.

use ccvm_image::BuildOptions;

use crate::error::Error;

/// What `--ccvm-image` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCommand {
    Build(BuildOptions),
    List,
    Remove { name: String, arch: String },
}

pub const USAGE: &str = "usage: ccvm --ccvm-image build [--name NAME] [--stub] [--suite SUITE] \
     [--kernel-flavour FLAVOUR] [--arch x86_64|aarch64] [--refresh] | list | remove NAME [--arch ARCH]";

/// The architectures images are built for.
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn arch(value: String) -> Result<String, Error> {
    if ARCHES.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(Error::Usage {
            message: format!("--ccvm-image: unknown architecture `{value}` for --arch"),
            hint: Some(format!("images are built for {}", ARCHES.join(" and "))),
        })
    }
}

/// Parses the words after `--ccvm-image`.
pub fn parse(words: &[String]) -> Result<ImageCommand, Error> {
    let usage = |message: String| Error::Usage {
        message,
        hint: Some(USAGE.to_owned()),
    };
    let mut words = words.iter();
    match words.next().map(String::as_str) {
        Some("build") => {
            let mut options = BuildOptions::default();
            while let Some(word) = words.next() {
                let mut value = |flag: &str| {
                    words
                        .next()
                        .cloned()
                        .ok_or_else(|| usage(format!("--ccvm-image build {flag} needs a value")))
                };
                match word.as_str() {
                    "--stub" => options.stub = true,
                    // mmdebstrap always takes the archive's current packages, so rebuilding is
                    // refreshing (security updates).
                    "--force" | "--refresh" => options.force = true,
                    "--name" => options.name = value("--name")?,
                    "--suite" => options.suite = value("--suite")?,
                    "--kernel-flavour" => options.kernel_flavour = value("--kernel-flavour")?,
                    "--arch" => options.arch = arch(value("--arch")?)?,
                    other => {
                        return Err(usage(format!(
                            "--ccvm-image build: unknown option `{other}`"
                        )));
                    }
                }
            }
            Ok(ImageCommand::Build(options))
        }
        Some("list") => Ok(ImageCommand::List),
        Some("remove") => {
            let rest: Vec<&String> = words.collect();
            match rest.as_slice() {
                [name] => Ok(ImageCommand::Remove {
                    name: (*name).clone(),
                    arch: std::env::consts::ARCH.to_owned(),
                }),
                [name, flag, value] | [flag, value, name] if *flag == "--arch" => {
                    Ok(ImageCommand::Remove {
                        name: (*name).clone(),
                        arch: arch((*value).clone())?,
                    })
                }
                _ => Err(usage(
                    "--ccvm-image remove takes one image name (and optionally --arch ARCH)"
                        .to_owned(),
                )),
            }
        }
        Some(other) => Err(usage(format!("--ccvm-image: unknown action `{other}`"))),
        None => Err(usage("--ccvm-image needs an action".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn build_options_parse_and_bad_ones_are_named() {
        let ImageCommand::Build(options) =
            parse(&words("build --stub --name t --suite trixie --force")).expect("parses")
        else {
            panic!("not a build")
        };
        assert!(options.stub && options.force);
        assert_eq!(
            (options.name.as_str(), options.suite.as_str()),
            ("t", "trixie")
        );
        assert_eq!(options.arch, std::env::consts::ARCH);
        let ImageCommand::Build(options) = parse(&words("build --arch aarch64")).expect("parses")
        else {
            panic!("not a build")
        };
        assert_eq!(options.arch, "aarch64");
        assert_eq!(
            parse(&words("remove t --arch aarch64")).expect("parses"),
            ImageCommand::Remove {
                name: "t".to_owned(),
                arch: "aarch64".to_owned()
            }
        );
        for (bad, needle) in [
            ("build --bogus", "`--bogus`"),
            ("build --name", "--name needs a value"),
            ("frobnicate", "`frobnicate`"),
            ("remove", "one image name"),
            ("build --arch riscv64", "`riscv64` for --arch"),
            ("remove a b", "one image name"),
            ("", "needs an action"),
        ] {
            let error = parse(&words(bad)).expect_err(bad).to_string();
            assert!(error.contains(needle), "{bad:?}: {error}");
        }
    }
}
